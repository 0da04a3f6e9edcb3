/*
 * websocket.c - the WebSocket route (docs/design.md §8) on the HTTP side.
 *
 * The route's row (route_table.c) has the daemon check what every route
 * checks first: method (405), the token (401; from the Authorization header,
 * or ?access_token= since browsers cannot set headers on a WebSocket), the
 * student= id (400) and access (403). kc_route_ws then checks draining
 * (503), the RFC 6455 handshake (426 without "Upgrade: websocket" or with a
 * version other than 13, 400 for a bad key or Connection header), "after"
 * (400), that the student exists (404), capacity (503). Then 101.
 *
 * After the 101 (in the libmicrohttpd thread that served the request) the
 * socket leaves libmicrohttpd: the hub takes a duplicate of the descriptor
 * and MHD's upgrade handle is closed at once, which frees MHD's connection
 * and its 64 KiB memory pool. That relies on libmicrohttpd closing an
 * upgraded plain-TCP socket with close() alone: a shutdown() would end the
 * TCP connection under the duplicate too. kc_ws_start checks the version
 * (kc_ws_mhd_checked); the WebSocket suite checks the behaviour. A socket
 * then costs the hub's small state only.
 * It is registered with the hub first and the replay read second:
 * events_since(after, student, ws-queue + 1), the one more row telling a
 * replay of exactly ws-queue events from a longer one. Registering first is what makes the
 * stream gap-free: an event posted to the hub after the registration is kept
 * for the connection, and one posted before it had been read by the listener
 * from events_since already, so it lies below the horizon of the replay query,
 * which therefore returns it. The hub drops duplicates by id. An after below
 * the log's floor, or above its head (a cursor of a log since rewound), gets
 * a "refetch" message instead of a replay, then the live events past the
 * log's head. When the listener finds the log rewound under the sockets
 * already open (kc_ws_on_rewind), the hub sends each of them a "refetch".
 *
 * Who sees what: a student token sees that student's events only; an admin
 * token (or anyone when KC_AUTH=off) names a student with ?student=, or omits
 * it to receive every student's events (an operator's feed).
 */
#include "websocket.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <sys/socket.h>

#include "log.h"
#include "metrics.h"
#include "parse.h"
#include "routes.h"
#include "routes_admin.h"
#include "ws_hub.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define MAX_CLIENT_MESSAGE 4096

typedef struct ws_state
{
	kc_app	   *app;
	bool		all;
	char		student[37];
	long long	after;			/* -1: none */
} ws_state;

static long long
listener_position(void *arg)
{
	kc_app	   *app = arg;

	return app->listener ? kc_listener_watermark(app->listener) : 0;
}

/*
 * The libmicrohttpd releases whose source was read for the hand-off above:
 * with an internal polling thread and no TLS (as http.c starts the daemon),
 * MHD_UPGRADE_ACTION_CLOSE only marks the connection, and its cleanup closes
 * the socket without shutdown().
 */
#define VERSION_NUMBER(major, minor, patch) ((major) * 1000000L + (minor) * 1000L + (patch))
#define MHD_CHECKED_FIRST VERSION_NUMBER(0, 9, 75)	/* Debian 12's, which the tests run on */
#define MHD_CHECKED_LAST VERSION_NUMBER(1, 0, 1)

bool
kc_ws_mhd_checked(const char *version)
{
	unsigned	major,
				minor,
				patch;
	int			end = 0;
	long		n;

	if (!version || sscanf(version, "%3u.%3u.%3u%n", &major, &minor, &patch, &end) != 3 ||
		version[end] != '\0')
		return false;
	n = VERSION_NUMBER((long) major, (long) minor, (long) patch);
	return n >= MHD_CHECKED_FIRST && n <= MHD_CHECKED_LAST;
}

bool
kc_ws_start(kc_app *app)
{
	kc_ws_limits lim;
	const char *mhd = MHD_get_version();

	if (!kc_ws_mhd_checked(mhd))
		kc_logf(KC_LOG_WARN, "libmicrohttpd %s: its WebSocket hand-off was checked with 0.9.75 to 1.0.1 "
				"only; should it shut an upgraded socket down, every WebSocket closes right after "
				"its 101 and clients fall back to polling (bash test/run.sh ws tells)",
				mhd ? mhd : "(unknown version)");

	lim.max_connections = app->cfg->ws_max_connections;
	lim.queue = app->cfg->ws_queue;
	lim.ping_interval_s = app->cfg->ws_ping_interval;
	lim.pong_timeout_s = app->cfg->ws_pong_timeout;
	lim.max_frame = MAX_CLIENT_MESSAGE;
	app->ws = kc_ws_hub_start(&lim, listener_position, app);
	return app->ws != NULL;
}

