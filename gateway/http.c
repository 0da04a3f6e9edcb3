/*
 * http.c - libmicrohttpd daemon, router and the checks every request passes
 * before its route runs: body size (413), route (404), method (405), bearer
 * token (401), student id (400), access (403). Also CORS, ETag/304 support,
 * per-request metrics and the SIGTERM drain.
 *
 * Threading: MHD's internal thread pool; each request runs to completion on
 * one pool thread, taking a Postgres and/or Redis connection from the pools
 * only for the duration of one command.
 */
#include "http.h"

#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "cache_local.h"
#include "log.h"
#include "parse.h"
#include "routes.h"
#include "websocket.h"

#define STUDENTS_PREFIX "/api/v1/students/"

typedef struct req_state
{
	struct timespec start;
	size_t		body_bytes;
	bool		answered;
	bool		upgraded;		/* a WebSocket now: no longer in flight */
	void	   *ws;				/* what the WebSocket upgrade needs */
} req_state;

static double
elapsed_s(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double) (now.tv_sec - start->tv_sec) + (now.tv_nsec - start->tv_nsec) / 1e9;
}

void
kc_route_match(const char *path, kc_match *m)
{
	static const struct
	{
		const char *path;
		kc_route_id route;
	}			fixed[] = {
		{"/", KC_ROUTE_STATIC}, {"/index.html", KC_ROUTE_STATIC},
		{"/healthz", KC_ROUTE_HEALTHZ}, {"/readyz", KC_ROUTE_READYZ},
		{"/metrics", KC_ROUTE_METRICS}, {"/api/v1/events/recent", KC_ROUTE_EVENTS},
		{"/api/v1/ws", KC_ROUTE_WS}, {"/api/v1/demo/purchase", KC_ROUTE_DEMO},
	};
	static const struct
	{
		const char *suffix;
		kc_route_id route;
	}			student_routes[] = {
		{"home", KC_ROUTE_HOME}, {"learning", KC_ROUTE_LEARNING}, {"sessions", KC_ROUTE_SESSIONS},
	};
	const char *id;
	const char *slash;
	char		raw[40];
	size_t		idlen;

	memset(m, 0, sizeof(*m));
	m->route = KC_ROUTE_UNKNOWN;
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		if (strcmp(path, fixed[i].path) == 0)
		{
			m->route = fixed[i].route;
			return;
		}
	if (strncmp(path, STUDENTS_PREFIX, strlen(STUDENTS_PREFIX)) != 0)
		return;
	id = path + strlen(STUDENTS_PREFIX);
	slash = strchr(id, '/');
	if (!slash || slash == id)
		return;
	for (size_t i = 0; i < sizeof(student_routes) / sizeof(student_routes[0]); i++)
		if (strcmp(slash + 1, student_routes[i].suffix) == 0)
			m->route = student_routes[i].route;
	if (m->route == KC_ROUTE_UNKNOWN)
		return;
	m->has_student = true;
	idlen = (size_t) (slash - id);
	if (idlen >= sizeof(raw))
	{
		m->bad_id = true;
		return;
	}
	memcpy(raw, id, idlen);
	raw[idlen] = '\0';
	m->bad_id = !kc_uuid_normalize(raw, m->student);
}

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

static void
add_cors(kc_app *app, struct MHD_Connection *conn, struct MHD_Response *resp, bool preflight)
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
		MHD_add_response_header(resp, "Access-Control-Allow-Methods", "GET, HEAD, OPTIONS");
		MHD_add_response_header(resp, "Access-Control-Allow-Headers", "Authorization, If-None-Match");
		MHD_add_response_header(resp, "Access-Control-Max-Age", "600");
	}
}

/* Queues r on conn, counts it in the metrics and releases the body. */
static enum MHD_Result
send_response(kc_app *app, struct MHD_Connection *conn, kc_route_id route,
			  kc_response *r, req_state *st, bool preflight)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;
	char		num[16];

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
		return MHD_NO;
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
	if (r->status == 405 || preflight)
		MHD_add_response_header(resp, "Allow", "GET, HEAD, OPTIONS");
	if (!app->cfg->auth)
		MHD_add_response_header(resp, "X-KC-Auth", "off");
	if (atomic_load(&app->draining))
		MHD_add_response_header(resp, "Connection", "close");
	add_cors(app, conn, resp, preflight);
	ret = MHD_queue_response(conn, (unsigned int) r->status, resp);
	MHD_destroy_response(resp);
	st->answered = true;
	kc_metrics_request(route, r->status, elapsed_s(&st->start));
	return ret;
}

typedef void (*route_fn) (kc_request *req, kc_response *resp);

