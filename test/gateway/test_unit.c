/*
 * test_unit.c - unit tests of the gateway's pure parts: the route table and
 * router, the list tokenizer, ETag matching, CORS origin lists, configuration (defaults, environment, flags, errors),
 * Redis URL parsing, JSON escaping, JWT verification (HS256 only, exp, nbf, sub),
 * the access rule, the query checks of the student and event routes and
 * NOTIFY payloads.
 * Prints one "ok - name" / "not ok - name" line per check (the suite format).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jwt.h>

#include "auth.h"
#include "auth_cache.h"
#include "cache.h"
#include "config.h"
#include "listen.h"
#include "log.h"
#include "parse.h"
#include "routes.h"
#include "setassoc.h"
#include "websocket.h"

#include "../lib/tap_check.h"

/* True when m names the route labelled label. */
static int
route_is(const kc_match *m, const char *label)
{
	return strcmp(m->route->label, label) == 0;
}

static void
test_router(void)
{
	kc_match	m;

	kc_route_match("/api/v1/students/11111111-1111-4111-8111-111111111111/home", &m);
	check(route_is(&m, "home") && !m.bad_id && m.route->student == KC_STUDENT_PATH &&
		  strcmp(m.student, "11111111-1111-4111-8111-111111111111") == 0, "router: home route");
	kc_route_match("/api/v1/students/11111111-AAAA-4111-8111-111111111111/learning", &m);
	check(route_is(&m, "learning") && strcmp(m.student, "11111111-aaaa-4111-8111-111111111111") == 0,
		  "router: learning route, id lower-cased");
	kc_route_match("/api/v1/students/11111111-1111-4111-8111-111111111111/sessions", &m);
	check(route_is(&m, "sessions"), "router: sessions route");
	kc_route_match("/api/v1/students/not-a-uuid/home", &m);
	check(route_is(&m, "home") && m.bad_id && m.student[0] == '\0', "router: bad id flagged");
	kc_route_match("/api/v1/students/11111111-1111-4111-8111-1111111111112/home", &m);
	check(m.bad_id, "router: 37-char id flagged");
	kc_route_match("/api/v1/students/11111111-1111-4111-8111-111111111111/home/", &m);
	check(route_is(&m, "unknown"), "router: trailing slash is unknown");
	kc_route_match("/api/v1/students//home", &m);
	check(route_is(&m, "unknown"), "router: empty id is unknown");
	kc_route_match("/api/v1/students/x/other", &m);
	check(route_is(&m, "unknown"), "router: unknown student route");
	kc_route_match("/api/v1/events/recent", &m);
	check(route_is(&m, "events_recent") && m.route->student == KC_STUDENT_QUERY, "router: events/recent");
	kc_route_match("/", &m);
	check(route_is(&m, "static"), "router: / is static");
	kc_route_match("/index.html", &m);
	check(route_is(&m, "static"), "router: /index.html is static too");
	kc_route_match("/healthz", &m);
	check(route_is(&m, "healthz") && m.route->auth == KC_AUTH_NONE, "router: healthz, no token");
	kc_route_match("/readyz", &m);
	check(route_is(&m, "readyz"), "router: readyz");
	kc_route_match("/metrics", &m);
	check(route_is(&m, "metrics"), "router: metrics");
	kc_route_match("/api/v1/ws", &m);
	check(route_is(&m, "ws") && m.route->auth == KC_AUTH_TOKEN_OR_QUERY &&
		  m.route->student == KC_STUDENT_QUERY, "router: the WebSocket route has the token and access checks");
	kc_route_match("/nope", &m);
	check(route_is(&m, "unknown") && m.route == &kc_routes[kc_route_count - 1], "router: unknown path");
	for (int i = 0; i < kc_route_count; i++)
		for (int j = i + 1; j < kc_route_count; j++)
			if (strcmp(kc_routes[i].label, kc_routes[j].label) == 0)
				check(0, "router: metrics labels are unique");
}