void
kc_ws_shutdown(kc_app *app, int timeout_ms)
{
	if (app->ws)
	{
		int			n = kc_ws_hub_count(app->ws);

		if (n > 0)
			kc_logf(KC_LOG_INFO, "closing %d websockets (1001)", n);
		kc_ws_hub_stop(app->ws, timeout_ms);
	}
}

void
kc_ws_free(kc_app *app)
{
	kc_ws_hub_free(app->ws);
	app->ws = NULL;
}

char *
kc_ws_event_json(long long id, const char *type, const char *correlation_id,
				 long long version, const char *created_at, const char *payload,
				 size_t *len)
{
	char		t[128],
				corr[64],
				at[64];
	size_t		cap;
	char	   *out;
	int			n;

	if (!payload || !payload[0])
		payload = "{}";
	kc_json_escape(t, sizeof(t), type ? type : "");
	kc_json_escape(at, sizeof(at), created_at ? created_at : "");
	if (correlation_id)
	{
		corr[0] = '"';
		kc_json_escape(corr + 1, sizeof(corr) - 2, correlation_id);
		strcat(corr, "\"");
	}
	else
		strcpy(corr, "null");
	cap = strlen(payload) + sizeof(t) + sizeof(corr) + sizeof(at) + 128;
	out = malloc(cap);
	if (!out)
		return NULL;
	n = snprintf(out, cap,
				 "{\"type\":\"event\",\"id\":%lld,\"event_type\":\"%s\",\"correlation_id\":%s,"
				 "\"version\":%lld,\"created_at\":\"%s\",\"payload\":%s}",
				 id, t, corr, version, at, payload);
	*len = (size_t) n;
	return out;
}

/*
 * Also the operator console's hook: the time each event was handed over
 * (its invalidation is applied by then) and pushed to the hub, the push lag
 * and the session counters (routes_admin_trace.c).
 */
void
kc_ws_on_event(const kc_event_note *ev, void *arg)
{
	kc_app	   *app = arg;
	double		reached = kc_admin_now();
	double		pushed = 0;
	size_t		len;
	char	   *text = NULL;
	kc_ws_msg  *m = NULL;

	if (app->ws)
		text = kc_ws_event_json(ev->id, ev->type, ev->correlation_id, ev->version,
								ev->created_at, ev->payload, &len);
	if (text)
	{
		m = kc_ws_msg_new(text, len, ev->id, ev->student_id);
		free(text);
	}
	if (m)
	{
		kc_ws_hub_post_event(app->ws, m);
		pushed = kc_admin_now();
	}
	kc_admin_trace_event(app, ev, reached, pushed, kc_ws_hub_count(app->ws));
}

void
kc_ws_on_skip(long long floor_pos, long long head, void *arg)
{
	kc_app	   *app = arg;

	if (app->ws)
		kc_ws_hub_refetch(app->ws, floor_pos, head);
}

void
kc_ws_on_rewind(long long end, void *arg)
{
	kc_app	   *app = arg;

	if (app->ws && !kc_ws_hub_post_rewind(app->ws, end))
		kc_logf(KC_LOG_ERROR, "cannot tell the websockets that the event log was rewound (out of memory)");
}

/* The base64 of 16 bytes is 22 chars and "==". */
bool
kc_ws_key_valid(const char *key)
{
	if (!key || strlen(key) != 24 || strcmp(key + 22, "==") != 0)
		return false;
	for (int i = 0; i < 22; i++)
	{
		char		c = key[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			  (c >= '0' && c <= '9') || c == '+' || c == '/'))
			return false;
	}
	/* the last of the 22 carries 2 bits of data and 4 zero bits */
	return strchr("AQgw", key[21]) != NULL;
}

static bool
accept_value(const char *key, char out[32])
{
	char		buf[64];
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;

	snprintf(buf, sizeof(buf), "%s%s", key, WS_GUID);
	if (!EVP_Digest(buf, strlen(buf), md, &mdlen, EVP_sha1(), NULL) || mdlen != 20)
		return false;
	EVP_EncodeBlock((unsigned char *) out, md, 20);
	return true;
}