static route_fn
route_function(kc_route_id id)
{
	switch (id)
	{
		case KC_ROUTE_HOME:
			return kc_route_home;
		case KC_ROUTE_LEARNING:
			return kc_route_learning;
		case KC_ROUTE_SESSIONS:
			return kc_route_sessions;
		case KC_ROUTE_EVENTS:
			return kc_route_events_recent;
		case KC_ROUTE_HEALTHZ:
			return kc_route_healthz;
		case KC_ROUTE_READYZ:
			return kc_route_readyz;
		case KC_ROUTE_METRICS:
			return kc_route_metrics;
		case KC_ROUTE_STATIC:
			return kc_route_static;
		case KC_ROUTE_DEMO:
			return kc_route_demo_purchase;
		default:
			return NULL;
	}
}

static bool
needs_auth(kc_route_id id)
{
	return id == KC_ROUTE_HOME || id == KC_ROUTE_LEARNING ||
		id == KC_ROUTE_SESSIONS || id == KC_ROUTE_EVENTS || id == KC_ROUTE_DEMO;
}

/* Runs the checks of the file header, then the route; fills resp. */
static void
dispatch(kc_app *app, struct MHD_Connection *conn, const char *method,
		 kc_request *req, kc_response *resp, bool *preflight)
{
	route_fn	fn = route_function(req->match.route);
	bool		post_only = req->match.route == KC_ROUTE_DEMO;

	if (post_only && !app->cfg->demo)
		fn = NULL;				/* demo routes exist only with --demo */
	if (!fn)
	{
		kc_resp_error(resp, 404, "not_found", "no such route");
		return;
	}
	if (strcmp(method, "OPTIONS") == 0)
	{
		*preflight = true;
		kc_resp_static(resp, 204, NULL, NULL, 0);
		return;
	}
	if (post_only ? strcmp(method, "POST") != 0 :
		(strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0))
	{
		kc_resp_error(resp, 405, "method_not_allowed", "only GET, HEAD and OPTIONS are allowed");
		return;
	}
	if (needs_auth(req->match.route) && app->cfg->auth)
	{
		const char *why = "";
		kc_auth_result ar = kc_auth_verify(app->cfg->jwt_secret,
										   kc_req_header(req, "Authorization"),
										   time(NULL), &req->principal, &why);

		if (ar != KC_AUTH_OK)
		{
			kc_resp_error(resp, 401, ar == KC_AUTH_EXPIRED ? "token_expired" : "unauthorized", why);
			return;
		}
	}
	if (req->match.has_student)
	{
		if (req->match.bad_id)
		{
			kc_resp_error(resp, 400, "bad_request", "student id must be a uuid");
			return;
		}
		if (!kc_auth_may_read(&req->principal, req->match.student))
		{
			kc_resp_error(resp, 403, "forbidden", "a student may read only their own data");
			return;
		}
	}
	fn(req, resp);
}

static enum MHD_Result
access_handler(void *cls, struct MHD_Connection *conn, const char *url,
			   const char *method, const char *version, const char *upload_data,
			   size_t *upload_data_size, void **con_cls)
{
	kc_app	   *app = cls;
	req_state  *st = *con_cls;
	kc_request	req;
	kc_response resp;
	bool		preflight = false;

	if (st == NULL)
	{
		const char *cl;

		st = calloc(1, sizeof(*st));
		if (!st)
			return MHD_NO;
		clock_gettime(CLOCK_MONOTONIC, &st->start);
		*con_cls = st;
		atomic_fetch_add(&app->in_flight, 1);
		cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
		if (cl && strtoull(cl, NULL, 10) > (unsigned long long) app->cfg->max_body)
		{
			memset(&resp, 0, sizeof(resp));
			kc_resp_error(&resp, 413, "payload_too_large", "request body too large");
			return send_response(app, conn, KC_ROUTE_UNKNOWN, &resp, st, false);
		}
		return MHD_YES;
	}
	if (st->answered)
	{
		*upload_data_size = 0;	/* discard the rest of a refused body */
		return MHD_YES;
	}
	if (*upload_data_size > 0)
	{
		st->body_bytes += *upload_data_size;
		*upload_data_size = 0;
		if (st->body_bytes > (size_t) app->cfg->max_body)
		{
			memset(&resp, 0, sizeof(resp));
			kc_resp_error(&resp, 413, "payload_too_large", "request body too large");
			return send_response(app, conn, KC_ROUTE_UNKNOWN, &resp, st, false);
		}
		return MHD_YES;
	}

	memset(&req, 0, sizeof(req));
	memset(&resp, 0, sizeof(resp));
	req.app = app;
	req.conn = conn;
	kc_route_match(url, &req.match);
	if (req.match.route == KC_ROUTE_WS)
	{
		unsigned int code = 0;
		struct MHD_Response *up = kc_ws_accept(&req, method, &resp, &code, &st->ws);
		enum MHD_Result ret;

		if (!up)
			return send_response(app, conn, KC_ROUTE_WS, &resp, st, false);
		ret = MHD_queue_response(conn, code, up);
		MHD_destroy_response(up);
		st->answered = true;
		kc_metrics_request(KC_ROUTE_WS, (int) code, elapsed_s(&st->start));
		if (code == 101)
		{
			/* the hub owns it from now on; the drain closes it with 1001 */
			st->upgraded = true;
			atomic_fetch_sub(&app->in_flight, 1);
		}
		return ret;
	}
	dispatch(app, conn, method, &req, &resp, &preflight);
	return send_response(app, conn, req.match.route, &resp, st, preflight);
}