static void
test_lists(void)
{
	const char *p = " a ,, b\t,c ,";
	const char *item;
	size_t		len;
	char		got[64] = "";

	while (kc_list_next(&p, &item, &len))
		snprintf(got + strlen(got), sizeof(got) - strlen(got), "[%.*s]", (int) len, item);
	check(strcmp(got, "[a][b][c]") == 0, "list: items trimmed, empty items skipped");
	p = NULL;
	check(!kc_list_next(&p, &item, &len), "list: NULL is an empty list");
	check(kc_list_has_token("keep-alive, Upgrade", "upgrade"), "list: token found, case-insensitive");
	check(!kc_list_has_token("keep-alive, Upgrades", "upgrade"), "list: no prefix match");
	check(!kc_list_has_token(NULL, "upgrade"), "list: no header");
}

static void
test_etag_cors(void)
{
	check(kc_etag_matches("\"v3\"", "\"v3\""), "etag: exact match");
	check(kc_etag_matches("W/\"v3\"", "\"v3\""), "etag: weak match");
	check(kc_etag_matches("\"v1\", \"v3\"", "\"v3\""), "etag: list match");
	check(kc_etag_matches("*", "\"v3\""), "etag: star matches");
	check(!kc_etag_matches("\"v31\"", "\"v3\""), "etag: no prefix match");
	check(!kc_etag_matches(NULL, "\"v3\""), "etag: no header");
	check(!kc_etag_matches("", "\"v3\""), "etag: empty header");
	check(kc_cors_allowed("*", "http://x"), "cors: star allows any origin");
	check(kc_cors_allowed("http://a, http://b", "http://b"), "cors: listed origin allowed");
	check(!kc_cors_allowed("http://a,http://b", "http://c"), "cors: other origin refused");
	check(!kc_cors_allowed("", "http://a"), "cors: empty list disables");
	check(!kc_cors_allowed("http://a", NULL), "cors: no Origin header");
}

static void
test_config(void)
{
	kc_config	c;
	char		err[256];
	char	   *argv1[] = {"kc-gateway", "--listen=0.0.0.0:9000", "--cache-ttl", "60", NULL};
	char	   *argv_bad[] = {"kc-gateway", "--cache-ttl=abc", NULL};
	char	   *argv_unknown[] = {"kc-gateway", "--nope=1", NULL};
	char	   *argv_off[] = {"kc-gateway", "--auth=off", NULL};

	unsetenv("KC_JWT_SECRET");
	unsetenv("KC_AUTH");
	check(kc_config_load(&c, 1, argv1, err, sizeof(err)) == KC_CONFIG_ERROR &&
		  strstr(err, "KC_JWT_SECRET") != NULL, "config: secret required with auth on");
	kc_config_free(&c);
	check(kc_config_load(&c, 2, argv_off, err, sizeof(err)) == KC_CONFIG_OK && !c.auth &&
		  c.cache_ttl == 300 && c.listen_port == 8080 && strcmp(c.listen_host, "127.0.0.1") == 0 &&
		  c.pg_pool == c.threads, "config: defaults with auth off");
	kc_config_free(&c);

	setenv("KC_JWT_SECRET", "s3cret", 1);
	setenv("KC_CACHE_TTL", "120", 1);
	setenv("KC_LOG_LEVEL", "debug", 1);
	check(kc_config_load(&c, 4, argv1, err, sizeof(err)) == KC_CONFIG_OK && c.cache_ttl == 60 &&
		  c.listen_port == 9000 && strcmp(c.jwt_secret, "s3cret") == 0 && c.log_level == KC_LOG_DEBUG,
		  "config: flags override environment");
	kc_config_free(&c);
	check(kc_config_load(&c, 1, argv1, err, sizeof(err)) == KC_CONFIG_OK && c.cache_ttl == 120,
		  "config: environment overrides default");
	kc_config_free(&c);
	check(kc_config_load(&c, 2, argv_bad, err, sizeof(err)) == KC_CONFIG_ERROR &&
		  strstr(err, "--cache-ttl") != NULL, "config: bad integer names the flag");
	kc_config_free(&c);
	check(kc_config_load(&c, 2, argv_unknown, err, sizeof(err)) == KC_CONFIG_ERROR,
		  "config: unknown flag refused");
	kc_config_free(&c);
	setenv("KC_AUTH", "maybe", 1);
	check(kc_config_load(&c, 1, argv1, err, sizeof(err)) == KC_CONFIG_ERROR &&
		  strstr(err, "KC_AUTH") != NULL, "config: bad env value names the variable");
	kc_config_free(&c);
	unsetenv("KC_AUTH");
	unsetenv("KC_CACHE_TTL");
	unsetenv("KC_LOG_LEVEL");
	{
		char		host[64];
		int			port;

		check(kc_config_parse_listen("[::1]:8081", host, sizeof(host), &port) &&
			  strcmp(host, "::1") == 0 && port == 8081, "config: ipv6 listen address");
		check(!kc_config_parse_listen("localhost", host, sizeof(host), &port), "config: listen needs a port");
	}
}

