/*
 * routes_events.c - GET /api/v1/events/recent?after={id}&limit=&student=
 *
 * The polling fallback of the WebSocket: the caller's events with id > after,
 * read through kc_flow.events_since, which never skips an event that may still
 * commit. A student always gets their own events; an admin (or anyone when
 * auth is off) may name a student, or read every student's events.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "parse.h"
#include "routes.h"

int
kc_events_query_check(const char *after, const char *limit, const char *student,
					  const kc_principal *p, kc_events_query *q, const char **msg)
{
	memset(q, 0, sizeof(*q));
	q->limit = 100;
	if (after && !kc_parse_event_id(after, &q->after))
	{
		*msg = "after must be a non-negative integer";
		return 400;
	}
	if (limit && !kc_parse_int_param(limit, 1, 1000, &q->limit))
	{
		*msg = "limit must be an integer from 1 to 1000";
		return 400;
	}
	if (!kc_parse_student(student, q->student))
	{
		*msg = "student must be a uuid";
		return 400;
	}
	if (p->authenticated && !p->admin)
	{
		/* a student's sub is a normalized uuid (kc_auth_verify) */
		if ((q->student[0] && strcmp(q->student, p->sub) != 0) ||
			!kc_uuid_normalize(p->sub, q->student))
		{
			*msg = "a student may read only their own events";
			return 403;
		}
	}
	return 0;
}

void
kc_route_events_recent(kc_request *req, kc_response *resp)
{
	kc_events_query q;
	const char *bad = "";
	int			status = kc_events_query_check(kc_req_query(req, "after"), kc_req_query(req, "limit"),
											   kc_req_query(req, "student"), &req->principal, &q, &bad);
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

	if (status != 0)
	{
		kc_resp_error(resp, status, status == 403 ? "forbidden" : "bad_request", bad);
		return;
	}
	snprintf(after_buf, sizeof(after_buf), "%lld", after);
	snprintf(limit_buf, sizeof(limit_buf), "%lld", q.limit);
	params[0] = after_buf;
	params[1] = q.student[0] ? q.student : NULL;
	params[2] = limit_buf;
	st = kc_db_exec(req->app->db, KC_STMT_EVENTS, 3, params, &res, msg, sizeof(msg));
	if (st == KC_DB_UNAVAILABLE)
	{
		kc_resp_unavailable(resp, req->app);
		return;
	}
	if (st != KC_DB_OK)
	{
		kc_logf(KC_LOG_ERROR, "events query failed: %s", msg);
		kc_resp_error(resp, st == KC_DB_BAD_INPUT ? 400 : 500,
					  st == KC_DB_BAD_INPUT ? "bad_request" : "internal",
					  st == KC_DB_BAD_INPUT ? "invalid parameter" : "internal error");
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
