/*
 * http.c - the libmicrohttpd daemon: start, SIGTERM drain, and the path of
 * every request.
 *
 * A request is first held against the gateway's limits, each answered in
 * JSON: URL length (414), header count and size (431), body size (413). Then
 * the router picks its row of the route table (route_table.c), and the row
 * decides the checks run before the route function: method (405, or a CORS
 * preflight), bearer token (401), student id (400) and the access rule (403).
 * Every answer is counted under the row's metrics label.
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
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "log.h"
#include "metrics.h"
#include "parse.h"
#include "routes.h"
#include "websocket.h"

/*
 * The gateway's limits on a request head, answered in JSON. A head that does
 * not fit a connection's memory never reaches the gateway: libmicrohttpd
 * answers it by itself (414 or 431, with an HTML body of its own). That memory
 * stays at 64 KiB, well above the limits: libmicrohttpd clears all of it
 * between two requests of a keep-alive connection. A WebSocket gives it back
 * right after its 101 (websocket.c takes the socket away from libmicrohttpd).
 */
#define MAX_URL			8192	/* bytes of path and query string */
#define MAX_HEADERS		100
#define MAX_HEADER_BYTES (32 * 1024)	/* names and values together */
#define CONNECTION_MEMORY ((size_t) 64 * 1024)

typedef struct req_state
{
	struct timespec start;
	size_t		uri_len;		/* path and query string as received */
	bool		head_checked;	/* the limits on the head were applied */
	size_t		body_bytes;
	bool		answered;
	bool		upgraded;		/* a WebSocket now: no longer in flight */
	void	   *held;			/* kc_request.held: freed with the request */
} req_state;

static double elapsed_s(const struct timespec *start);
static void *uri_received(void *cls, const char *uri, struct MHD_Connection *conn);
static enum MHD_Result add_header(void *cls, enum MHD_ValueKind kind, const char *key,
								  const char *value);
static const char *head_too_large(struct MHD_Connection *conn, req_state *st, int *status);
static bool method_listed(const char *methods, const char *method);
static bool authenticate(kc_request *req, kc_response *resp);
static bool scope_student(const kc_match *m, kc_request *req, kc_response *resp);
static void dispatch(const char *method, const kc_match *m, kc_request *req,
					 kc_response *resp, bool *preflight);
static enum MHD_Result answer(kc_app *app, struct MHD_Connection *conn, const kc_route *route,
							  kc_response *resp, req_state *st, bool preflight);
static enum MHD_Result access_handler(void *cls, struct MHD_Connection *conn, const char *url,
									  const char *method, const char *version,
									  const char *upload_data, size_t *upload_data_size,
									  void **con_cls);
static void completed(void *cls, struct MHD_Connection *conn, void **con_cls,
					  enum MHD_RequestTerminationCode toe);
static void mhd_log(void *cls, const char *fmt, va_list ap);

/* The row that answers what no route does: limits refused, unknown paths. */
#define UNKNOWN_ROUTE (&kc_routes[kc_route_count - 1])

static double
elapsed_s(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double) (now.tv_sec - start->tv_sec) + (now.tv_nsec - start->tv_nsec) / 1e9;
}

/* MHD's first call for a request, as soon as its request line is read: the state is made here. */
static void *
uri_received(void *cls, const char *uri, struct MHD_Connection *conn)
{
	kc_app	   *app = cls;
	req_state  *st = calloc(1, sizeof(*st));

	if (!st)
		return NULL;
	clock_gettime(CLOCK_MONOTONIC, &st->start);
	st->uri_len = strlen(uri);
	atomic_fetch_add(&app->in_flight, 1);
	return st;
}

typedef struct header_sum
{
	size_t		count;
	size_t		bytes;
} header_sum;

static enum MHD_Result
add_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	header_sum *sum = cls;

	sum->count++;
	sum->bytes += strlen(key) + (value ? strlen(value) : 0);
	return MHD_YES;
}

