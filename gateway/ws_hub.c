/*
 * ws_hub.c - the event loop of every WebSocket connection (see ws_hub.h).
 *
 * One thread, one epoll set, level-triggered. Each connection has a wslay
 * server context that frames, masks/unmasks, validates (UTF-8 of text, masked
 * client frames, sizes) and runs the close handshake; this file only moves
 * bytes, decides what to send and when to give up on a peer.
 *
 * Per connection the stream is: hello, the replay (events read by the HTTP
 * thread with events_since), then live events. While the replay is being read
 * the connection is REPLAYING and live events of its student are kept aside
 * (bounded); when the replay arrives they follow it, deduplicated by id. A
 * connection never receives an id <= the last it was sent, so the stream has
 * no duplicate, and since the hub receives events in gap-free order it has no
 * gap either.
 */
#include "ws_hub.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <wslay/wslay.h>

#include "log.h"
#include "metrics.h"

#define BUCKETS 16384			/* power of two */
#define EPOLL_BATCH 256
#define TICK_MS 500
#define CLOSE_GRACE_S 5.0		/* a peer gets this long to answer our close */

typedef enum item_kind
{
	ITEM_EVENT,
	ITEM_REGISTER,
	ITEM_READY,
	ITEM_STOP
} item_kind;

typedef struct inbox_item
{
	struct inbox_item *next;
	item_kind	kind;
	kc_ws_conn *conn;
	kc_ws_msg  *msgs;
	kc_ws_replay how;
} inbox_item;

typedef enum conn_state
{
	CONN_REPLAYING,
	CONN_LIVE,
	CONN_CLOSING
} conn_state;

struct kc_ws_conn
{
	kc_ws_hub  *hub;
	int			fd;
	void	   *handle;			/* released to MHD on close */
	char		student[37];
	bool		all;			/* every student's events */
	long long	after;			/* -1: none given */
	long long	last_sent;		/* id of the last event queued */
	conn_state	state;
	wslay_event_context_ptr ctx;
	uint32_t	events;			/* epoll interest registered */
	bool		dead;			/* socket released */
	bool		awaiting_ready; /* an HTTP thread still holds a pointer */
	bool		dirty;			/* has output to try */
	bool		ping_out;
	double		last_rx;
	double		ping_at;
	double		deadline;		/* CLOSING: give up then */
	kc_ws_msg **pending;		/* live events kept during the replay */
	int			npending;
	int			cap_pending;
	bool		overflow;
	char	   *extra;			/* bytes MHD read past the request */
	size_t		extra_len;
	size_t		extra_off;
	kc_ws_conn *bnext,
			   *bprev;			/* bucket (or firehose) chain */
	kc_ws_conn *anext,
			   *aprev;			/* every live connection */
	kc_ws_conn *dnext;			/* dirty list */
	kc_ws_conn *gnext;			/* grave list: freed at the end of the loop turn */
};

struct kc_ws_hub
{
	kc_ws_limits lim;
	kc_ws_release_fn release;
	kc_ws_position_fn position;
	void	   *position_arg;
	pthread_t	thread;
	bool		started;
	int			ep;
	int			efd;
	pthread_mutex_t lock;
	inbox_item *head,
			   *tail;
	bool		exited;			/* under lock: the thread is gone */
	_Atomic int count;
	_Atomic bool stopping;
	/* hub thread only */
	bool		stop_req;
	double		stop_deadline;
	int			stop_timeout_ms;
	double		now;
	long long	pos;			/* highest event id received */
	kc_ws_conn *buckets[BUCKETS];
	kc_ws_conn *firehose;
	kc_ws_conn *all;
	kc_ws_conn *dirty;
	kc_ws_conn *grave;
};

static double
mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double) ts.tv_sec + ts.tv_nsec / 1e9;
}

static unsigned
hash_student(const char *s)
{
	uint32_t	h = 2166136261u;

	for (; *s; s++)
		h = (h ^ (unsigned char) *s) * 16777619u;
	return h & (BUCKETS - 1);
}

static kc_ws_conn **
chain_of(kc_ws_hub *h, kc_ws_conn *c)
{
	return c->all ? &h->firehose : &h->buckets[hash_student(c->student)];
}

