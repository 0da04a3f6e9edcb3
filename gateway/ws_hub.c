/*
 * ws_hub.c - the front of the WebSocket hub (see ws_hub.h and ws_hub_int.h):
 * what other threads call, the start and the stop of the hub thread, and
 * the messages of its inbox.
 *
 * An event rings the hub's doorbell only when a connection may want it: its
 * student's slot in the interest counts, or the firehose, counts one. Every
 * other event (with --processes N, five in six: every process gets every
 * event) is posted quietly and handled, in order, at the hub's next turn,
 * whatever wakes it (a socket, a ringing post, the tick at the latest): it
 * only moves the hub's position then. A connection being linked while such
 * an event is on its way loses nothing: the event waits in the inbox, in
 * order, and at worst reaches it one tick later.
 *
 * The hub thread is an event loop (evloop.c); other threads reach it only by
 * posting to its inbox: an event, a new connection, the end of a replay, a
 * rewound log, or the stop. Each is handed to ws_stream.c in posting order. The stop closes
 * every connection with 1001 and ends the loop once they are gone or the
 * timeout has passed.
 */
#include "ws_hub_int.h"

#include <stdlib.h>
#include <unistd.h>

#include "metrics.h"

#define TICK_MS 100			/* small, so that the pings due in one turn are few */

typedef enum item_kind
{
	ITEM_EVENT,
	ITEM_REGISTER,
	ITEM_READY,
	ITEM_REFETCH,				/* floor_pos, head: the listener skipped a trim */
	ITEM_REWIND,				/* head: the log's new end, below ids posted */
	ITEM_STOP
} item_kind;

/* One message of the inbox. */
typedef struct inbox_item
{
	kc_evmsg	link;			/* first: the loop's view of it */
	item_kind	kind;
	kc_ws_conn *conn;
	kc_ws_msg  *msgs;
	kc_ws_replay how;
	long long	floor_pos,		/* ITEM_REFETCH: the log's floor and head; ITEM_REWIND: head */
				head;
} inbox_item;

static bool post(kc_ws_hub *h, item_kind kind, kc_ws_conn *c, kc_ws_msg *msgs, kc_ws_replay how);
static bool post_how(kc_ws_hub *h, item_kind kind, kc_ws_conn *c, kc_ws_msg *msgs, kc_ws_replay how,
					 bool ring);
static void start_stop(kc_ws_hub *h);
static void on_fd(void *arg, void *data, int ready);
static void on_msg(void *arg, kc_evmsg *m);
static void on_tick(void *arg);
static void after_turn(void *arg);
static void on_hub_exit(void *arg);
static void on_drop(void *arg, kc_evmsg *m);

static const kc_evloop_handlers handlers = {
	on_fd, on_msg, on_tick, after_turn, on_hub_exit, on_drop
};

/* ---- the hub thread ----------------------------------------------------- */

static void
on_fd(void *arg, void *data, int ready)
{
	kc_ws_stream_io(arg, data, ready);
}

static void
on_msg(void *arg, kc_evmsg *m)
{
	kc_ws_hub  *h = arg;
	inbox_item *it = (inbox_item *) m;

	switch (it->kind)
	{
		case ITEM_EVENT:
			kc_ws_stream_event(h, it->msgs);
			kc_ws_msg_unref(it->msgs);
			break;
		case ITEM_REGISTER:
			kc_ws_stream_add(h, it->conn);
			break;
		case ITEM_READY:
			kc_ws_stream_ready(h, it->conn, it->msgs, it->how);
			break;
		case ITEM_REFETCH:
			kc_ws_stream_refetch(h, it->floor_pos, it->head);
			break;
		case ITEM_REWIND:
			kc_ws_stream_rewind(h, it->head);
			break;
		case ITEM_STOP:
			start_stop(h);
			break;
	}
	free(it);
}

static void
on_tick(void *arg)
{
	kc_ws_stream_tick(arg);
}

static void
after_turn(void *arg)
{
	kc_ws_hub  *h = arg;

	kc_ws_stream_flush(h);
	if (h->stop_req && (kc_ws_stream_empty(h) || kc_evloop_now(h->loop) > h->stop_deadline))
		kc_evloop_quit(h->loop);
}

static void
start_stop(kc_ws_hub *h)
{
	kc_ws_conn *c;

	h->stop_req = true;
	h->stop_deadline = kc_evloop_now(h->loop) + h->stop_timeout_ms / 1000.0;
	/* each close moves its connection to the closing list */
	while ((c = h->quiet.head) || (c = h->pinged.head))
		kc_ws_stream_close(h, c, 1001, "server shutting down", h->stop_timeout_ms / 1000.0);
}

static void
on_hub_exit(void *arg)
{
	kc_ws_hub  *h = arg;

	kc_ws_conn *c;

	while ((c = h->quiet.head) || (c = h->pinged.head) || (c = h->closing.head))
		kc_ws_stream_kill(h, c);
	kc_ws_stream_flush(h);
}

/*
 * What was posted but never handled is undone (sockets released, memory
 * freed). A connection still held by an HTTP thread is freed by its
 * kc_ws_hub_ready.
 */
