/*
 * config.c - the option table of kc-gateway and its parser.
 *
 * Each option has one flag, one environment variable and one default; the
 * table is the single source for parsing and for --help, so they cannot drift.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

typedef enum opt_type
{
	OPT_STR,
	OPT_INT,
	OPT_BOOL,
	OPT_LEVEL
} opt_type;

typedef struct opt_def
{
	const char *flag;
	const char *env;
	opt_type	type;
	size_t		offset;
	const char *def;
	int			min;
	int			max;
	const char *help;
} opt_def;

#define OFF(f) offsetof(kc_config, f)

static const opt_def options[] = {
	{"database-url", "KC_DATABASE_URL", OPT_STR, OFF(database_url),
	 "postgresql://127.0.0.1:5432/kc_flow", 0, 0,
	 "Postgres connection string (libpq URI or key=value)"},
	{"replica-url", "KC_REPLICA_URL", OPT_STR, OFF(replica_url), "", 0, 0,
	 "hot standbys that may answer cache misses once replayed far enough: libpq URIs, space-separated (empty: none)"},
	{"redis-url", "KC_REDIS_URL", OPT_STR, OFF(redis_url),
	 "redis://127.0.0.1:6379/0", 0, 0, "Redis URL redis://[:password@]host[:port][/db]"},
	{"listen", "KC_LISTEN", OPT_STR, OFF(listen), "127.0.0.1:8080", 0, 0,
	 "address and port of the HTTP server"},
	{"jwt-secret", "KC_JWT_SECRET", OPT_STR, OFF(jwt_secret), "", 0, 0,
	 "HS256 secret for bearer tokens (required unless auth is off)"},
	{"auth", "KC_AUTH", OPT_BOOL, OFF(auth), "on", 0, 0,
	 "on|off; off serves every student to anyone: local demos only"},
	{"cache-ttl", "KC_CACHE_TTL", OPT_INT, OFF(cache_ttl), "300", 1, 86400,
	 "seconds a cached view lives at most (a safety net; events invalidate)"},
	{"local-cache", "KC_LOCAL_CACHE", OPT_INT, OFF(local_cache), "65536", 0, 1 << 20,
	 "students whose views are also kept in process, no Redis round trip (0: off; safe with many gateways: min_version)"},
	{"token-cache", "KC_TOKEN_CACHE", OPT_INT, OFF(token_cache), "65536", 0, 1 << 22,
	 "verified bearer tokens remembered, so a known token costs no HMAC check (0: off; ~300 bytes each)"},
	{"cors-origins", "KC_CORS_ORIGINS", OPT_STR, OFF(cors_origins), "", 0, 0,
	 "comma-separated allowed origins, or *; empty disables CORS headers"},
	{"log-level", "KC_LOG_LEVEL", OPT_LEVEL, OFF(log_level), "info", 0, 0,
	 "debug|info|warn|error (Cache HIT/MISS lines are debug)"},
	{"processes", "KC_PROCESSES", OPT_INT, OFF(processes), "1", 1, 64,
	 "processes serving the one port: a supervisor binds it once, forks N gateways (own "
	 "pools, WebSockets, local cache) and one listener process (LISTEN, catch-up, Redis "
	 "invalidation, once for all, feeding the N), restarts one that dies, and stops them on SIGTERM. "
	 "For more sockets than one process may open (RLIMIT_NOFILE). Every per-process option below "
	 "(threads, pools, ws-max-connections, caches) counts per process: Postgres sees "
	 "up to N x (pg-pool + 2) + 1 connections (the pool, the console's two; one LISTEN) against max_connections"},
	{"threads", "KC_THREADS", OPT_INT, OFF(threads), "4", 1, 256,
	 "HTTP worker threads"},
	{"pg-pool", "KC_PG_POOL", OPT_INT, OFF(pg_pool), "0", 0, 256,
	 "Postgres connections for requests, per process (0: one per thread)"},
	{"redis-pool", "KC_REDIS_POOL", OPT_INT, OFF(redis_pool), "0", 0, 256,
	 "Redis connections for requests, per process (0: one per thread)"},
	{"static-dir", "KC_STATIC_DIR", OPT_STR, OFF(static_dir), "", 0, 0,
	 "directory holding index.html (empty: static/ beside the executable)"},
	{"drain-timeout", "KC_DRAIN_TIMEOUT", OPT_INT, OFF(drain_timeout), "10", 0, 3600,
	 "seconds SIGTERM waits for requests in flight"},
	{"max-body", "KC_MAX_BODY", OPT_INT, OFF(max_body), "16384", 0, 1 << 24,
	 "largest request body accepted, bytes (413 above)"},
	{"pg-timeout-ms", "KC_PG_TIMEOUT_MS", OPT_INT, OFF(pg_timeout_ms), "5000", 100, 600000,
	 "statement timeout of request queries, milliseconds"},
	{"retry-after", "KC_RETRY_AFTER", OPT_INT, OFF(retry_after), "2", 1, 3600,
	 "seconds announced in Retry-After when Postgres is down"},
	{"ws-max-connections", "KC_WS_MAX_CONNECTIONS", OPT_INT, OFF(ws_max_connections), "10000", 1, 1000000,
	 "WebSocket connections one process holds at most (503 above); the open-files limit is raised to fit"},
	{"open-files", "KC_OPEN_FILES", OPT_INT, OFF(open_files), "0", 0, 16777216,
	 "open-files limit set at start; 0: what --ws-max-connections and 8192 HTTP connections need. "
	 "Above the hard limit it needs root (CAP_SYS_RESOURCE); fs.nr_open bounds it"},
	{"ws-queue", "KC_WS_QUEUE", OPT_INT, OFF(ws_queue), "1000", 1, 9999,
	 "events queued for one WebSocket before it is closed as too slow (1008); also the replay size "
	 "(read one longer, within events_since's 10000)"},
	{"ws-ping-interval", "KC_WS_PING_INTERVAL", OPT_INT, OFF(ws_ping_interval), "30", 1, 3600,
	 "seconds a WebSocket may stay silent before it is pinged"},
	{"ws-pong-timeout", "KC_WS_PONG_TIMEOUT", OPT_INT, OFF(ws_pong_timeout), "10", 1, 3600,
	 "seconds a pinged WebSocket peer has to answer before it is dropped"},
	{"demo", "KC_DEMO", OPT_BOOL, OFF(demo), "off", 0, 0,
	 "on: enable POST /api/v1/demo/purchase (buys a course for the caller); demos only"},
	{"issue-token", "", OPT_STR, OFF(issue_token), "", 0, 0,
	 "print a signed token for this subject (student id) and exit"},
	{"token-role", "", OPT_STR, OFF(token_role), "student", 0, 0,
	 "role claim of --issue-token: student|admin"},
	{"token-ttl", "", OPT_INT, OFF(token_ttl), "86400", 1, 31536000,
	 "lifetime of --issue-token tokens, seconds"},
};

#define N_OPTIONS (sizeof(options) / sizeof(options[0]))

void
kc_config_usage(FILE *out)
{
	fprintf(out,
			"usage: kc-gateway [options]\n"
			"Serves the kc_flow read API (home, learning, sessions, events) with a Redis cache\n"
			"kept fresh by LISTEN kc_flow_events. Every option can also be set in the\n"
			"environment; flags win over the environment.\n\n");
	for (size_t i = 0; i < N_OPTIONS; i++)
	{
		const opt_def *o = &options[i];
		char		left[64];

		snprintf(left, sizeof(left), "--%s=%s", o->flag,
				 o->type == OPT_INT ? "N" : o->type == OPT_BOOL ? "on|off" : "VALUE");
		fprintf(out, "  %-28s %s\n  %-28s env %s, default \"%s\"\n",
				left, o->help, "", o->env[0] ? o->env : "(none)", o->def);
	}
	fprintf(out, "  %-28s %s\n  %-28s %s\n", "--help", "print this and exit",
			"--version", "print the version and exit");
}

static bool
parse_bool(const char *v, bool *out)
{
	static const char *const yes[] = {"on", "true", "1", "yes"};
	static const char *const no[] = {"off", "false", "0", "no"};

	for (int i = 0; i < 4; i++)
	{
		if (strcasecmp(v, yes[i]) == 0)
		{
			*out = true;
			return true;
		}
		if (strcasecmp(v, no[i]) == 0)
		{
			*out = false;
			return true;
		}
	}
	return false;
}

/* Stores value into the field of o; false with a message when invalid. */
static bool
set_option(kc_config *c, const opt_def *o, const char *value, const char *source,
		   char *err, size_t errlen)
{
	char	   *field = (char *) c + o->offset;

	switch (o->type)
	{
		case OPT_STR:
			{
				char	  **p = (char **) field;

				free(*p);
				*p = strdup(value);
				return true;
			}
		case OPT_INT:
			{
				char	   *end;
				long		n;

				errno = 0;
				n = strtol(value, &end, 10);
				if (errno || end == value || *end || n < o->min || n > o->max)
				{
					snprintf(err, errlen, "invalid value \"%s\" for %s: expected an integer in %d..%d",
							 value, source, o->min, o->max);
					return false;
				}
				*(int *) field = (int) n;
				return true;
			}
		case OPT_BOOL:
			if (!parse_bool(value, (bool *) field))
			{
				snprintf(err, errlen, "invalid value \"%s\" for %s: expected on or off", value, source);
				return false;
			}
			return true;
		case OPT_LEVEL:
			if (!kc_log_parse_level(value, (kc_log_level *) field))
			{
				snprintf(err, errlen, "invalid value \"%s\" for %s: expected debug, info, warn or error",
						 value, source);
				return false;
			}
			return true;
	}
	return false;
}

