/*
 * routes_admin_story.c - GET /api/v1/admin/payments/{id}: a payment's whole
 * story for the operator console: kc_flow.payment_story() (events, the stage
 * that handled each and when, queue state, dead letters, purchase, allocation,
 * sessions), and, for each event, what this gateway did with it: when it
 * invalidated the cache and when it pushed the event (routes_admin_trace.c),
 * or why it cannot tell. 400 for an id that is not a uuid, 404 for an unknown
 * payment.
 */
#include "routes_admin.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "routes.h"

/* Milliseconds from a to b, to the microsecond. */
static void
add_delay(cJSON *o, const char *name, double a, double b)
{
	if (a <= 0 || b <= 0)
		cJSON_AddNullToObject(o, name);
	else
		cJSON_AddNumberToObject(o, name, (double) (long long) ((b - a) * 1e6 + (b >= a ? 0.5 : -0.5)) / 1000.0);
}

/* ---- GET /api/v1/admin/payments/{id} ---- */

static const char *const trace_status_name[] = {
	[KC_TRACE_RECORDED] = "recorded",
	[KC_TRACE_NOT_YET] = "not_applied_yet",
	[KC_TRACE_OLDER] = "older_than_record",
	[KC_TRACE_BEFORE_START] = "before_record",
	[KC_TRACE_NOT_SEEN] = "not_seen",
};

/* Adds to every event of the story what this gateway did with it, and what its record holds. */
static void
add_gateway_view(cJSON *story, kc_app *app)
{
	const cJSON *events = cJSON_GetObjectItemCaseSensitive(story, "events");
	cJSON	   *ev;
	cJSON	   *gw;
	kc_trace_window w;
	char		why[256];

	kc_admin_trace_window(&w);
	cJSON_ArrayForEach(ev, events)
	{
		/* the gateway knows an event by its log position: the id its pushes carry */
		const cJSON *posj = cJSON_GetObjectItemCaseSensitive(ev, "pos");
		const cJSON *at = cJSON_GetObjectItemCaseSensitive(ev, "created_at");
		long long	pos = cJSON_IsNumber(posj) ? (long long) posj->valuedouble : 0;
		kc_trace_entry e = {0};
		kc_trace_status st = pos > 0 ? kc_admin_trace_lookup(pos, &e) : KC_TRACE_NOT_YET;
		cJSON	   *g = cJSON_AddObjectToObject(ev, "gateway");
		double		created = e.created;

		if (!g)
			continue;
		if (created <= 0 && cJSON_IsString(at))
			kc_admin_parse_ts(at->valuestring, &created);
		cJSON_AddStringToObject(g, "status", trace_status_name[st]);
		switch (st)
		{
			case KC_TRACE_RECORDED:
				kc_admin_add_time(g, "invalidated_at", e.invalidated);
				cJSON_AddBoolToObject(g, "invalidated_exact", e.invalidated_exact);
				add_delay(g, "invalidated_after_ms", created, e.invalidated);
				kc_admin_add_time(g, "pushed_at", e.pushed);
				add_delay(g, "pushed_after_ms", created, e.pushed);
				cJSON_AddNumberToObject(g, "ws_connections", e.sockets);
				why[0] = '\0';
				if (!e.invalidated_exact)
					snprintf(why, sizeof(why), "invalidated at or before invalidated_at (the time the listener handed the event over)");
				break;
			case KC_TRACE_NOT_YET:
				if (pos > 0)
					snprintf(why, sizeof(why), "this gateway has not applied this event yet (it has applied up to position %lld)", w.newest);
				else
					snprintf(why, sizeof(why), "committed but not in the log yet: no position, so no gateway has applied it");
				break;
			case KC_TRACE_OLDER:
				snprintf(why, sizeof(why), "older than this gateway's record, which keeps the last %d events it applied (positions %lld..%lld)",
						 w.capacity, w.oldest, w.newest);
				break;
			case KC_TRACE_BEFORE_START:
				if (w.first)
					snprintf(why, sizeof(why), "applied before this gateway's record began (at position %lld, when it started or first saw an event)", w.first);
				else
					snprintf(why, sizeof(why), "this gateway has applied no event since it started");
				break;
			case KC_TRACE_NOT_SEEN:
				snprintf(why, sizeof(why), "within this gateway's record but never handed over by its listener");
				break;
		}
		if (why[0])
			cJSON_AddStringToObject(g, "message", why);
	}
	gw = cJSON_AddObjectToObject(story, "gateway");
	if (gw)
	{
		cJSON_AddNumberToObject(gw, "record_capacity", w.capacity);
		if (w.first)
		{
			cJSON_AddNumberToObject(gw, "record_oldest_event_id", (double) w.oldest);
			cJSON_AddNumberToObject(gw, "record_newest_event_id", (double) w.newest);
		}
		else
		{
			cJSON_AddNullToObject(gw, "record_oldest_event_id");
			cJSON_AddNullToObject(gw, "record_newest_event_id");
		}
		kc_admin_add_time(gw, "record_since", w.since);
		cJSON_AddNumberToObject(gw, "watermark", (double) (app->listener ? kc_listener_watermark(app->listener) : 0));
	}
}

void
kc_route_admin_payment(kc_request *req, kc_response *resp)
{
	const char *raw = req->param;
	char		id[37];
	const char *params[1] = {id};
	PGresult   *res = NULL;
	char		msg[256] = "";
	kc_db_status st;
	cJSON	   *story;

	if (!kc_admin_only(req, resp))
		return;
	if (!raw || !kc_uuid_normalize(raw, id))
	{
		kc_resp_error(resp, 400, "bad_request", "payment id must be a uuid");
		return;
	}
	st = kc_admin_exec(req->app, "SELECT kc_flow.payment_story($1::uuid)::text", 1, params, true,
					   &res, msg, sizeof(msg));
	if (st != KC_DB_OK)
	{
		kc_admin_db_error(req, resp, st, msg, "unknown payment");
		return;
	}
	if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0))
	{
		PQclear(res);
		kc_resp_error(resp, 404, "not_found", "unknown payment");
		return;
	}
	story = cJSON_Parse(PQgetvalue(res, 0, 0));
	PQclear(res);
	if (!story)
	{
		kc_resp_error(resp, 500, "internal", "out of memory");
		return;
	}
	add_gateway_view(story, req->app);
	kc_admin_send_json(resp, 200, story);
}

