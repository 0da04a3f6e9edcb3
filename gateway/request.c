/*
 * request.c - reading a request and building and sending its answer (see
 * request.h): every error body is the same JSON shape, every database failure
 * maps to the same status, and every answer leaves through kc_resp_send, which
 * adds the headers that depend on the response (ETag, X-Cache, Retry-After,
 * WWW-Authenticate, Allow) or on the deployment (CORS, X-KC-Auth, draining).
 */
#include "request.h"

#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache_local.h"
#include "log.h"
#include "parse.h"
#include "routes.h"

const char *
kc_req_query(const kc_request *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *
kc_req_header(const kc_request *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

void
kc_resp_body(kc_response *r, int status, const char *type, char *body, size_t len)
{
	r->status = status;
	r->content_type = type;
	r->body = body;
	r->len = len;
	r->body_static = false;
}

void
kc_resp_static(kc_response *r, int status, const char *type, const char *body, size_t len)
{
	r->status = status;
	r->content_type = type;
	r->body = (char *) body;
	r->len = len;
	r->body_static = true;
}

void
kc_resp_shared(kc_response *r, int status, const char *type, kc_body *body)
{
	r->status = status;
	r->content_type = type;
	r->shared = body;
	r->body = body->data;
	r->len = body->len;
	r->body_static = false;
}

/* Drops whatever body r holds. */
static void
release_body(kc_response *r)
{
	if (r->shared)
		kc_body_unref(r->shared);
	else if (r->body && !r->body_static)
		free(r->body);
	r->shared = NULL;
	r->body = NULL;
}

static void
unref_body(void *cls)
{
	kc_body_unref(cls);
}

void
kc_resp_error(kc_response *r, int status, const char *code, const char *message)
{
	char		esc[512];
	char	   *body;
	int			n;

	kc_json_escape(esc, sizeof(esc), message);
	body = malloc(sizeof(esc) + 128);
	if (!body)
	{
		kc_resp_static(r, status, "application/json", "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}", 56);
		return;
	}
	n = snprintf(body, sizeof(esc) + 128, "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}", code, esc);
	release_body(r);
	kc_resp_body(r, status, "application/json", body, (size_t) n);
}

void
kc_resp_unavailable(kc_response *r, kc_app *app)
{
	kc_resp_error(r, 503, "unavailable", "the database is unavailable, retry later");
	r->retry_after = app->cfg->retry_after;
}

void
kc_resp_db_error(const kc_request *req, kc_response *r, kc_db_status st,
				 const char *bad_input, const char *server_msg)
{
	kc_logline	l;

	switch (st)
	{
		case KC_DB_OK:
		case KC_DB_GONE:		/* only events_since refuses a cursor */
		case KC_DB_ERROR:
			break;
		case KC_DB_NOT_FOUND:
			kc_resp_error(r, 404, "not_found", "unknown student");
			return;
		case KC_DB_BAD_INPUT:
			kc_resp_error(r, 400, "bad_request", bad_input);
			return;
		case KC_DB_UNAVAILABLE:
			kc_resp_unavailable(r, req->app);
			return;
	}
	kc_log_begin(&l, KC_LOG_ERROR, "query failed");
	kc_log_str(&l, "route", req->route->label);
	kc_log_str(&l, "error", server_msg);
	kc_log_end(&l);
	kc_resp_error(r, 500, "internal", "internal error");
}

static void
add_cors(kc_app *app, struct MHD_Connection *conn, struct MHD_Response *resp,
		 const char *allow, bool preflight)
{
	const char *origin = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Origin");
	const char *list = app->cfg->cors_origins;

	if (!kc_cors_allowed(list, origin))
		return;
	if (strcmp(list, "*") == 0)
		MHD_add_response_header(resp, "Access-Control-Allow-Origin", "*");
	else
	{
		MHD_add_response_header(resp, "Access-Control-Allow-Origin", origin);
		MHD_add_response_header(resp, "Vary", "Origin");
	}
	MHD_add_response_header(resp, "Access-Control-Expose-Headers", "ETag, X-Cache, Retry-After");
	if (preflight)
	{
		MHD_add_response_header(resp, "Access-Control-Allow-Methods", allow);
		MHD_add_response_header(resp, "Access-Control-Allow-Headers", "Authorization, If-None-Match, KC-Min-Version");
		MHD_add_response_header(resp, "Access-Control-Max-Age", "600");
	}
}

bool
kc_resp_send(kc_app *app, struct MHD_Connection *conn, kc_response *r,
			 const char *allow, bool preflight)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;
	char		num[16];

	if (r->prepared)
	{
		ret = MHD_queue_response(conn, (unsigned int) r->status, r->prepared);
		MHD_destroy_response(r->prepared);
		r->prepared = NULL;
		release_body(r);
		return ret == MHD_YES;
	}
	if (r->status == 304 || r->body == NULL)
	{
		release_body(r);
		resp = MHD_create_response_from_buffer(0, (void *) "", MHD_RESPMEM_PERSISTENT);
	}
	else if (r->shared)
	{
		/* no copy: MHD sends from the shared body and drops our reference when done */
		resp = MHD_create_response_from_buffer_with_free_callback_cls(r->len, r->body,
																	  unref_body, r->shared);
		if (resp)
			r->shared = NULL;
	}
	else
		resp = MHD_create_response_from_buffer(r->len, r->body,
											   r->body_static ? MHD_RESPMEM_PERSISTENT : MHD_RESPMEM_MUST_FREE);
	if (!resp)
	{
		release_body(r);
		return false;
	}
	if (r->content_type && r->status != 304)
		MHD_add_response_header(resp, "Content-Type", r->content_type);
	if (r->x_cache)
		MHD_add_response_header(resp, "X-Cache", r->x_cache);
	if (r->etag[0])
		MHD_add_response_header(resp, "ETag", r->etag);
	if (r->etag[0] || r->x_cache)
		MHD_add_response_header(resp, "Vary", "Authorization");
	if (r->cache_control)
		MHD_add_response_header(resp, "Cache-Control", r->cache_control);
	if (r->retry_after > 0)
	{
		snprintf(num, sizeof(num), "%d", r->retry_after);
		MHD_add_response_header(resp, "Retry-After", num);
	}
	if (r->status == 401)
		MHD_add_response_header(resp, "WWW-Authenticate", "Bearer realm=\"kc_flow\"");
	if (allow && (r->status == 405 || preflight))
		MHD_add_response_header(resp, "Allow", allow);
	if (!app->cfg->auth)
		MHD_add_response_header(resp, "X-KC-Auth", "off");
	if (atomic_load(&app->draining))
		MHD_add_response_header(resp, "Connection", "close");
	add_cors(app, conn, resp, allow, preflight);
	ret = MHD_queue_response(conn, (unsigned int) r->status, resp);
	MHD_destroy_response(resp);
	return ret == MHD_YES;
}