static void
test_redis_url(void)
{
	char		host[64],
				pw[64];
	int			port,
				db;

	check(kc_cache_parse_url("redis://127.0.0.1:6380/2", host, sizeof(host), &port, pw, sizeof(pw), &db) &&
		  strcmp(host, "127.0.0.1") == 0 && port == 6380 && db == 2 && pw[0] == '\0', "redis url: host port db");
	check(kc_cache_parse_url("redis://:pw@h", host, sizeof(host), &port, pw, sizeof(pw), &db) &&
		  strcmp(pw, "pw") == 0 && port == 6379 && db == 0, "redis url: password, defaults");
	check(!kc_cache_parse_url("http://h", host, sizeof(host), &port, pw, sizeof(pw), &db), "redis url: wrong scheme");
	check(!kc_cache_parse_url("redis://h:0", host, sizeof(host), &port, pw, sizeof(pw), &db), "redis url: bad port");
}

static void
test_log_escape(void)
{
	char		buf[64];

	kc_json_escape(buf, sizeof(buf), "a\"b\\c\n");
	check(strcmp(buf, "a\\\"b\\\\c\\u000a") == 0, "log: JSON escaping");
	kc_json_escape(buf, 3, "a\xc3\xa9");
	check(strcmp(buf, "a") == 0, "log: JSON escaping never cuts a UTF-8 character");
	kc_json_escape(buf, 4, "a\xc3\xa9");
	check(strcmp(buf, "a\xc3\xa9") == 0, "log: a UTF-8 character that fits is kept");
}

/* An HS256 token with the claims given as JSON, signed with k3y. */
static char *
sign_claims(const char *json)
{
	jwt_t	   *j;
	char	   *out;

	jwt_new(&j);
	jwt_add_grants_json(j, json);
	jwt_set_alg(j, JWT_ALG_HS256, (const unsigned char *) "k3y", 3);
	out = jwt_encode_str(j);
	jwt_free(j);
	return out;
}

/* Signs claims with an arbitrary algorithm and key using libjwt directly. */
static char *
sign(jwt_alg_t alg, const char *key, const char *sub, const char *role, long exp_offset, int with_exp)
{
	jwt_t	   *j;
	char	   *out;

	jwt_new(&j);
	if (sub)
		jwt_add_grant(j, "sub", sub);
	if (role)
		jwt_add_grant(j, "role", role);
	if (with_exp)
		jwt_add_grant_int(j, "exp", (long) time(NULL) + exp_offset);
	jwt_set_alg(j, alg, alg == JWT_ALG_NONE ? NULL : (const unsigned char *) key,
				alg == JWT_ALG_NONE ? 0 : (int) strlen(key));
	out = jwt_encode_str(j);
	jwt_free(j);
	return out;
}