kc_ws_msg *
kc_ws_msg_new(const char *text, size_t len, long long id, const char *student)
{
	kc_ws_msg  *m = malloc(sizeof(*m) + len + 1);

	if (!m)
		return NULL;
	m->next = NULL;
	m->refs = 1;
	m->id = id;
	snprintf(m->student, sizeof(m->student), "%s", student ? student : "");
	m->len = len;
	memcpy(m->text, text, len);
	m->text[len] = '\0';
	return m;
}

static void
msg_unref(kc_ws_msg *m)
{
	if (m && --m->refs == 0)
		free(m);
}

void
kc_ws_msg_free_list(kc_ws_msg *m)
{
	while (m)
	{
		kc_ws_msg  *next = m->next;

		msg_unref(m);
		m = next;
	}
}

/* ---- wslay callbacks ---------------------------------------------------- */

static ssize_t
recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
	kc_ws_conn *c = user;
	ssize_t		n;

	if (c->extra_off < c->extra_len)
	{
		size_t		take = c->extra_len - c->extra_off;

		if (take > len)
			take = len;
		memcpy(buf, c->extra + c->extra_off, take);
		c->extra_off += take;
		return (ssize_t) take;
	}
	n = recv(c->fd, buf, len, 0);
	if (n > 0)
		return n;
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
	else
		wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
	return -1;
}

static ssize_t
send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *user)
{
	kc_ws_conn *c = user;
	ssize_t		n = send(c->fd, data, len,
						 MSG_NOSIGNAL | MSG_DONTWAIT | ((flags & WSLAY_MSG_MORE) ? MSG_MORE : 0));

	if (n >= 0)
		return n;
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
	else
		wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
	return -1;
}

/* Any complete message (data or control) proves the peer is alive. */
static void
msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg, void *user)
{
	kc_ws_conn *c = user;

	c->last_rx = c->hub->now;
	c->ping_out = false;
}

static const struct wslay_event_callbacks callbacks = {
	recv_cb, send_cb, NULL, NULL, NULL, NULL, msg_cb
};

/* ---- connection life ---------------------------------------------------- */

static void
mark_dirty(kc_ws_hub *h, kc_ws_conn *c)
{
	if (!c->dirty && !c->dead)
	{
		c->dirty = true;
		c->dnext = h->dirty;
		h->dirty = c;
	}
}

static void
drop_pending(kc_ws_conn *c)
{
	for (int i = 0; i < c->npending; i++)
		msg_unref(c->pending[i]);
	c->npending = 0;
	free(c->pending);
	c->pending = NULL;
	c->cap_pending = 0;
}

static void
bury_later(kc_ws_hub *h, kc_ws_conn *c)
{
	c->gnext = h->grave;
	h->grave = c;
}

/* Releases the socket and unlinks c; the memory goes when nobody holds it. */
static void
kill_conn(kc_ws_hub *h, kc_ws_conn *c)
{
	kc_ws_conn **head;

	if (c->dead)
		return;
	c->dead = true;
	if (c->events)
		epoll_ctl(h->ep, EPOLL_CTL_DEL, c->fd, NULL);
	if (c->ctx)
		wslay_event_context_free(c->ctx);
	c->ctx = NULL;
	h->release(c->handle);
	head = chain_of(h, c);
	if (c->bprev)
		c->bprev->bnext = c->bnext;
	else if (*head == c)
		*head = c->bnext;
	if (c->bnext)
		c->bnext->bprev = c->bprev;
	if (c->aprev)
		c->aprev->anext = c->anext;
	else if (h->all == c)
		h->all = c->anext;
	if (c->anext)
		c->anext->aprev = c->aprev;
	drop_pending(c);
	atomic_fetch_sub(&h->count, 1);
	kc_metrics_add(KC_M_WS_CONNECTIONS, -1);
	if (!c->awaiting_ready)
		bury_later(h, c);
}

static void
free_conn(kc_ws_conn *c)
{
	free(c->pending);
	free(c->extra);
	free(c);
}

