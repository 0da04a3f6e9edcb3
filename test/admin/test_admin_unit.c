/*
 * test_admin_unit.c - unit tests of the operator console's pure parts: the
 * router's {id} segment (kc_route_match), the admin rows of
 * the route table, the timestamp parser and ISO writer, the UTF-8 check of the
 * search text, and the record of recent events (recorded, replayed, not yet
 * applied, before the record, evicted), with the session counters and the
 * push-lag histogram it feeds. Built and run by test/suites/44_admin.sh
 * against the gateway's objects; prints "ok - ..." / "not ok - ..." lines.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "routes.h"
#include "routes_admin.h"

static int	failures;

static void
check(int ok, const char *name)
{
	printf("%s - admin unit: %s\n", ok ? "ok" : "not ok", name);
	if (!ok)
		failures++;
}

static void
test_router(void)
{
	kc_match	m;
	char		longpath[200];

	kc_route_match("/api/v1/admin/payments/0b7e2c1a-AAAA-4000-8000-000000000001", &m);
	check(strcmp(m.route->label, "admin_payment") == 0 && m.route->auth == KC_AUTH_ADMIN &&
		  strcmp(m.param, "0b7e2c1a-AAAA-4000-8000-000000000001") == 0 &&
		  !m.param_too_long,
		  "router: payments/{id} is admin_payment, the id as sent in the match");
	kc_route_match("/api/v1/admin/payments/not-a-uuid", &m);
	check(strcmp(m.route->label, "admin_payment") == 0 && strcmp(m.param, "not-a-uuid") == 0,
		  "router: any id reaches the route, which checks it");
	kc_route_match("/api/v1/admin/payments/", &m);
	check(strcmp(m.route->label, "unknown") == 0, "router: an empty id is an unknown path");
	kc_route_match("/api/v1/admin/payments/a/b", &m);
	check(strcmp(m.route->label, "unknown") == 0, "router: an id with a slash is an unknown path");
	memset(longpath, 'x', sizeof(longpath));
	memcpy(longpath, "/api/v1/admin/payments/", 23);
	longpath[sizeof(longpath) - 1] = '\0';
	kc_route_match(longpath, &m);
	check(strcmp(m.route->label, "admin_payment") == 0 && m.param_too_long && m.param[0] == '\0',
		  "router: an id above 64 bytes is flagged (param_too_long, no param)");
	kc_route_match("/api/v1/admin/dead-letters/42/retry", &m);
	check(strcmp(m.route->label, "admin_retry") == 0 && strcmp(m.param, "42") == 0 &&
		  strcmp(m.route->methods, "POST, OPTIONS") == 0,
		  "router: dead-letters/{id}/retry is admin_retry, POST only");
	kc_route_match("/api/v1/admin/dead-letters/42/retry/", &m);
	check(strcmp(m.route->label, "unknown") == 0, "router: a trailing slash after retry is unknown");
	kc_route_match("/api/v1/students/11111111-1111-4111-8111-111111111111/home", &m);
	check(strcmp(m.route->label, "home") == 0 && !m.param_too_long && m.param[0] == '\0' &&
		  !m.bad_id, "router: a route without {id} leaves the param empty");
	kc_route_match("/api/v1/admin/search", &m);
	check(strcmp(m.route->label, "admin_search") == 0 && m.route->auth == KC_AUTH_ADMIN,
		  "router: search needs an admin token");
	kc_route_match("/api/v1/admin/stats", &m);
	check(strcmp(m.route->label, "admin_stats") == 0 && m.route->auth == KC_AUTH_ADMIN,
		  "router: stats needs an admin token");
	kc_route_match("/admin", &m);
	check(strcmp(m.route->label, "admin_console") == 0 && m.route->auth == KC_AUTH_NONE,
		  "router: /admin is the page, no token");
	kc_route_match("/admin.html", &m);
	check(strcmp(m.route->label, "admin_console") == 0, "router: /admin.html too");
	kc_route_match("/api/v1/admin", &m);
	check(strcmp(m.route->label, "unknown") == 0, "router: /api/v1/admin alone is unknown");
	for (int i = 0; i < kc_route_count; i++)
		if (strncmp(kc_routes[i].label, "admin_", 6) == 0 && kc_routes[i].path &&
			strncmp(kc_routes[i].path, "/api/v1/admin/", 14) == 0 && kc_routes[i].auth != KC_AUTH_ADMIN)
			check(0, "router: every /api/v1/admin row asks for an admin token");
}

static void
test_time(void)
{
	double		t;
	char		iso[32];

	check(kc_admin_parse_ts("2026-11-25T21:29:17.409191+00:00", &t) && fabs(t - 1795642157.409191) < 1e-6,
		  "timestamp: UTC with microseconds");
	check(kc_admin_parse_ts("2026-11-26T02:59:17.5+05:30", &t) && fabs(t - 1795642157.5) < 1e-6,
		  "timestamp: a +05:30 offset");
	check(kc_admin_parse_ts("2026-11-25T16:29:17-05", &t) && fabs(t - 1795642157.0) < 1e-6,
		  "timestamp: a -05 offset, no fraction");
	check(kc_admin_parse_ts("1901-01-01T00:00:00+05:53:28", &t), "timestamp: an offset with seconds");
	check(!kc_admin_parse_ts("2026-11-25 21:29", &t) && !kc_admin_parse_ts("", &t) &&
		  !kc_admin_parse_ts(NULL, &t) && !kc_admin_parse_ts("2026-11-25T21:29:17.+00", &t) &&
		  !kc_admin_parse_ts("2026-11-25T21:29:17+00:00x", &t) && !kc_admin_parse_ts("2026-13-25T21:29:17Z", &t),
		  "timestamp: anything else is refused");
	kc_admin_iso(1795642157.4096, iso);
	check(strcmp(iso, "2026-11-25T21:29:17.409Z") == 0, "ISO time: UTC, milliseconds");
}

static void
test_utf8(void)
{
	size_t		n = 0;

	check(kc_admin_utf8_ok("abc", 3, &n) && n == 3, "utf-8: ASCII, 3 characters");
	check(kc_admin_utf8_ok("Zo\xc3\xab \xe2\x82\xac \xf0\x9f\x98\x80", 13, &n) && n == 7,
		  "utf-8: 2-, 3- and 4-byte characters counted once each");
	check(!kc_admin_utf8_ok("a\0b", 3, &n), "utf-8: a NUL byte is refused");
	check(!kc_admin_utf8_ok("\xff\xfe", 2, &n) && !kc_admin_utf8_ok("\xc3", 1, &n) &&
		  !kc_admin_utf8_ok("\xc0\xaf", 2, &n) && !kc_admin_utf8_ok("\xe0\x80\xaf", 3, &n) &&
		  !kc_admin_utf8_ok("\xed\xa0\x80", 3, &n) &&
		  !kc_admin_utf8_ok("\xf4\x90\x80\x80", 4, &n) && !kc_admin_utf8_ok("\xe2\x82", 2, &n),
		  "utf-8: invalid bytes, truncated, overlong, surrogate and beyond U+10FFFF are refused");
	check(kc_admin_utf8_ok("", 0, &n) && n == 0, "utf-8: empty text is fine");
}

static void
event(long long id, const char *type, const char *payload, const char *created_at, double pushed)
{
	kc_event_note ev;

	memset(&ev, 0, sizeof(ev));
	ev.id = id;
	ev.type = type;
	ev.student_id = "11111111-1111-4111-8111-111111111111";
	ev.created_at = created_at;
	ev.payload = payload;
	kc_admin_trace_event(NULL, &ev, 1795642157.600, pushed, 3);
}

static void
test_record(void)
{
	kc_trace_entry e;
	kc_trace_window w;
	long long	expected = kc_metrics_get(KC_M_SESSIONS_EXPECTED);
	long long	created = kc_metrics_get(KC_M_SESSIONS_CREATED);

	check(kc_admin_trace_lookup(5, &e) == KC_TRACE_BEFORE_START, "record: nothing applied yet");
	/* the listener records the lag (0.1 s) right before it hands the event over */
	kc_metrics_event_lag(0.1);
	event(100, "PURCHASE_CREATED", "{\"purchase_tier\":20}", "2026-11-25T21:29:17.409+00:00", 1795642157.650);
	check(kc_admin_trace_lookup(100, &e) == KC_TRACE_RECORDED && e.invalidated_exact &&
		  fabs(e.invalidated - 1795642157.509) < 1e-6 && fabs(e.pushed - 1795642157.650) < 1e-6 &&
		  e.sockets == 3, "record: invalidation time from the listener's lag, push time, sockets");
	event(101, "SESSIONS_GENERATED", "{\"count\":20,\"total\":20}", "2026-11-25T21:29:17.409+00:00", 0);
	check(kc_admin_trace_lookup(101, &e) == KC_TRACE_RECORDED && !e.invalidated_exact &&
		  fabs(e.invalidated - 1795642157.600) < 1e-6 && e.pushed == 0,
		  "record: without a lag, the hand-over time (an upper bound); not pushed");
	check(kc_metrics_get(KC_M_SESSIONS_EXPECTED) - expected == 20 &&
		  kc_metrics_get(KC_M_SESSIONS_CREATED) - created == 20,
		  "counters: PURCHASE_CREATED purchase_tier expected, SESSIONS_GENERATED count created");
	kc_metrics_event_lag(0.2);
	event(101, "SESSIONS_GENERATED", "{\"count\":20}", "2026-11-25T21:29:17.409+00:00", 1795642158.0);
	check(kc_admin_trace_lookup(101, &e) == KC_TRACE_RECORDED && e.pushed == 0 &&
		  kc_metrics_get(KC_M_SESSIONS_CREATED) - created == 20,
		  "record: an id handed over again (listener reconnect) changes nothing, counts nothing");
	check(kc_metrics_take_event_lag() < 0, "the lag of the replayed event was taken all the same");
	event(102, "SESSIONS_GENERATED", "{\"count\":\"many\"}", NULL, 0);
	event(103, "PURCHASE_CREATED", "not json", "garbage", 0);
	check(kc_metrics_get(KC_M_SESSIONS_CREATED) - created == 20 && kc_metrics_get(KC_M_SESSIONS_EXPECTED) - expected == 20 &&
		  kc_admin_trace_lookup(103, &e) == KC_TRACE_RECORDED && e.created == 0,
		  "counters: odd payloads count nothing; an unreadable created_at is kept as unknown");
	check(kc_admin_trace_lookup(99, &e) == KC_TRACE_BEFORE_START, "record: an id before the first applied");
	check(kc_admin_trace_lookup(104, &e) == KC_TRACE_NOT_YET, "record: an id above the newest is not applied yet");
	event(110, "TRAINER_ALLOCATED", "{}", NULL, 0);
	check(kc_admin_trace_lookup(105, &e) == KC_TRACE_NOT_SEEN, "record: a gap within the record was not seen");
	event(100 + KC_TRACE_SLOTS, "TRAINER_ALLOCATED", "{}", NULL, 0);
	check(kc_admin_trace_lookup(100, &e) == KC_TRACE_OLDER && kc_admin_trace_lookup(101, &e) == KC_TRACE_RECORDED &&
		  kc_admin_trace_lookup(110, &e) == KC_TRACE_RECORDED,
		  "record: it holds the last KC_TRACE_SLOTS ids; an id below them is older than the record");
	kc_admin_trace_window(&w);
	check(w.first == 100 && w.newest == 100 + KC_TRACE_SLOTS && w.oldest == 101 && w.capacity == KC_TRACE_SLOTS,
		  "record: its window (first, oldest held, newest)");
}

static void
test_metrics(void)
{
	size_t		len = 0;
	char	   *text = kc_metrics_render(&len);

	check(text && strstr(text, "\nkc_push_lag_seconds_count 1\n") && strstr(text, "# TYPE kc_push_lag_seconds histogram") &&
		  strstr(text, "\nkc_sessions_expected_total ") && strstr(text, "\nkc_sessions_created_total ") &&
		  strstr(text, "\nkc_cache_invalidation_errors_total 0\n"),
		  "metrics: push lag histogram (one push observed), session counters, invalidation errors");
	free(text);
}

int
main(void)
{
	test_router();
	test_time();
	test_utf8();
	test_record();
	test_metrics();
	printf("# admin unit: %d failed\n", failures);
	return failures ? 1 : 0;
}