static kc_auth_result
verify(const char *token, kc_principal *p)
{
	char		header[8192];
	const char *why;

	snprintf(header, sizeof(header), "Bearer %s", token);
	return kc_auth_verify("k3y", header, time(NULL), p, &why);
}

static void
test_auth(void)
{
	const char *s1 = "11111111-1111-4111-8111-111111111111";
	kc_principal p;
	char	   *t;
	const char *why;

	t = kc_auth_issue("k3y", s1, "student", 60);
	check(verify(t, &p) == KC_AUTH_OK && !p.admin && strcmp(p.sub, s1) == 0, "auth: issued token verifies");
	{
		char		scope[37];

		check(kc_auth_scope(&p, s1, scope) && strcmp(scope, s1) == 0 &&
			  !kc_auth_scope(&p, "22222222-2222-4222-8222-222222222222", scope),
			  "auth: student reads only own data");
		check(kc_auth_scope(&p, "", scope) && strcmp(scope, s1) == 0,
			  "auth: a student naming no one reads their own data");
	}
	t[strlen(t) - 2] ^= 1;
	check(verify(t, &p) == KC_AUTH_INVALID, "auth: tampered signature refused");
	free(t);
	t = sign(JWT_ALG_HS256, "other", s1, NULL, 60, 1);
	check(verify(t, &p) == KC_AUTH_INVALID, "auth: wrong secret refused");
	free(t);
	t = sign(JWT_ALG_NONE, "", s1, NULL, 60, 1);
	check(verify(t, &p) == KC_AUTH_INVALID, "auth: alg none refused");
	free(t);
	t = sign(JWT_ALG_HS512, "k3y", s1, NULL, 60, 1);
	check(verify(t, &p) == KC_AUTH_INVALID, "auth: HS512 refused");
	free(t);
	t = sign(JWT_ALG_HS256, "k3y", s1, NULL, -5, 1);
	check(verify(t, &p) == KC_AUTH_EXPIRED, "auth: expired token refused");
	free(t);
	t = sign(JWT_ALG_HS256, "k3y", s1, NULL, 0, 0);
	check(verify(t, &p) == KC_AUTH_INVALID, "auth: token without exp refused");
	free(t);
	t = sign(JWT_ALG_HS256, "k3y", "bob", NULL, 60, 1);
	check(verify(t, &p) == KC_AUTH_INVALID, "auth: student sub must be a uuid");
	free(t);
	t = sign(JWT_ALG_HS256, "k3y", "ops", "admin", 60, 1);
	{
		char		scope[37];

		check(verify(t, &p) == KC_AUTH_OK && p.admin && kc_auth_scope(&p, s1, scope) &&
			  strcmp(scope, s1) == 0 && kc_auth_scope(&p, "", scope) && scope[0] == '\0',
			  "auth: admin reads anyone, or everyone");
	}
	free(t);
	{
		/* a verified token is remembered: same answers, exp still enforced */
		char		header[8192];

		t = kc_auth_issue("k3y", s1, "student", 60);
		snprintf(header, sizeof(header), "Bearer %s", t);
		check(kc_auth_verify("k3y", header, time(NULL), &p, &why) == KC_AUTH_OK &&
			  kc_auth_verify("k3y", header, time(NULL), &p, &why) == KC_AUTH_OK &&
			  strcmp(p.sub, s1) == 0 && !p.admin, "auth: a remembered token verifies again with its principal");
		check(kc_auth_verify("k3y", header, time(NULL) + 120, &p, &why) == KC_AUTH_EXPIRED,
			  "auth: a remembered token expires at its exp");
		check(kc_auth_verify("other", header, time(NULL), &p, &why) == KC_AUTH_INVALID,
			  "auth: a remembered token is not valid under another secret");
		header[strlen(header) - 3] ^= 1;
		check(kc_auth_verify("k3y", header, time(NULL), &p, &why) == KC_AUTH_INVALID,
			  "auth: a token differing from a remembered one is verified afresh");
		free(t);
	}
	{
		/* NumericDate claims must be integers (libjwt alone reads "nbf":"x" as 0) */
		char		json[256];

		snprintf(json, sizeof(json), "{\"sub\":\"%s\",\"exp\":%ld,\"nbf\":\"later\"}", s1,
				 (long) time(NULL) + 60);
		t = sign_claims(json);
		check(verify(t, &p) == KC_AUTH_INVALID, "auth: an nbf that is not an integer is refused");
		free(t);
		snprintf(json, sizeof(json), "{\"sub\":\"%s\",\"exp\":%ld,\"nbf\":%ld}", s1,
				 (long) time(NULL) + 60, (long) time(NULL) + 30);
		t = sign_claims(json);
		check(verify(t, &p) == KC_AUTH_INVALID, "auth: an nbf in the future is refused");
		free(t);
		snprintf(json, sizeof(json), "{\"sub\":\"%s\",\"exp\":%ld,\"nbf\":%ld}", s1,
				 (long) time(NULL) + 60, (long) time(NULL) - 30);
		t = sign_claims(json);
		check(verify(t, &p) == KC_AUTH_OK, "auth: an nbf in the past is accepted");
		free(t);
		snprintf(json, sizeof(json), "{\"sub\":\"%s\",\"exp\":\"%ld\"}", s1, (long) time(NULL) + 60);
		t = sign_claims(json);
		check(verify(t, &p) == KC_AUTH_INVALID, "auth: an exp that is not an integer is refused");
		free(t);
	}
	check(kc_auth_verify("k3y", NULL, time(NULL), &p, &why) == KC_AUTH_MISSING, "auth: missing header");
	check(kc_auth_verify("k3y", "Basic abc", time(NULL), &p, &why) == KC_AUTH_MISSING, "auth: non-bearer scheme");
	check(kc_auth_verify("k3y", "Bearer a.b", time(NULL), &p, &why) == KC_AUTH_INVALID, "auth: malformed token");
	check(kc_auth_verify("k3y", "Bearer !!!.???.###", time(NULL), &p, &why) == KC_AUTH_INVALID,
		  "auth: garbage token");
	{
		char		uuid[37];

		check(kc_uuid_normalize("ABCDEF01-2345-6789-abcd-ef0123456789", uuid) &&
			  strcmp(uuid, "abcdef01-2345-6789-abcd-ef0123456789") == 0, "uuid: normalized");
		check(!kc_uuid_normalize("abcdef01-2345-6789-abcd-ef012345678g", uuid), "uuid: non-hex refused");
		check(!kc_uuid_normalize("abcdef01x2345-6789-abcd-ef0123456789", uuid), "uuid: bad dash refused");
	}
}

