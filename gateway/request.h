/*
 * request.h - a request and its answer, as every route sees them: the
 * process-wide kc_app, the kc_request a route reads (query, headers, the
 * caller, the student it is about) and the kc_response it fills, with the one
 * way to build each kind of answer (body, error, database failure). The daemon
 * (http.c) sends the response with kc_resp_send.
 */
#ifndef KC_REQUEST_H
#define KC_REQUEST_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "auth.h"
#include "cache.h"
#include "config.h"
#include "db.h"

struct kc_listener;
struct kc_route;
struct kc_ws_hub;
struct MHD_Connection;
struct MHD_Daemon;
struct MHD_Response;

/* Everything a request may need; one per process. */
typedef struct kc_app
{
	const kc_config *cfg;
	kc_db	   *db;
	struct kc_replicas *replicas;	/* NULL without --replica-url (replica.h) */
	kc_cache   *cache;
	struct kc_listener *listener;
	char	   *index_html;		/* GET / */
	size_t		index_len;
	char	   *admin_html;		/* GET /admin */
	size_t		admin_len;
	_Atomic bool draining;
	_Atomic int in_flight;
	struct MHD_Daemon *daemon;
	int			listen_fd;		/* bound by the supervisor (--processes); -1: the daemon binds cfg->listen */
	struct kc_ws_hub *ws;		/* the WebSocket connections (websocket.c) */
} kc_app;

typedef struct kc_request
{
	kc_app	   *app;
	struct MHD_Connection *conn;
	const struct kc_route *route;	/* its row of the route table (routes.h) */
	char		student[37];	/* whose data, once the access rule passed; "": every student's */
	const char *param;			/* the path's {id} segment: "" when none, NULL when too long */
	/*
	 * The view version this request needs (docs/design.md §6, version tokens):
	 * an answer must show at least this version; 0: any. Set by the view routes
	 * from ?min_version= or the KC-Min-Version header before they read.
	 */
	long long	min_version;
	kc_principal principal;
	void	   *held;			/* malloc'd by the route; freed when the request is over */
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
	struct MHD_Response *prepared;	/* built by the route itself (a WebSocket upgrade): sent as is */
} kc_response;

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
/*
 * The answer to a failed read, the same for every route: unknown student 404,
 * a parameter Postgres refused 400 (with bad_input as the message), Postgres
 * unavailable 503, anything else 500 (logged with the server's message).
 */
void		kc_resp_db_error(const kc_request *req, kc_response *r, kc_db_status st,
							 const char *bad_input, const char *server_msg);

/*
 * Queues r on conn with the headers every answer carries (CORS, Vary, ...);
 * allow is the route's method list for 405 and preflight answers. Releases
 * the body; false when libmicrohttpd could not take the response.
 */
bool		kc_resp_send(kc_app *app, struct MHD_Connection *conn, kc_response *r,
						 const char *allow, bool preflight);

#endif