bool
kc_config_parse_listen(const char *s, char *host, size_t hostlen, int *port)
{
	const char *colon;
	const char *h;
	size_t		hl;
	char	   *end;
	long		p;

	if (s[0] == '[')
	{
		const char *rb = strchr(s, ']');

		if (!rb || rb[1] != ':')
			return false;
		h = s + 1;
		hl = (size_t) (rb - h);
		colon = rb + 1;
	}
	else
	{
		colon = strrchr(s, ':');
		if (!colon)
			return false;
		h = s;
		hl = (size_t) (colon - s);
	}
	if (hl >= hostlen)
		return false;
	p = strtol(colon + 1, &end, 10);
	if (end == colon + 1 || *end || p < 0 || p > 65535)
		return false;
	memcpy(host, h, hl);
	host[hl] = '\0';
	if (hl == 0)
		strcpy(host, "0.0.0.0");
	*port = (int) p;
	return true;
}

static const opt_def *
find_option(const char *name, size_t len)
{
	for (size_t i = 0; i < N_OPTIONS; i++)
		if (strlen(options[i].flag) == len && strncmp(options[i].flag, name, len) == 0)
			return &options[i];
	return NULL;
}

kc_config_result
kc_config_load(kc_config *c, int argc, char **argv, char *err, size_t errlen)
{
	memset(c, 0, sizeof(*c));
	for (size_t i = 0; i < N_OPTIONS; i++)
		if (!set_option(c, &options[i], options[i].def, options[i].flag, err, errlen))
			return KC_CONFIG_ERROR;

	for (size_t i = 0; i < N_OPTIONS; i++)
	{
		const char *v = options[i].env[0] ? getenv(options[i].env) : NULL;

		if (v && !set_option(c, &options[i], v, options[i].env, err, errlen))
			return KC_CONFIG_ERROR;
	}

	for (int i = 1; i < argc; i++)
	{
		const char *a = argv[i];
		const char *eq;
		const char *value;
		const opt_def *o;
		char		source[80];

		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
		{
			kc_config_usage(stdout);
			return KC_CONFIG_EXIT;
		}
		if (strcmp(a, "--version") == 0)
		{
			printf("kc-gateway 0.2.0\n");
			return KC_CONFIG_EXIT;
		}
		if (strncmp(a, "--", 2) != 0)
		{
			snprintf(err, errlen, "unexpected argument \"%s\" (see --help)", a);
			return KC_CONFIG_ERROR;
		}
		eq = strchr(a + 2, '=');
		o = find_option(a + 2, eq ? (size_t) (eq - a - 2) : strlen(a + 2));
		if (!o)
		{
			snprintf(err, errlen, "unknown option \"%s\" (see --help)", a);
			return KC_CONFIG_ERROR;
		}
		if (eq)
			value = eq + 1;
		else if (i + 1 < argc)
			value = argv[++i];
		else
		{
			snprintf(err, errlen, "option --%s needs a value", o->flag);
			return KC_CONFIG_ERROR;
		}
		snprintf(source, sizeof(source), "--%s", o->flag);
		if (!set_option(c, o, value, source, err, errlen))
			return KC_CONFIG_ERROR;
	}

	if (!kc_config_parse_listen(c->listen, c->listen_host, sizeof(c->listen_host), &c->listen_port))
	{
		snprintf(err, errlen, "invalid listen address \"%s\": expected host:port", c->listen);
		return KC_CONFIG_ERROR;
	}
	if (c->pg_pool == 0)
		c->pg_pool = c->threads;
	if (c->redis_pool == 0)
		c->redis_pool = c->threads;
	if (strcmp(c->token_role, "student") != 0 && strcmp(c->token_role, "admin") != 0)
	{
		snprintf(err, errlen, "invalid value \"%s\" for --token-role: expected student or admin",
				 c->token_role);
		return KC_CONFIG_ERROR;
	}
	if ((c->auth || c->issue_token[0]) && c->jwt_secret[0] == '\0')
	{
		snprintf(err, errlen, "KC_JWT_SECRET (--jwt-secret) is required unless KC_AUTH=off");
		return KC_CONFIG_ERROR;
	}
	if (c->static_dir[0] == '\0')
	{
		char		exe[PATH_MAX];
		ssize_t		n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
		char	   *slash;

		if (n > 0)
		{
			exe[n] = '\0';
			slash = strrchr(exe, '/');
			if (slash)
			{
				strcpy(slash, "/static");
				free(c->static_dir);
				c->static_dir = strdup(exe);
			}
		}
	}
	return KC_CONFIG_OK;
}

void
kc_config_free(kc_config *c)
{
	for (size_t i = 0; i < N_OPTIONS; i++)
		if (options[i].type == OPT_STR)
		{
			char	  **p = (char **) ((char *) c + options[i].offset);

			free(*p);
			*p = NULL;
		}
}
