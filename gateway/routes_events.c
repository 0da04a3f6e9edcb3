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
#include "routes.h"

void
kc_route_events_recent(kc_request *req, kc_response *resp)
{
	const char *after_s = kc_req_query(req, "after");
	const char *limit_s = kc_req_query(req, "limit");
	const char *student_s = kc_req_query(req, "student");
	long long	after = 0;
	long long	limit = 100;
	char		student[37];
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

	if (after_s && !kc_parse_int_param(after_s, 0, 9223372036854775806LL, &after))
	{
		kc_resp_error(resp, 400, "bad_request", "after must be a non-negative integer");
		return;
	}
	if (limit_s && !kc_parse_int_param(limit_s, 1, 1000, &limit))
	{
		kc_resp_error(resp, 400, "bad_request", "limit must be an integer from 1 to 1000");
		return;
	}
	if (student_s && *student_s && !kc_uuid_normalize(student_s, student))
	{
		kc_resp_error(resp, 400, "bad_request", "student must be a uuid");
		return;
	}
	if (req->principal.authenticated && !req->principal.admin)
	{
		if (student_s && *student_s && strcmp(student, req->principal.sub) != 0)
		{
			kc_resp_error(resp, 403, "forbidden", "a student may read only their own events");
			return;
		}
		strcpy(student, req->principal.sub);
		student_s = student;
	}
	snprintf(after_buf, sizeof(after_buf), "%lld", after);
	snprintf(limit_buf, sizeof(limit_buf), "%lld", limit);
	params[0] = after_buf;
	params[1] = student_s && *student_s ? student : NULL;
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