/* The 414 or 431 message when the head is beyond the limits, else NULL. */
static const char *
head_too_large(struct MHD_Connection *conn, req_state *st, int *status)
{
	header_sum	sum = {0, 0};

	if (st->uri_len > MAX_URL)
	{
		*status = 414;
		return "the URL is longer than 8192 bytes";
	}
	MHD_get_connection_values(conn, MHD_HEADER_KIND, add_header, &sum);
	*status = 431;
	if (sum.count > MAX_HEADERS)
		return "more than 100 request headers";
	if (sum.bytes > MAX_HEADER_BYTES)
		return "request headers larger than 32 KiB";
	return NULL;
}

/* True when method is one of the comma-separated methods (case-sensitive, as HTTP methods are). */
static bool
method_listed(const char *methods, const char *method)
{
	size_t		ml = strlen(method);
	const char *item;
	size_t		len;

	while (kc_list_next(&methods, &item, &len))
		if (len == ml && memcmp(item, method, len) == 0)
			return true;
	return false;
}

/* The bearer token, when the route asks for one and auth is on: false with a 401 in resp. */
static bool
authenticate(kc_request *req, kc_response *resp)
{
	const kc_config *cfg = req->app->cfg;
	const char *authz = kc_req_header(req, "Authorization");
	const char *token = kc_req_query(req, "access_token");
	const char *why = "";
	char		bearer[4200];
	kc_auth_result ar;

	if (req->route->auth == KC_AUTH_NONE || !cfg->auth)
		return true;
	if (!authz && req->route->auth == KC_AUTH_TOKEN_OR_QUERY && token &&
		strlen(token) < sizeof(bearer) - 8)
	{
		snprintf(bearer, sizeof(bearer), "Bearer %s", token);
		authz = bearer;
	}
	ar = kc_auth_verify(cfg->jwt_secret, authz, time(NULL), &req->principal, &why);
	if (ar == KC_AUTH_OK)
		return true;
	kc_resp_error(resp, 401, ar == KC_AUTH_EXPIRED ? "token_expired" : "unauthorized", why);
	return false;
}

/* The student the route is about, through the access rule: false with a 400 or 403 in resp. */
static bool
scope_student(const kc_match *m, kc_request *req, kc_response *resp)
{
	char		named[37] = "";

	switch (req->route->student)
	{
		case KC_STUDENT_NONE:
			return true;
		case KC_STUDENT_PATH:
			if (m->bad_id)
			{
				kc_resp_error(resp, 400, "bad_request", "student id must be a uuid");
				return false;
			}
			memcpy(named, m->student, sizeof(named));
			break;
		case KC_STUDENT_QUERY:
			if (!kc_parse_student(kc_req_query(req, "student"), named))
			{
				kc_resp_error(resp, 400, "bad_request", "student must be a uuid");
				return false;
			}
			break;
	}
	if (!kc_auth_scope(&req->principal, named, req->student))
	{
		kc_resp_error(resp, 403, "forbidden", "a student may read only their own data");
		return false;
	}
	return true;
}

/* Runs the checks of the request's row, then its route function; fills resp. */
static void
dispatch(const char *method, const kc_match *m, kc_request *req, kc_response *resp,
		 bool *preflight)
{
	const kc_route *route = req->route;

	if (route->methods && !method_listed(route->methods, method))
	{
		char		msg[128];

		snprintf(msg, sizeof(msg), "only %s allowed", route->methods);
		kc_resp_error(resp, 405, "method_not_allowed", msg);
		return;
	}
	if (route->methods && strcmp(method, "OPTIONS") == 0)
	{
		*preflight = true;
		kc_resp_static(resp, 204, NULL, NULL, 0);
		return;
	}
	if (!authenticate(req, resp) || !scope_student(m, req, resp))
		return;
	route->handler(req, resp);
}

