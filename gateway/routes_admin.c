/*
 * routes_admin.c - the operator console's routes (docs/gateway.md, "Operator console"),
 * but the payment's story (routes_admin_story.c):
 *
 *   GET  /admin                                  the page (static/admin.html): holds no data
 *   GET  /api/v1/admin/search?q=&limit=          kc_flow.admin_search()
 *   GET  /api/v1/admin/stats                     the queue now and the sampled figures
 *   POST /api/v1/admin/dead-letters/{id}/retry   kc_flow.retry_dead_letter()
 *
 * and what every admin route shares: the admin check, the answer to a failed
 * statement, JSON answers. The /api/v1/admin rows ask for a token
 * (KC_AUTH_ADMIN: 401 without one, checked by http.c like every token); each
 * route function first refuses any principal but an admin with 403
 * (kc_admin_only). With KC_AUTH=off everyone is let in, as everywhere else.
 * The statements run on the console's own connections (routes_admin_db.c).
 */
#include "routes_admin.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"
#include "parse.h"
#include "routes.h"

#define SEARCH_LIMIT_MAX 100

/* ---- the search text ---- */

bool
kc_admin_utf8_ok(const char *s, size_t len, size_t *chars)
{
	const unsigned char *u = (const unsigned char *) s;
	size_t		n = 0;

	for (size_t i = 0; i < len; n++)
	{
		unsigned char c = u[i];
		size_t		extra;
		unsigned int cp;

		if (c == 0)
			return false;
		if (c < 0x80)
		{
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
		{
			extra = 1;
			cp = c & 0x1f;
		}
		else if (c >= 0xe0 && c <= 0xef)
		{
			extra = 2;
			cp = c & 0x0f;
		}
		else if (c >= 0xf0 && c <= 0xf4)
		{
			extra = 3;
			cp = c & 0x07;
		}
		else
			return false;
		if (i + extra >= len)
			return false;
		for (size_t k = 1; k <= extra; k++)
		{
			if ((u[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (u[i + k] & 0x3f);
		}
		/* overlong forms, surrogates, beyond U+10FFFF */
		if ((extra == 2 && cp < 0x800) || (extra == 3 && cp < 0x10000) ||
			(cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
			return false;
		i += extra + 1;
	}
	if (chars)
		*chars = n;
	return true;
}

/* ---- answers ---- */

bool
kc_admin_only(kc_request *req, kc_response *resp)
{
	if (req->principal.authenticated && !req->principal.admin)
	{
		kc_resp_error(resp, 403, "forbidden", "the operator console needs an admin token");
		return false;
	}
	kc_admin_sampler_start(req->app);
	return true;
}

void
kc_admin_db_error(kc_request *req, kc_response *resp, kc_db_status st, const char *msg,
				  const char *not_found)
{
	switch (st)
	{
		case KC_DB_UNAVAILABLE:
			kc_resp_unavailable(resp, req->app);
			return;
		case KC_DB_NOT_FOUND:
			kc_resp_error(resp, 404, "not_found", not_found);
			return;
		case KC_DB_BAD_INPUT:
			kc_resp_error(resp, 400, "bad_request", msg);
			return;
		case KC_DB_OK:
		case KC_DB_GONE:		/* only events_since refuses a cursor */
		case KC_DB_ERROR:
			break;
	}
	{
		kc_logline	l;

		kc_log_begin(&l, KC_LOG_ERROR, "query failed");
		kc_log_str(&l, "route", req->route->label);
		kc_log_str(&l, "error", msg);
		kc_log_end(&l);
	}
	kc_resp_error(resp, 500, "internal", "internal error");
}

void
kc_admin_send_json(kc_response *resp, int status, cJSON *doc)
{
	char	   *text = doc ? cJSON_PrintUnformatted(doc) : NULL;

	cJSON_Delete(doc);
	if (!text)
	{
		kc_resp_error(resp, 500, "internal", "out of memory");
		return;
	}
	resp->cache_control = "no-store";
	kc_resp_body(resp, status, "application/json", text, strlen(text));
}

void
kc_admin_add_time(cJSON *o, const char *name, double t)
{
	char		iso[32];

	if (t <= 0)
	{
		cJSON_AddNullToObject(o, name);
		return;
	}
	kc_admin_iso(t, iso);
	cJSON_AddStringToObject(o, name, iso);
}

/* ---- GET /admin ---- */

void
kc_route_admin_page(kc_request *req, kc_response *resp)
{
	kc_app	   *app = req->app;

	if (!app->admin_html)
	{
		kc_resp_error(resp, 404, "not_found", "the operator console is not installed (see --static-dir)");
		return;
	}
	resp->cache_control = "no-cache";
	kc_resp_static(resp, 200, "text/html; charset=utf-8", app->admin_html, app->admin_len);
}

/* ---- GET /api/v1/admin/search?q=&limit= ---- */

void
kc_route_admin_search(kc_request *req, kc_response *resp)
{
	const char *q = NULL;
	size_t		qlen = 0;
	size_t		chars = 0;
	const char *limit_s = kc_req_query(req, "limit");
	long long	limit = 20;
	char		limit_buf[16];
	const char *params[2];
	PGresult   *res = NULL;
	char		msg[256] = "";
	kc_db_status st;
	char	   *body;

	if (!kc_admin_only(req, resp))
		return;
	/* with its length: a %00 in the query string would otherwise cut the text silently */
	if (MHD_lookup_connection_value_n(req->conn, MHD_GET_ARGUMENT_KIND, "q", 1, &q, &qlen) != MHD_YES ||
		q == NULL)
	{
		q = "";
		qlen = 0;
	}
	if (memchr(q, '\0', qlen) != NULL)
	{
		kc_resp_error(resp, 400, "bad_request", "q must not contain NUL bytes");
		return;
	}
	if (!kc_admin_utf8_ok(q, qlen, &chars))
	{
		kc_resp_error(resp, 400, "bad_request", "q must be UTF-8 text");
		return;
	}
	if (chars > KC_SEARCH_MAX_CHARS)
	{
		snprintf(msg, sizeof(msg), "q is longer than %d characters (%zu): search for an id, its first characters or part of a name",
				 KC_SEARCH_MAX_CHARS, chars);
		kc_resp_error(resp, 400, "bad_request", msg);
		return;
	}
	if (limit_s && *limit_s && !kc_parse_int_param(limit_s, 1, SEARCH_LIMIT_MAX, &limit))
	{
		kc_resp_error(resp, 400, "bad_request", "limit must be an integer from 1 to 100");
		return;
	}
	snprintf(limit_buf, sizeof(limit_buf), "%lld", limit);
	params[0] = q;
	params[1] = limit_buf;
	st = kc_admin_exec(req->app, "SELECT kc_flow.admin_search($1::text, $2::int)::text", 2, params, true,
					   &res, msg, sizeof(msg));
	if (st != KC_DB_OK)
	{
		kc_admin_db_error(req, resp, st, msg, "not found");
		return;
	}
	body = strdup(PQgetvalue(res, 0, 0));
	PQclear(res);
	if (!body)
	{
		kc_resp_error(resp, 500, "internal", "out of memory");
		return;
	}
	resp->cache_control = "no-store";
	kc_resp_body(resp, 200, "application/json", body, strlen(body));
}

/* ---- GET /api/v1/admin/stats ---- */

void
kc_route_admin_stats(kc_request *req, kc_response *resp)
{
	kc_app	   *app = req->app;
	cJSON	   *doc;
	cJSON	   *cur;
	cJSON	   *rec;
	cJSON	   *samples;
	char	   *text;
	double		since = 0;
	PGresult   *res = NULL;
	char		msg[256] = "";
	kc_db_status st;
	kc_trace_window w;

	if (!kc_admin_only(req, resp))
		return;
	doc = cJSON_CreateObject();
	if (!doc)
	{
		kc_resp_error(resp, 500, "internal", "out of memory");
		return;
	}
	cJSON_AddNumberToObject(doc, "interval_s", KC_STATS_INTERVAL_S);
	cJSON_AddNumberToObject(doc, "capacity", KC_STATS_SAMPLES);
	kc_admin_add_time(doc, "now", kc_admin_now());

	cur = cJSON_AddObjectToObject(doc, "current");
	st = kc_admin_exec(app, "SELECT kc_flow.admin_queue_counts()::text", 0, NULL, true, &res, msg, sizeof(msg));
	if (cur)
	{
		cJSON	   *counts = st == KC_DB_OK ? cJSON_Parse(PQgetvalue(res, 0, 0)) : NULL;
		static const char *const names[] = {"queue_depth", "queue_due", "queue_retrying", "dead_letters"};

		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		{
			const cJSON *v = cJSON_GetObjectItemCaseSensitive(counts, names[i]);

			if (cJSON_IsNumber(v))
				cJSON_AddNumberToObject(cur, names[i], v->valuedouble);
			else
				cJSON_AddNullToObject(cur, names[i]);
		}
		cJSON_Delete(counts);
		cJSON_AddBoolToObject(cur, "postgres", st == KC_DB_OK);
		if (st != KC_DB_OK)
			cJSON_AddStringToObject(cur, "postgres_error", msg);
		cJSON_AddNumberToObject(cur, "watermark", (double) (app->listener ? kc_listener_watermark(app->listener) : 0));
		cJSON_AddNumberToObject(cur, "ws_connections", (double) kc_metrics_get(KC_M_WS_CONNECTIONS));
		cJSON_AddNumberToObject(cur, "invalidations_total", (double) kc_metrics_get(KC_M_INVALIDATIONS));
		cJSON_AddNumberToObject(cur, "invalidation_errors_total", (double) kc_metrics_get(KC_M_INVALIDATION_ERRORS));
		cJSON_AddNumberToObject(cur, "sessions_expected_total", (double) kc_metrics_get(KC_M_SESSIONS_EXPECTED));
		cJSON_AddNumberToObject(cur, "sessions_created_total", (double) kc_metrics_get(KC_M_SESSIONS_CREATED));
	}
	PQclear(res);

	kc_admin_trace_window(&w);
	rec = cJSON_AddObjectToObject(doc, "record");
	if (rec)
	{
		cJSON_AddNumberToObject(rec, "capacity", w.capacity);
		cJSON_AddNumberToObject(rec, "first_event_id", (double) w.first);
		cJSON_AddNumberToObject(rec, "oldest_event_id", (double) w.oldest);
		cJSON_AddNumberToObject(rec, "newest_event_id", (double) w.newest);
		kc_admin_add_time(rec, "since", w.since);
	}

	text = kc_admin_samples_json(&since);
	samples = text ? cJSON_Parse(text) : NULL;
	free(text);
	kc_admin_add_time(doc, "sampling_since", since);
	if (samples)
		cJSON_AddItemToObject(doc, "samples", samples);
	else
		cJSON_AddItemToObject(doc, "samples", cJSON_CreateArray());
	kc_admin_send_json(resp, 200, doc);
}

/* ---- POST /api/v1/admin/dead-letters/{id}/retry ---- */

void
kc_route_admin_retry(kc_request *req, kc_response *resp)
{
	const char *raw = req->param;
	long long	id;
	char		idbuf[24];
	const char *params[1] = {idbuf};
	PGresult   *res = NULL;
	char		msg[256] = "";
	kc_db_status st;
	bool		retried;
	cJSON	   *doc;
	kc_logline	l;

	if (!kc_admin_only(req, resp))
		return;
	if (!raw || !kc_parse_int_param(raw, 1, LLONG_MAX, &id))
	{
		kc_resp_error(resp, 400, "bad_request", "dead letter id must be a positive integer");
		return;
	}
	snprintf(idbuf, sizeof(idbuf), "%lld", id);
	/* a write: never sent twice (a lost answer would make the second say "already resolved") */
	st = kc_admin_exec(req->app,
					   "SELECT kc_flow.retry_dead_letter(d.id), d.event_id, d.consumer "
					   "FROM kc_flow.dead_letters d WHERE d.id = $1::bigint",
					   1, params, false, &res, msg, sizeof(msg));
	if (st != KC_DB_OK)
	{
		kc_admin_db_error(req, resp, st, msg, "unknown dead letter");
		return;
	}
	if (PQntuples(res) != 1)
	{
		PQclear(res);
		kc_resp_error(resp, 404, "not_found", "unknown dead letter");
		return;
	}
	retried = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	kc_log_begin(&l, KC_LOG_INFO, retried ? "dead letter retried" : "dead letter already resolved");
	kc_log_int(&l, "deadLetter", id);
	kc_log_str(&l, "eventId", PQgetvalue(res, 0, 1));
	kc_log_str(&l, "consumer", PQgetvalue(res, 0, 2));
	kc_log_str(&l, "by", req->principal.authenticated ? req->principal.sub : "(auth off)");
	kc_log_end(&l);
	if (!retried)
	{
		PQclear(res);
		snprintf(msg, sizeof(msg), "dead letter %lld is already resolved", id);
		kc_resp_error(resp, 409, "conflict", msg);
		return;
	}
	doc = cJSON_CreateObject();
	if (doc)
	{
		cJSON_AddNumberToObject(doc, "dead_letter_id", (double) id);
		cJSON_AddNumberToObject(doc, "event_id", strtod(PQgetvalue(res, 0, 1), NULL));
		cJSON_AddStringToObject(doc, "consumer", PQgetvalue(res, 0, 2));
		cJSON_AddBoolToObject(doc, "retried", true);
		cJSON_AddStringToObject(doc, "message", "the dead letter is resolved and its event queued again with fresh attempts");
	}
	PQclear(res);
	kc_admin_send_json(resp, 200, doc);
}
