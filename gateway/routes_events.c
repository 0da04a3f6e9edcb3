/*
 * routes_events.c - GET /api/v1/events/recent?after={id}&limit=&student=
 *
 * The polling fallback of the WebSocket: the caller's events with id > after,
 * read through kc_flow.events_since, which never skips an event that may still
 * commit. Whose events: req->student, set by the access rule from student=
 * (a student always gets their own; an admin, or anyone when auth is off,
 * names a student or reads every student's events).
 *
 * A cursor below the log's floor (events a trim removed), or above its head
 * (a position of a log since rewound by a failover or a restore), SQLSTATE
 * KC410 both, is answered 410 "refetch" with the floor and the head: the
 * client reloads its views and reads on with after=log_head (docs/gateway.md).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "parse.h"
#include "routes.h"

/* The 410 of a cursor below the log's floor or above its head: what to reload, and where to read on. */
static void
refetch(kc_request *req, kc_response *resp, long long after)
{
	long long	floor_pos,
				head_pos;
	char	   *body;
	int			n;

	if (!kc_db_log_bounds(req->app->db, &floor_pos, &head_pos))
	{
		kc_resp_unavailable(resp, req->app);
		return;
	}
	kc_metrics_add(KC_M_REFETCHES, 1);
	body = malloc(384);
	if (!body)
	{
		kc_resp_error(resp, 500, "internal", "out of memory");
		return;
	}
	n = snprintf(body, 384, "{\"error\":{\"code\":\"refetch\",\"message\":\"position %lld is %s: "
				 "reload the views and read on with after=log_head\","
				 "\"log_floor\":%lld,\"log_head\":%lld}}", after,
				 after > head_pos ? "past the end of the event log (rewound since it was read)"
				 : "no longer in the event log", floor_pos, head_pos);
	resp->cache_control = "private, no-store";
	kc_resp_body(resp, 410, "application/json", body, (size_t) n);
}

void
kc_route_events_recent(kc_request *req, kc_response *resp)
{
	kc_events_query q;
	const char *bad = kc_events_query_check(kc_req_query(req, "after"), kc_req_query(req, "limit"), &q);
	long long	after = q.after;
	char		after_buf[24],
				limit_buf[16];
	const char *params[3];
	PGresult   *res;
	kc_db_status st;
	char		msg[512] = "";
	const char *events;
	long long	next;
	size_t		cap;
	char	   *body;
	int			n;

	if (bad)
	{
		kc_resp_error(resp, 400, "bad_request", bad);
		return;
	}
	snprintf(after_buf, sizeof(after_buf), "%lld", after);
	snprintf(limit_buf, sizeof(limit_buf), "%lld", q.limit);
	params[0] = after_buf;
	params[1] = req->student[0] ? req->student : NULL;
	params[2] = limit_buf;
	st = kc_db_exec(req->app->db, KC_STMT_EVENTS, 3, params, &res, msg, sizeof(msg));
	if (st == KC_DB_GONE)
	{
		refetch(req, resp, after);
		return;
	}
	if (st != KC_DB_OK)
	{
		kc_resp_db_error(req, resp, st, "invalid parameter", msg);
		return;
	}
	events = PQgetvalue(res, 0, 0);
	next = PQgetisnull(res, 0, 1) ? after : strtoll(PQgetvalue(res, 0, 1), NULL, 10);
	cap = (size_t) PQgetlength(res, 0, 0) + 64;
	body = malloc(cap);
	if (!body)
	{
		PQclear(res);
		kc_resp_error(resp, 500, "internal", "out of memory");
		return;
	}
	n = snprintf(body, cap, "{\"events\":%s,\"next_after\":%lld}", events, next);
	PQclear(res);
	resp->cache_control = "private, no-store";
	kc_resp_body(resp, 200, "application/json", body, (size_t) n);
}