/*
 * The replay of a cursor below the log's floor (KC410): one "refetch" message
 * in place of the events, carrying the log's head as its id, so that the
 * stream goes on with the live events past the head (docs/websocket.md).
 * NULL when Postgres failed.
 */
static kc_ws_msg *
refetch_message(kc_app *app, const char *student, long long after)
{
	long long	floor_pos,
				head_pos;
	char		text[256];
	int			n;

	if (!kc_db_log_bounds(app->db, &floor_pos, &head_pos))
		return NULL;
	kc_metrics_add(KC_M_REFETCHES, 1);
	n = snprintf(text, sizeof(text), "{\"type\":\"refetch\",\"after\":%lld,\"log_floor\":%lld,"
				 "\"last_event_id\":%lld}", after, floor_pos, head_pos);
	return kc_ws_msg_new(text, (size_t) n, head_pos, student ? student : "");
}

/* One row of the replay (the JSON of the kc_events statement) as a message; NULL when out of memory. */
static kc_ws_msg *
replay_message(const cJSON *row)
{
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(row, "id");
	const cJSON *type = cJSON_GetObjectItemCaseSensitive(row, "event_type");
	const cJSON *corr = cJSON_GetObjectItemCaseSensitive(row, "correlation_id");
	const cJSON *ver = cJSON_GetObjectItemCaseSensitive(row, "version");
	const cJSON *at = cJSON_GetObjectItemCaseSensitive(row, "created_at");
	const cJSON *stu = cJSON_GetObjectItemCaseSensitive(row, "student_id");
	char	   *payload = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(row, "payload"));
	size_t		len;
	char	   *text = kc_ws_event_json((long long) cJSON_GetNumberValue(id),
										cJSON_GetStringValue(type), cJSON_GetStringValue(corr),
										(long long) cJSON_GetNumberValue(ver),
										cJSON_GetStringValue(at), payload, &len);
	kc_ws_msg  *m = text ? kc_ws_msg_new(text, len, (long long) cJSON_GetNumberValue(id),
										 cJSON_GetStringValue(stu)) : NULL;

	free(text);
	free(payload);
	return m;
}

static void
upgraded(void *cls, struct MHD_Connection *connection, void *con_cls,
		 const char *extra, size_t extra_len, MHD_socket sock,
		 struct MHD_UpgradeResponseHandle *urh)
{
	ws_state	w = *(ws_state *) cls;	/* cls lives until the connection ends; copy anyway */
	kc_app	   *app = w.app;
	kc_ws_conn *c;
	int			fd;
	int			one = 1;
	char		after[24],
				limit[16];
	const char *params[3] = {after, w.all ? NULL : w.student, limit};
	PGresult   *res = NULL;
	kc_db_status st;
	kc_ws_msg  *head = NULL,
			   *tail = NULL;
	int			rows = 0;
	bool		more = false;
	cJSON	   *arr;
	const cJSON *it;

	/* the socket becomes ours; MHD frees its connection (extra lives in it: copied first) */
	fd = fcntl(sock, F_DUPFD_CLOEXEC, 0);
	if (fd >= 0)				/* pushes are small and latency matters: no Nagle */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c = fd < 0 ? NULL : kc_ws_hub_register(app->ws, fd, w.all ? NULL : w.student, w.after,
										   extra, extra_len);
	MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
	if (!c)
	{
		if (fd >= 0)
			close(fd);
		return;
	}
	if (w.after < 0)
	{
		kc_ws_hub_ready(app->ws, c, NULL, KC_WS_REPLAY_DONE);
		return;
	}
	kc_metrics_add(KC_M_WS_RESUMES, 1);
	snprintf(after, sizeof(after), "%lld", w.after);
	snprintf(limit, sizeof(limit), "%d", app->cfg->ws_queue + 1);
	st = kc_db_exec(app->db, KC_STMT_EVENTS, 3, params, &res, NULL, 0);
	if (st == KC_DB_GONE)
	{
		head = refetch_message(app, w.all ? NULL : w.student, w.after);
		kc_ws_hub_ready(app->ws, c, head, head ? KC_WS_REPLAY_DONE : KC_WS_REPLAY_FAILED);
		return;
	}
	if (st != KC_DB_OK)
	{
		kc_ws_hub_ready(app->ws, c, NULL, KC_WS_REPLAY_FAILED);
		return;
	}
	arr = cJSON_Parse(PQgetvalue(res, 0, 0));
	PQclear(res);
	cJSON_ArrayForEach(it, arr)
	{
		kc_ws_msg  *m;

		if (rows == app->cfg->ws_queue)
		{
			more = true;		/* longer than the bound: 1008 after ws-queue events */
			break;
		}
		m = replay_message(it);
		if (!m)
			break;
		if (tail)
			tail->next = m;
		else
			head = m;
		tail = m;
		rows++;
	}
	cJSON_Delete(arr);
	kc_ws_hub_ready(app->ws, c, head, more ? KC_WS_REPLAY_TRUNCATED : KC_WS_REPLAY_DONE);
}