/* The table of verified tokens: it holds its working set, and forgets the least recently used. */
static void
test_token_table(void)
{
	kc_principal p = {.authenticated = true};
	kc_principal got;
	long		exp;
	char		tok[64];
	int			found = 0;
	uint64_t	secret = kc_hash("k3y", 3);

	check(kc_auth_cache_init(65536), "token table: made for 65536 tokens (the default)");
	for (int i = 0; i < 10000; i++)
	{
		snprintf(tok, sizeof(tok), "token-%d", i);
		snprintf(p.sub, sizeof(p.sub), "sub-%d", i);
		kc_auth_cache_put(secret, tok, strlen(tok), 1000 + i, &p);
	}
	for (int i = 0; i < 10000; i++)
	{
		char		sub[64];

		snprintf(tok, sizeof(tok), "token-%d", i);
		snprintf(sub, sizeof(sub), "sub-%d", i);
		if (kc_auth_cache_get(secret, tok, strlen(tok), &exp, &got) && exp == 1000 + i &&
			strcmp(got.sub, sub) == 0)
			found++;
	}
	check(found >= 9990, "token table: 10,000 tokens in a table of 65,536 are all (>= 99.9%) remembered");
	check(!kc_auth_cache_get(kc_hash("other", 5), "token-1", 7, &exp, &got),
		  "token table: a token is not found under another secret");
	check(kc_auth_cache_init(4), "token table: made for 4 tokens (one set)");
	for (int i = 0; i < 4; i++)
	{
		snprintf(tok, sizeof(tok), "t%d", i);
		kc_auth_cache_put(secret, tok, strlen(tok), 1, &p);
	}
	kc_auth_cache_get(secret, "t0", 2, &exp, &got);	/* t1 is now the least recently used */
	kc_auth_cache_put(secret, "t4", 2, 1, &p);
	check(kc_auth_cache_get(secret, "t0", 2, &exp, &got) && !kc_auth_cache_get(secret, "t1", 2, &exp, &got) &&
		  kc_auth_cache_get(secret, "t4", 2, &exp, &got), "token table: the least recently used token goes first");
	kc_auth_cache_forget(secret, "t4", 2);
	check(!kc_auth_cache_get(secret, "t4", 2, &exp, &got), "token table: a forgotten token is gone");
}