/* Queues a close frame and gives the peer CLOSE_GRACE_S to answer it. */
static void
close_with(kc_ws_hub *h, kc_ws_conn *c, uint16_t code, const char *reason, double grace)
{
	if (c->dead || c->state == CONN_CLOSING)
		return;
	c->state = CONN_CLOSING;
	c->deadline = h->now + grace;
	drop_pending(c);
	wslay_event_queue_close(c->ctx, code, (const uint8_t *) reason, strlen(reason));
	mark_dirty(h, c);
}

static void
close_slow(kc_ws_hub *h, kc_ws_conn *c, const char *why)
{
	char		reason[120];

	snprintf(reason, sizeof(reason), "%s: reconnect with after=%lld", why, c->last_sent);
	kc_metrics_add(KC_M_WS_SLOW_CLOSED, 1);
	kc_logf(KC_LOG_INFO, "websocket of %s closed (1008): %s", c->all ? "admin" : c->student, reason);
	close_with(h, c, 1008, reason, CLOSE_GRACE_S);
}

static bool
queue_text(kc_ws_conn *c, const char *text, size_t len)
{
	struct wslay_event_msg m = {WSLAY_TEXT_FRAME, (const uint8_t *) text, len};

	if (wslay_event_queue_msg(c->ctx, &m) != 0)
		return false;
	kc_metrics_add(KC_M_WS_MESSAGES, 1);
	return true;
}

/* Sends event m to a LIVE connection unless already sent; 1008 when full. */
static void
send_event(kc_ws_hub *h, kc_ws_conn *c, kc_ws_msg *m, bool bounded)
{
	if (m->id <= c->last_sent || c->state != CONN_LIVE)
		return;
	if (bounded && wslay_event_get_queued_msg_count(c->ctx) >= (size_t) h->lim.queue)
	{
		close_slow(h, c, "too slow");
		return;
	}
	if (!queue_text(c, m->text, m->len))
	{
		close_slow(h, c, "out of memory");
		return;
	}
	c->last_sent = m->id;
	mark_dirty(h, c);
}

static void
deliver(kc_ws_hub *h, kc_ws_conn *c, kc_ws_msg *m)
{
	if (c->dead || m->id <= c->last_sent)
		return;
	if (c->state == CONN_LIVE)
		send_event(h, c, m, true);
	else if (c->state == CONN_REPLAYING)
	{
		if (c->npending == c->cap_pending && c->cap_pending < h->lim.queue)
		{
			int			cap = c->cap_pending ? c->cap_pending * 2 : 8;
			kc_ws_msg **p;

			if (cap > h->lim.queue)
				cap = h->lim.queue;
			p = realloc(c->pending, (size_t) cap * sizeof(*p));
			if (p)
			{
				c->pending = p;
				c->cap_pending = cap;
			}
		}
		if (c->npending < c->cap_pending)
		{
			c->pending[c->npending++] = m;
			m->refs++;
		}
		else
			c->overflow = true;
	}
}

static void
on_event(kc_ws_hub *h, kc_ws_msg *m)
{
	if (m->id <= h->pos)
		return;					/* replayed by the listener after a resync */
	h->pos = m->id;
	for (kc_ws_conn *c = h->buckets[hash_student(m->student)]; c; c = c->bnext)
		if (strcmp(c->student, m->student) == 0)
			deliver(h, c, m);
	for (kc_ws_conn *c = h->firehose; c; c = c->bnext)
		deliver(h, c, m);
}