static void
completed(void *cls, struct MHD_Connection *conn, void **con_cls,
		  enum MHD_RequestTerminationCode toe)
{
	kc_app	   *app = cls;

	if (*con_cls)
	{
		req_state  *st = *con_cls;

		if (!st->upgraded)
			atomic_fetch_sub(&app->in_flight, 1);
		kc_ws_state_free(st->ws);
		free(st);
		*con_cls = NULL;
	}
}

static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
	char		msg[512];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	msg[strcspn(msg, "\n")] = '\0';
	kc_logf(KC_LOG_WARN, "http: %s", msg);
}

bool
kc_http_start(kc_app *app, char *err, size_t errlen)
{
	const kc_config *cfg = app->cfg;
	struct sockaddr_in6 a6;
	struct sockaddr_in a4;
	struct sockaddr *addr;
	unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO |
		MHD_USE_ITC | MHD_USE_ERROR_LOG | MHD_ALLOW_UPGRADE;

	memset(&a4, 0, sizeof(a4));
	memset(&a6, 0, sizeof(a6));
	if (inet_pton(AF_INET, cfg->listen_host, &a4.sin_addr) == 1)
	{
		a4.sin_family = AF_INET;
		a4.sin_port = htons((uint16_t) cfg->listen_port);
		addr = (struct sockaddr *) &a4;
	}
	else if (inet_pton(AF_INET6, cfg->listen_host, &a6.sin6_addr) == 1)
	{
		a6.sin6_family = AF_INET6;
		a6.sin6_port = htons((uint16_t) cfg->listen_port);
		addr = (struct sockaddr *) &a6;
		flags |= MHD_USE_IPv6;
	}
	else
	{
		snprintf(err, errlen, "listen host \"%s\" is not an IP address", cfg->listen_host);
		return false;
	}
	app->daemon = MHD_start_daemon(flags, (uint16_t) cfg->listen_port, NULL, NULL,
								   access_handler, app,
								   MHD_OPTION_EXTERNAL_LOGGER, mhd_log, app,
								   MHD_OPTION_SOCK_ADDR, addr,
								   MHD_OPTION_THREAD_POOL_SIZE, (unsigned int) cfg->threads,
								   /* upgraded WebSockets stay counted; MHD splits this among its threads */
								   MHD_OPTION_CONNECTION_LIMIT,
								   (unsigned int) (2 * (4096 + cfg->ws_max_connections)),
								   MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) 60,
								   MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) 64 * 1024,
								   MHD_OPTION_NOTIFY_COMPLETED, completed, app,
								   MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned int) 1,
								   MHD_OPTION_END);
	if (!app->daemon)
	{
		snprintf(err, errlen, "cannot listen on %s (address in use or not permitted)", cfg->listen);
		return false;
	}
	return true;
}

void
kc_http_drain_and_stop(kc_app *app, int timeout_s)
{
	MHD_socket	lsock;
	struct timespec start;

	atomic_store(&app->draining, true);
	lsock = MHD_quiesce_daemon(app->daemon);
	if (lsock != MHD_INVALID_SOCKET)
		close(lsock);
	/* WebSockets end first (1001): MHD must not stop with upgraded sockets open */
	kc_ws_shutdown(app, 2000);
	clock_gettime(CLOCK_MONOTONIC, &start);
	while (atomic_load(&app->in_flight) > 0 && elapsed_s(&start) < timeout_s)
		usleep(20 * 1000);
	if (atomic_load(&app->in_flight) > 0)
		kc_logf(KC_LOG_WARN, "drain timeout: %d requests still in flight", atomic_load(&app->in_flight));
	MHD_stop_daemon(app->daemon);
	app->daemon = NULL;
}