/* Sends resp, counts it under route, and hands an upgraded connection over. */
static enum MHD_Result
answer(kc_app *app, struct MHD_Connection *conn, const kc_route *route,
	   kc_response *resp, req_state *st, bool preflight)
{
	bool		upgrade = resp->prepared && resp->status == 101;

	if (!kc_resp_send(app, conn, resp, route->methods, preflight))
		return MHD_NO;
	st->answered = true;
	kc_metrics_request(route, resp->status, elapsed_s(&st->start));
	if (upgrade)
	{
		/* the hub owns it from now on; the drain closes it with 1001 */
		st->upgraded = true;
		atomic_fetch_sub(&app->in_flight, 1);
	}
	return MHD_YES;
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
	kc_match	m;
	bool		preflight = false;

	if (st == NULL)
		return MHD_NO;			/* out of memory in uri_received */
	memset(&resp, 0, sizeof(resp));
	if (!st->head_checked)
	{
		const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
		const char *too_large;
		int			status;

		st->head_checked = true;
		if ((too_large = head_too_large(conn, st, &status)) != NULL)
		{
			kc_resp_error(&resp, status, status == 414 ? "uri_too_long" : "headers_too_large", too_large);
			return answer(app, conn, UNKNOWN_ROUTE, &resp, st, false);
		}
		if (cl && strtoull(cl, NULL, 10) > (unsigned long long) app->cfg->max_body)
		{
			kc_resp_error(&resp, 413, "payload_too_large", "request body too large");
			return answer(app, conn, UNKNOWN_ROUTE, &resp, st, false);
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
			kc_resp_error(&resp, 413, "payload_too_large", "request body too large");
			return answer(app, conn, UNKNOWN_ROUTE, &resp, st, false);
		}
		return MHD_YES;
	}

	kc_route_match(url, &m);
	if ((m.route->flags & KC_ROUTE_DEMO) && !app->cfg->demo)
		m.route = UNKNOWN_ROUTE;	/* demo routes exist only with --demo */
	memset(&req, 0, sizeof(req));
	req.app = app;
	req.conn = conn;
	req.route = m.route;
	req.param = m.param_too_long ? NULL : m.param;
	dispatch(method, &m, &req, &resp, &preflight);
	st->held = req.held;
	return answer(app, conn, req.route, &resp, st, preflight);
}

static void
completed(void *cls, struct MHD_Connection *conn, void **con_cls,
		  enum MHD_RequestTerminationCode toe)
{
	kc_app	   *app = cls;
	req_state  *st = *con_cls;

	if (!st)
		return;
	if (!st->upgraded)
		atomic_fetch_sub(&app->in_flight, 1);
	free(st->held);
	free(st);
	*con_cls = NULL;
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
	struct MHD_OptionItem where[2];
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
	/* a socket the supervisor bound (--processes), or the address to bind */
	where[0].option = app->listen_fd >= 0 ? MHD_OPTION_LISTEN_SOCKET : MHD_OPTION_SOCK_ADDR;
	where[0].value = app->listen_fd;
	where[0].ptr_value = app->listen_fd >= 0 ? NULL : addr;
	where[1].option = MHD_OPTION_END;
	app->daemon = MHD_start_daemon(flags, (uint16_t) cfg->listen_port, NULL, NULL,
								   access_handler, app,
								   MHD_OPTION_EXTERNAL_LOGGER, mhd_log, app,
								   MHD_OPTION_ARRAY, where,
								   MHD_OPTION_THREAD_POOL_SIZE, (unsigned int) cfg->threads,
								   /* HTTP only: a WebSocket leaves MHD after its 101 (websocket.c) */
								   MHD_OPTION_CONNECTION_LIMIT, (unsigned int) KC_HTTP_MAX_CONNECTIONS,
								   MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) 60,
								   MHD_OPTION_CONNECTION_MEMORY_LIMIT, CONNECTION_MEMORY,
								   MHD_OPTION_URI_LOG_CALLBACK, uri_received, app,
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