/* The 426 of a failed handshake, which must say which version we speak. */
static void
version_required(kc_response *resp)
{
	static const char body[] = "{\"error\":{\"code\":\"upgrade_required\","
		"\"message\":\"this route speaks WebSocket (RFC 6455, version 13) only\"}}";
	struct MHD_Response *r = MHD_create_response_from_buffer(sizeof(body) - 1, (void *) body,
															 MHD_RESPMEM_PERSISTENT);

	if (!r)
	{
		kc_resp_error(resp, 500, "internal", "out of memory");
		return;
	}
	MHD_add_response_header(r, "Content-Type", "application/json");
	MHD_add_response_header(r, "Sec-WebSocket-Version", "13");
	MHD_add_response_header(r, "Upgrade", "websocket");
	resp->prepared = r;
	resp->status = 426;
}

/* The named student must exist: 404 as on every other route (and 503 while Postgres is away). */
static bool
student_exists(kc_request *req, kc_response *resp)
{
	const char *params[6] = {req->student, NULL, NULL, NULL, NULL, "1"};
	PGresult   *res = NULL;
	char		msg[512] = "";
	kc_db_status st = kc_db_exec(req->app->db, KC_STMT_SESSIONS, 6, params, &res, msg, sizeof(msg));

	PQclear(res);
	if (st == KC_DB_OK)
		return true;
	kc_resp_db_error(req, resp, st, "invalid student", msg);
	return false;
}

void
kc_route_ws(kc_request *req, kc_response *resp)
{
	kc_app	   *app = req->app;
	const char *key = kc_req_header(req, "Sec-WebSocket-Key");
	const char *version = kc_req_header(req, "Sec-WebSocket-Version");
	const char *after_s = kc_req_query(req, "after");
	char		accept[32];
	ws_state   *w;
	struct MHD_Response *r;
	long long	after = -1;

	if (atomic_load(&app->draining) || !app->ws)
	{
		kc_resp_error(resp, 503, "unavailable", "the gateway is shutting down");
		resp->retry_after = app->cfg->retry_after;
		return;
	}
	if (!kc_list_has_token(kc_req_header(req, "Upgrade"), "websocket"))
	{
		version_required(resp);
		return;
	}
	if (!kc_list_has_token(kc_req_header(req, "Connection"), "upgrade"))
	{
		kc_resp_error(resp, 400, "bad_request", "a WebSocket handshake needs Connection: Upgrade");
		return;
	}
	if (!version || strcmp(version, "13") != 0)
	{
		version_required(resp);
		return;
	}
	if (!kc_ws_key_valid(key))
	{
		kc_resp_error(resp, 400, "bad_request", "Sec-WebSocket-Key must be the base64 of 16 bytes");
		return;
	}
	if (after_s && !kc_parse_event_id(after_s, &after))
	{
		kc_resp_error(resp, 400, "bad_request", "after must be a non-negative integer");
		return;
	}
	if (req->student[0] && !student_exists(req, resp))
		return;
	if (kc_ws_hub_full(app->ws))
	{
		kc_resp_error(resp, 503, "unavailable", "too many WebSocket connections");
		resp->retry_after = app->cfg->retry_after;
		return;
	}
	w = calloc(1, sizeof(*w));
	if (!w || !accept_value(key, accept) || !(r = MHD_create_response_for_upgrade(upgraded, w)))
	{
		free(w);
		kc_resp_error(resp, 500, "internal", "cannot build the upgrade");
		return;
	}
	w->app = app;
	w->after = after;
	w->all = req->student[0] == '\0';
	memcpy(w->student, req->student, sizeof(w->student));
	MHD_add_response_header(r, "Upgrade", "websocket");	/* MHD adds Connection: Upgrade */
	MHD_add_response_header(r, "Sec-WebSocket-Accept", accept);
	req->held = w;
	resp->prepared = r;
	resp->status = 101;
}
