/*
 * http.h - the HTTP server of kc-gateway: request/response types shared by the
 * route files, the pure router (testable without a server), and the daemon.
 *
 * http.c owns everything libmicrohttpd-specific: it matches the route, checks
 * method, body size, authentication and access, then calls one route function
 * (routes_*.c) that fills a kc_response. A future websocket.c plugs in here as
 * one more route that upgrades the connection.
 */
#ifndef KC_HTTP_H
#define KC_HTTP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "auth.h"
#include "cache.h"
#include "config.h"
#include "db.h"
#include "metrics.h"

struct kc_listener;
struct MHD_Connection;
struct MHD_Daemon;

/* Everything a request may need; one per process. */
typedef struct kc_app
{
	const kc_config *cfg;
	kc_db	   *db;
	kc_cache   *cache;
	struct kc_listener *listener;
	char	   *index_html;		/* GET / */
	size_t		index_len;
	_Atomic bool draining;
	_Atomic int in_flight;
	struct MHD_Daemon *daemon;
	struct kc_ws_hub *ws;		/* the WebSocket connections (websocket.c) */
} kc_app;

typedef struct kc_match
{
	kc_route_id route;
	bool		has_student;	/* the path names a student */
	bool		bad_id;			/* ... but not as a uuid */
	char		student[37];	/* normalized lower-case */
} kc_match;

typedef struct kc_request
{
	kc_app	   *app;
	struct MHD_Connection *conn;
	kc_match	match;
	kc_principal principal;
} kc_request;

struct kc_body;

typedef struct kc_response
{
	int			status;
	char	   *body;			/* malloc'd unless body_static or shared */
	size_t		len;
	bool		body_static;
	struct kc_body *shared;		/* when set, body points into it; the response holds a reference */
	const char *content_type;
	const char *x_cache;		/* HIT, MISS, BYPASS or NULL */
	char		etag[48];		/* empty: none */
	int			retry_after;	/* seconds, 0: none */
	const char *cache_control;
} kc_response;

/* Router: fills m from a request path (no query string). */
void		kc_route_match(const char *path, kc_match *m);

const char *kc_req_query(const kc_request *req, const char *name);
const char *kc_req_header(const kc_request *req, const char *name);

/* Takes ownership of a malloc'd body. */
void		kc_resp_body(kc_response *r, int status, const char *type, char *body, size_t len);
void		kc_resp_static(kc_response *r, int status, const char *type, const char *body, size_t len);
/* Takes over one reference of a shared body (sent without copying). */
void		kc_resp_shared(kc_response *r, int status, const char *type, struct kc_body *body);
/* {"error":{"code":...,"message":...}} */
void		kc_resp_error(kc_response *r, int status, const char *code, const char *message);
/* 503 with Retry-After, for Postgres outages. */
void		kc_resp_unavailable(kc_response *r, kc_app *app);

/* Starts the daemon on cfg->listen; false with err on failure. */
bool		kc_http_start(kc_app *app, char *err, size_t errlen);
/* Stops accepting, waits up to timeout_s for requests in flight, stops. */
void		kc_http_drain_and_stop(kc_app *app, int timeout_s);

#endif