static void
on_register(kc_ws_hub *h, kc_ws_conn *c)
{
	kc_ws_conn **head = chain_of(h, c);
	struct epoll_event ev;

	c->last_rx = h->now;
	if (wslay_event_context_server_init(&c->ctx, &callbacks, c) != 0)
	{
		c->ctx = NULL;
		kill_conn(h, c);
		return;
	}
	wslay_event_config_set_max_recv_msg_length(c->ctx, (uint64_t) h->lim.max_frame);
	c->bnext = *head;
	if (*head)
		(*head)->bprev = c;
	*head = c;
	c->anext = h->all;
	if (h->all)
		h->all->aprev = c;
	h->all = c;
	if (c->after < 0)
	{
		long long	p = h->position ? h->position(h->position_arg) : 0;

		c->after = p > h->pos ? p : h->pos;
	}
	c->last_sent = c->after;
	ev.events = EPOLLIN;
	ev.data.ptr = c;
	if (epoll_ctl(h->ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
	{
		kc_logf(KC_LOG_WARN, "websocket: epoll_ctl: %s", strerror(errno));
		kill_conn(h, c);
		return;
	}
	c->events = EPOLLIN;
	if (h->stop_req)
		close_with(h, c, 1001, "server shutting down", 0.5);
	else if (c->extra_len > 0)
		mark_dirty(h, c);		/* the flush reads the bytes MHD already had */
}

static void
on_ready(kc_ws_hub *h, kc_ws_conn *c, kc_ws_msg *msgs, kc_ws_replay how)
{
	char		hello[160];
	int			n;

	c->awaiting_ready = false;
	if (c->dead)
	{
		kc_ws_msg_free_list(msgs);
		bury_later(h, c);
		return;
	}
	if (c->state != CONN_REPLAYING)
	{
		kc_ws_msg_free_list(msgs);
		return;
	}
	if (c->all)
		n = snprintf(hello, sizeof(hello), "{\"type\":\"hello\",\"student_id\":null,\"last_event_id\":%lld}",
					 c->after);
	else
		n = snprintf(hello, sizeof(hello), "{\"type\":\"hello\",\"student_id\":\"%s\",\"last_event_id\":%lld}",
					 c->student, c->after);
	queue_text(c, hello, (size_t) n);
	mark_dirty(h, c);
	if (how == KC_WS_REPLAY_FAILED)
	{
		kc_ws_msg_free_list(msgs);
		close_with(h, c, 1013, "event log unavailable, retry later", CLOSE_GRACE_S);
		return;
	}
	c->state = CONN_LIVE;
	for (kc_ws_msg *m = msgs; m; m = m->next)
		send_event(h, c, m, false);		/* bounded by construction */
	kc_ws_msg_free_list(msgs);
	if (how == KC_WS_REPLAY_TRUNCATED)
	{
		close_slow(h, c, "too far behind");
		return;
	}
	for (int i = 0; i < c->npending && c->state == CONN_LIVE; i++)
		send_event(h, c, c->pending[i], true);
	drop_pending(c);
	if (c->overflow && c->state == CONN_LIVE)
		close_slow(h, c, "too slow");
}

/* Reads what is there, writes what can go, then fixes the epoll interest. */
static void
pump(kc_ws_hub *h, kc_ws_conn *c, bool readable, bool writable)
{
	uint32_t	want;

	if (c->dead)
		return;
	if ((readable || c->extra_off < c->extra_len) && wslay_event_recv(c->ctx) != 0)
	{
		kill_conn(h, c);
		return;
	}
	if (wslay_event_want_write(c->ctx) && wslay_event_send(c->ctx) != 0)
	{
		kill_conn(h, c);
		return;
	}
	(void) writable;
	want = (wslay_event_want_read(c->ctx) ? EPOLLIN : 0) |
		(wslay_event_want_write(c->ctx) ? EPOLLOUT : 0);
	if (want == 0)
	{
		kill_conn(h, c);		/* close handshake done (or both sides shut) */
		return;
	}
	if (want != c->events)
	{
		struct epoll_event ev;

		ev.events = want;
		ev.data.ptr = c;
		if (epoll_ctl(h->ep, EPOLL_CTL_MOD, c->fd, &ev) != 0)
		{
			kill_conn(h, c);
			return;
		}
		c->events = want;
	}
}

/* Pings idle peers, drops the ones that stopped answering, ends late closes. */
static void
tick(kc_ws_hub *h)
{
	kc_ws_conn *next;

	for (kc_ws_conn *c = h->all; c; c = next)
	{
		next = c->anext;
		if (c->state == CONN_CLOSING)
		{
			if (h->now > c->deadline)
				kill_conn(h, c);
		}
		else if (c->ping_out)
		{
			if (h->now - c->ping_at > h->lim.pong_timeout_s)
			{
				kc_metrics_add(KC_M_WS_DEAD_CLOSED, 1);
				kc_logf(KC_LOG_INFO, "websocket of %s dropped: no answer to ping in %d s",
						c->all ? "admin" : c->student, h->lim.pong_timeout_s);
				kill_conn(h, c);
			}
		}
		else if (h->now - c->last_rx >= h->lim.ping_interval_s)
		{
			struct wslay_event_msg ping = {WSLAY_PING, (const uint8_t *) "kc", 2};

			wslay_event_queue_msg(c->ctx, &ping);
			c->ping_out = true;
			c->ping_at = h->now;
			mark_dirty(h, c);
		}
	}
}

static void
start_stop(kc_ws_hub *h)
{
	kc_ws_conn *next;

	h->stop_req = true;
	h->stop_deadline = h->now + h->stop_timeout_ms / 1000.0;
	for (kc_ws_conn *c = h->all; c; c = next)
	{
		next = c->anext;
		close_with(h, c, 1001, "server shutting down", h->stop_timeout_ms / 1000.0);
	}
}

/* Takes the whole inbox at once; false when the eventfd read failed. */
static void
drain_inbox(kc_ws_hub *h)
{
	inbox_item *it;
	uint64_t	v;

	if (read(h->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		kc_logf(KC_LOG_WARN, "websocket: eventfd read: %s", strerror(errno));
	pthread_mutex_lock(&h->lock);
	it = h->head;
	h->head = h->tail = NULL;
	pthread_mutex_unlock(&h->lock);
	while (it)
	{
		inbox_item *next = it->next;

		switch (it->kind)
		{
			case ITEM_EVENT:
				on_event(h, it->msgs);
				msg_unref(it->msgs);
				break;
			case ITEM_REGISTER:
				on_register(h, it->conn);
				break;
			case ITEM_READY:
				on_ready(h, it->conn, it->msgs, it->how);
				break;
			case ITEM_STOP:
				start_stop(h);
				break;
		}
		free(it);
		it = next;
	}
}

static void
flush_dirty(kc_ws_hub *h)
{
	while (h->dirty)
	{
		kc_ws_conn *c = h->dirty;

		h->dirty = c->dnext;
		c->dirty = false;
		pump(h, c, false, false);
	}
}

static void
bury(kc_ws_hub *h)
{
	while (h->grave)
	{
		kc_ws_conn *c = h->grave;

		h->grave = c->gnext;
		free_conn(c);
	}
}

/*
 * The thread is leaving: nothing can be posted any more, and what was posted
 * but not processed is undone (sockets released, memory freed). A connection
 * still held by an HTTP thread is freed by its kc_ws_hub_ready.
 */
static void
close_leftovers(kc_ws_hub *h)
{
	inbox_item *it;

	pthread_mutex_lock(&h->lock);
	h->exited = true;
	it = h->head;
	h->head = h->tail = NULL;
	pthread_mutex_unlock(&h->lock);
	while (it)
	{
		inbox_item *next = it->next;

		if (it->kind == ITEM_REGISTER)
		{
			it->conn->dead = true;
			h->release(it->conn->handle);
			atomic_fetch_sub(&h->count, 1);
			kc_metrics_add(KC_M_WS_CONNECTIONS, -1);
		}
		else if (it->kind == ITEM_READY)
			free_conn(it->conn);	/* dead: killed above or just now */
		kc_ws_msg_free_list(it->msgs);
		free(it);
		it = next;
	}
}

static void *
hub_main(void *arg)
{
	kc_ws_hub  *h = arg;
	struct epoll_event evs[EPOLL_BATCH];
	double		next_tick = mono_now() + TICK_MS / 1000.0;

	for (;;)
	{
		int			timeout = (int) ((next_tick - mono_now()) * 1000) + 1;
		int			n = epoll_wait(h->ep, evs, EPOLL_BATCH, timeout < 0 ? 0 : timeout);

		h->now = mono_now();
		for (int i = 0; i < n; i++)
		{
			kc_ws_conn *c = evs[i].data.ptr;

			if (c == NULL)
				drain_inbox(h);
			else
				pump(h, c, (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0,
					 (evs[i].events & EPOLLOUT) != 0);
		}
		if (h->now >= next_tick)
		{
			tick(h);
			next_tick = h->now + TICK_MS / 1000.0;
		}
		flush_dirty(h);
		bury(h);
		if (h->stop_req && (h->all == NULL || h->now > h->stop_deadline))
			break;
	}
	while (h->all)
		kill_conn(h, h->all);
	bury(h);
	close_leftovers(h);
	return NULL;
}

/* ---- other threads ------------------------------------------------------ */

/* Appends an item; false (nothing queued) when the hub thread is gone. */
static bool
post(kc_ws_hub *h, item_kind kind, kc_ws_conn *c, kc_ws_msg *msgs, kc_ws_replay how)
{
	inbox_item *it = malloc(sizeof(*it));
	uint64_t	one = 1;
	bool		ok;

	if (!it)
		return false;
	it->next = NULL;
	it->kind = kind;
	it->conn = c;
	it->msgs = msgs;
	it->how = how;
	pthread_mutex_lock(&h->lock);
	ok = !h->exited;
	if (ok)
	{
		if (h->tail)
			h->tail->next = it;
		else
			h->head = it;
		h->tail = it;
	}
	pthread_mutex_unlock(&h->lock);
	if (!ok)
	{
		free(it);
		return false;
	}
	if (write(h->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		kc_logf(KC_LOG_WARN, "websocket: eventfd write: %s", strerror(errno));
	return true;
}

kc_ws_hub *
kc_ws_hub_start(const kc_ws_limits *limits, kc_ws_release_fn release,
				kc_ws_position_fn position, void *position_arg)
{
	kc_ws_hub  *h = calloc(1, sizeof(*h));
	struct epoll_event ev;

	if (!h)
		return NULL;
	h->lim = *limits;
	h->release = release;
	h->position = position;
	h->position_arg = position_arg;
	h->ep = epoll_create1(EPOLL_CLOEXEC);
	h->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	pthread_mutex_init(&h->lock, NULL);
	ev.events = EPOLLIN;
	ev.data.ptr = NULL;
	if (h->ep < 0 || h->efd < 0 || epoll_ctl(h->ep, EPOLL_CTL_ADD, h->efd, &ev) != 0 ||
		pthread_create(&h->thread, NULL, hub_main, h) != 0)
	{
		if (h->ep >= 0)
			close(h->ep);
		if (h->efd >= 0)
			close(h->efd);
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
	pthread_join(h->thread, NULL);
	h->started = false;
}

void
kc_ws_hub_free(kc_ws_hub *h)
{
	if (!h)
		return;
	kc_ws_hub_stop(h, 0);
	while (h->head)
	{
		inbox_item *it = h->head;

		h->head = it->next;
		kc_ws_msg_free_list(it->msgs);
		free(it);
	}
	close(h->ep);
	close(h->efd);
	pthread_mutex_destroy(&h->lock);
	free(h);
}

void
kc_ws_hub_post_event(kc_ws_hub *h, kc_ws_msg *m)
{
	if (!h || !post(h, ITEM_EVENT, NULL, m, 0))
		free(m);
}

kc_ws_conn *
kc_ws_hub_register(kc_ws_hub *h, int fd, void *handle, const char *student,
				   long long after, const char *extra, size_t extra_len)
{
	kc_ws_conn *c;

	if (atomic_load(&h->stopping))
		return NULL;
	if (atomic_fetch_add(&h->count, 1) >= h->lim.max_connections)
	{
		atomic_fetch_sub(&h->count, 1);
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (c && extra_len > 0)
	{
		c->extra = malloc(extra_len);
		if (c->extra)
		{
			memcpy(c->extra, extra, extra_len);
			c->extra_len = extra_len;
		}
	}
	if (!c || (extra_len > 0 && !c->extra))
	{
		if (c)
			free_conn(c);
		atomic_fetch_sub(&h->count, 1);
		return NULL;
	}
	c->hub = h;
	c->fd = fd;
	c->handle = handle;
	c->all = student == NULL;
	snprintf(c->student, sizeof(c->student), "%s", student ? student : "");
	c->after = after;
	c->awaiting_ready = true;
	kc_metrics_add(KC_M_WS_CONNECTIONS, 1);
	if (!post(h, ITEM_REGISTER, c, NULL, 0))
	{
		atomic_fetch_sub(&h->count, 1);
		kc_metrics_add(KC_M_WS_CONNECTIONS, -1);
		free_conn(c);
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
		free_conn(c);
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