static void
test_queries(void)
{
	kc_sessions_query sq;
	kc_events_query eq;
	char		longer[80];
	char		student[37];
	long long	v = -1;

	check(kc_sessions_query_check(NULL, NULL, NULL, NULL, NULL, &sq) == NULL && sq.limit == 50 &&
		  !sq.status && !sq.after, "sessions query: defaults");
	check(kc_sessions_query_check("missed", "", "2024-01-01", "abc", "200", &sq) == NULL &&
		  strcmp(sq.status, "missed") == 0 && sq.from == NULL && sq.limit == 200, "sessions query: values, empty is absent");
	check(kc_sessions_query_check("done", NULL, NULL, NULL, NULL, &sq) != NULL, "sessions query: unknown status");
	check(kc_sessions_query_check(NULL, NULL, NULL, NULL, "201", &sq) != NULL &&
		  kc_sessions_query_check(NULL, NULL, NULL, NULL, "+5", &sq) != NULL, "sessions query: limit 1..200, digits only");
	memset(longer, 'x', 65);
	longer[65] = '\0';
	check(kc_sessions_query_check(NULL, longer, NULL, NULL, NULL, &sq) != NULL, "sessions query: from too long");
	check(kc_events_query_check(NULL, NULL, &eq) == NULL && eq.after == 0 && eq.limit == 100,
		  "events query: defaults");
	check(kc_events_query_check("7", "1000", &eq) == NULL && eq.after == 7 && eq.limit == 1000,
		  "events query: values");
	check(kc_events_query_check("-1", NULL, &eq) != NULL && kc_events_query_check(NULL, "0", &eq) != NULL &&
		  kc_events_query_check("99999999999999999999", NULL, &eq) != NULL, "events query: bad after, limit");
	check(kc_parse_event_id("9223372036854775806", &v) && v == 9223372036854775806LL &&
		  !kc_parse_event_id("9223372036854775807", &v) && !kc_parse_event_id("", &v),
		  "event id: a bigint below the maximum");
	check(kc_parse_student(NULL, student) && student[0] == '\0' && kc_parse_student("", student) &&
		  kc_parse_student("11111111-AAAA-4111-8111-111111111111", student) &&
		  strcmp(student, "11111111-aaaa-4111-8111-111111111111") == 0 && !kc_parse_student("nope", student),
		  "student=: absent, empty or a uuid");
}