static void
on_drop(void *arg, kc_evmsg *m)
{
	kc_ws_hub  *h = arg;
	inbox_item *it = (inbox_item *) m;

	if (it->kind == ITEM_REGISTER)
	{
		it->conn->dead = true;
		close(it->conn->fd);
		atomic_fetch_sub(&h->count, 1);
		kc_metrics_add(KC_M_WS_CONNECTIONS, -1);
	}
	else if (it->kind == ITEM_READY)
		kc_ws_conn_free(it->conn);	/* dead: killed by on_hub_exit or just now */
	kc_ws_msg_free_list(it->msgs);
	free(it);
}

/* ---- other threads ------------------------------------------------------ */

/* Appends an item; false (nothing queued) when the hub thread is gone. */
static bool
post(kc_ws_hub *h, item_kind kind, kc_ws_conn *c, kc_ws_msg *msgs, kc_ws_replay how)
{
	return post_how(h, kind, c, msgs, how, true);
}

/* The same, ringing the doorbell only when ring. */
static bool
post_how(kc_ws_hub *h, item_kind kind, kc_ws_conn *c, kc_ws_msg *msgs, kc_ws_replay how, bool ring)
{
	inbox_item *it = malloc(sizeof(*it));

	if (!it)
		return false;
	it->kind = kind;
	it->conn = c;
	it->msgs = msgs;
	it->how = how;
	if (ring ? kc_evloop_post(h->loop, &it->link) : kc_evloop_post_quiet(h->loop, &it->link))
		return true;
	free(it);
	return false;
}

kc_ws_hub *
kc_ws_hub_start(const kc_ws_limits *limits, kc_ws_position_fn position, void *position_arg)
{
	kc_ws_hub  *h = calloc(1, sizeof(*h));

	if (!h)
		return NULL;
	h->lim = *limits;
	h->position = position;
	h->position_arg = position_arg;
	h->interest = calloc(KC_WS_INTEREST_SLOTS, sizeof(*h->interest));
	h->loop = h->interest ? kc_evloop_create(&handlers, h, TICK_MS) : NULL;
	if (!h->loop || !kc_evloop_start(h->loop, "kc-ws-hub"))
	{
		kc_evloop_free(h->loop);
		free(h->interest);
		free(h);
		return NULL;
	}
	h->started = true;
	return h;
}

void
kc_ws_hub_stop(kc_ws_hub *h, int timeout_ms)
{
	if (!h || !h->started || atomic_exchange(&h->stopping, true))
		return;
	h->stop_timeout_ms = timeout_ms;
	if (!post(h, ITEM_STOP, NULL, NULL, 0))
		return;
	kc_evloop_join(h->loop);
	h->started = false;
}

void
kc_ws_hub_free(kc_ws_hub *h)
{
	if (!h)
		return;
	kc_ws_hub_stop(h, 0);
	kc_evloop_free(h->loop);
	free(h->interest);
	free(h);
}

void
kc_ws_hub_post_event(kc_ws_hub *h, kc_ws_msg *m)
{
	bool		wanted;

	if (!h)
	{
		free(m);
		return;
	}
	wanted = kc_ws_interest_wanted(h, m->student);
	if (!post_how(h, ITEM_EVENT, NULL, m, 0, wanted))
		free(m);
}

void
kc_ws_hub_refetch(kc_ws_hub *h, long long floor_pos, long long head)
{
	inbox_item *it = h ? calloc(1, sizeof(*it)) : NULL;

	if (!it)
		return;
	it->kind = ITEM_REFETCH;
	it->floor_pos = floor_pos;
	it->head = head;
	if (!kc_evloop_post(h->loop, &it->link))
		free(it);
}

bool
kc_ws_hub_post_rewind(kc_ws_hub *h, long long end)
{
	inbox_item *it = h ? calloc(1, sizeof(*it)) : NULL;

	if (!it)
		return false;
	it->kind = ITEM_REWIND;
	it->head = end;
	if (kc_evloop_post(h->loop, &it->link))
		return true;
	free(it);
	return false;
}

kc_ws_conn *
kc_ws_hub_register(kc_ws_hub *h, int fd, const char *student, long long after,
				   const char *extra, size_t extra_len)
{
	kc_ws_conn *c;

	if (atomic_load(&h->stopping))
		return NULL;
	if (atomic_fetch_add(&h->count, 1) >= h->lim.max_connections)
	{
		atomic_fetch_sub(&h->count, 1);
		return NULL;
	}
	c = kc_ws_conn_new(h, fd, student, after, extra, extra_len);
	if (!c)
	{
		atomic_fetch_sub(&h->count, 1);
		return NULL;
	}
	kc_metrics_add(KC_M_WS_CONNECTIONS, 1);
	if (!post(h, ITEM_REGISTER, c, NULL, 0))
	{
		atomic_fetch_sub(&h->count, 1);
		kc_metrics_add(KC_M_WS_CONNECTIONS, -1);
		kc_ws_conn_free(c);
		return NULL;
	}
	return c;
}

void
kc_ws_hub_ready(kc_ws_hub *h, kc_ws_conn *c, kc_ws_msg *msgs, kc_ws_replay how)
{
	if (!post(h, ITEM_READY, c, msgs, how))
	{
		/* the hub thread has exited: it killed c already */
		kc_ws_msg_free_list(msgs);
		kc_ws_conn_free(c);
	}
}

int
kc_ws_hub_count(kc_ws_hub *h)
{
	return h ? atomic_load(&h->count) : 0;
}

bool
kc_ws_hub_full(kc_ws_hub *h)
{
	return atomic_load(&h->count) >= h->lim.max_connections;
}