static void
test_mhd_versions(void)
{
	check(kc_ws_mhd_checked("0.9.75") && kc_ws_mhd_checked("0.9.77") && kc_ws_mhd_checked("1.0.1"),
		  "libmicrohttpd: 0.9.75 to 1.0.1 are the checked versions");
	check(!kc_ws_mhd_checked("0.9.74") && !kc_ws_mhd_checked("1.0.2") && !kc_ws_mhd_checked("1.1.0") &&
		  !kc_ws_mhd_checked("0.9.75.1") && !kc_ws_mhd_checked("0.9") && !kc_ws_mhd_checked("x") &&
		  !kc_ws_mhd_checked("") && !kc_ws_mhd_checked(NULL) && !kc_ws_mhd_checked("0.9.75 "),
		  "libmicrohttpd: any other or unreadable version is not");
}

static void
test_notify(void)
{
	long long	first = 0,
				last = 0;

	check(kc_notify_range("1-1", &first, &last) && first == 1 && last == 1 &&
		  kc_notify_range("17-9007199254740992", &first, &last) && first == 17 && last == 9007199254740992LL,
		  "notify: a range of log positions \"first-last\" is read");
	check(!kc_notify_range("0-3", &first, &last) && !kc_notify_range("5-4", &first, &last) &&
		  !kc_notify_range("3", &first, &last) && !kc_notify_range("3-", &first, &last) &&
		  !kc_notify_range("-3-4", &first, &last) && !kc_notify_range("3-4x", &first, &last) &&
		  !kc_notify_range("3-+4", &first, &last) && !kc_notify_range("1-9007199254740993", &first, &last) &&
		  !kc_notify_range("", &first, &last) && !kc_notify_range(NULL, &first, &last),
		  "notify: an empty, reversed, unbounded or malformed range is refused");
	check(kc_notify_is_old("{\"id\":17,\"type\":\"PURCHASE_CONFIRMED\","
							"\"student_id\":\"11111111-aaaa-4111-8111-111111111111\",\"version\":3}"),
		  "notify: a payload of kc_flow 0.1.0 (a JSON object) is recognised");
	check(!kc_notify_is_old("1-1") && !kc_notify_is_old("not json") && !kc_notify_is_old("") &&
		  !kc_notify_is_old(NULL), "notify: a range, junk or nothing is not taken for a 0.1.0 payload");
}

/* libpq's message for a multi-host URL: one line per host it tried */
static void
test_why_down(void)
{
	check(kc_db_why_down("connection to server at \"127.0.0.1\", port 5433 failed: session is read-only\n") ==
		  KC_DB_DOWN_STANDBYS, "why down: a read-only session is a standby");
	check(kc_db_why_down("connection to server at \"a\" (10.0.0.1), port 5432 failed: server is in hot standby mode\n"
						 "connection to server at \"b\" (10.0.0.2), port 5432 failed: session is read-only\n") ==
		  KC_DB_DOWN_STANDBYS, "why down: every host a standby");
	check(kc_db_why_down("connection to server at \"127.0.0.1\", port 1 failed: Connection refused\n"
						 "\tIs the server running on that host and accepting TCP/IP connections?\n"
						 "connection to server at \"127.0.0.1\", port 5433 failed: session is read-only\n") ==
		  KC_DB_DOWN_STANDBYS_AND_UNREACHABLE, "why down: a standby and a host that did not answer");
	check(kc_db_why_down("connection to server at \"127.0.0.1\", port 1 failed: Connection refused\n") ==
		  KC_DB_DOWN_UNREACHABLE && kc_db_why_down("") == KC_DB_DOWN_UNREACHABLE,
		  "why down: no standby among the hosts");
}

int
main(void)
{
	kc_log_set_level(KC_LOG_ERROR);
	test_router();
	test_lists();
	test_etag_cors();
	test_config();
	test_redis_url();
	test_log_escape();
	check(kc_auth_cache_init(64), "auth: the table of verified tokens is made");
	test_auth();
	test_token_table();
	test_queries();
	test_notify();
	test_mhd_versions();
	test_why_down();
	printf("# unit: %d failed\n", failures);
	return failures ? 1 : 0;
}
