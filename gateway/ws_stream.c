/*
 * ws_stream.c - the event streams of the hub, on the hub thread (see
 * ws_hub_int.h): which connections get an event, the replay, liveness, and
 * when to give up on a peer.
 *
 * Per connection the stream is: hello, the replay (events read by the HTTP
 * thread with events_since), then live events. While the replay is being read
 * the connection is REPLAYING and live events of its student are kept aside
 * (bounded); when the replay arrives they follow it, deduplicated by id. A
 * connection never receives an id <= the last it was sent, so the stream has
 * no duplicate, and since the hub receives events in gap-free order it has no
 * gap either. A connection whose queue holds --ws-queue events is closed
 * with 1008 and told where to resume; the hello and what else was queued
 * before it (the "lead") are no events and do not count while they wait.
 * Where the events themselves are gone (a trim, below the
 * log's floor), the replay, or a jump of the listener past them, is a
 * "refetch" message instead: the stream goes on past the log's head.
 *
 * A rewound log (the listener found it ending below ids already sent, after a
 * failover that lost commits or a restore) resets the hub's position to its
 * end and sends every connection a "refetch" carrying that end: the ids sent
 * before name other events now, so the client reloads its views, and the
 * stream goes on with the events past the end.
 *
 * Liveness runs on three clock lists (ws_hub_int.h): quiet connections in the
 * order of their last sign of life, pinged ones in the order of their ping,
 * and closing ones. The tick takes what is due from the heads only.
 */
#include "ws_hub_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"
#include "setassoc.h"

static unsigned hash_student(const char *s);
static kc_ws_conn **chain_of(kc_ws_hub *h, kc_ws_conn *c);
static void link_conn(kc_ws_hub *h, kc_ws_conn *c);
static void unlink_conn(kc_ws_hub *h, kc_ws_conn *c);
static void clock_unlink(kc_ws_hub *h, kc_ws_conn *c);
static void clock_append(kc_ws_hub *h, kc_ws_conn *c, kc_ws_clock clock);
static void alive(kc_ws_hub *h, kc_ws_conn *c);
static void mark_dirty(kc_ws_hub *h, kc_ws_conn *c);
static void drop_pending(kc_ws_conn *c);
static void bury_later(kc_ws_hub *h, kc_ws_conn *c);
static void close_slow(kc_ws_hub *h, kc_ws_conn *c, const char *why);
static void send_event(kc_ws_hub *h, kc_ws_conn *c, kc_ws_msg *m, bool bounded);
static void keep_aside(kc_ws_hub *h, kc_ws_conn *c, kc_ws_msg *m);
static void deliver(kc_ws_hub *h, kc_ws_conn *c, kc_ws_msg *m);
static void refetch_conn(kc_ws_hub *h, kc_ws_conn *c, long long floor_pos, long long head);
static void lead_sent(kc_ws_conn *c, size_t before);

static unsigned
hash_student(const char *s)
{
	return (unsigned) (kc_hash(s, strlen(s)) & (KC_WS_BUCKETS - 1));
}

static kc_ws_conn **
chain_of(kc_ws_hub *h, kc_ws_conn *c)
{
	return c->all ? &h->firehose : &h->buckets[hash_student(c->student)];
}

static kc_ws_list *
clock_list(kc_ws_hub *h, kc_ws_clock clock)
{
	switch (clock)
	{
		case KC_WS_CLOCK_QUIET:
			return &h->quiet;
		case KC_WS_CLOCK_PINGED:
			return &h->pinged;
		case KC_WS_CLOCK_CLOSING:
			return &h->closing;
		default:
			return NULL;
	}
}

static void
clock_unlink(kc_ws_hub *h, kc_ws_conn *c)
{
	kc_ws_list *l = clock_list(h, (kc_ws_clock) c->clock);

	if (!l)
		return;
	if (c->tprev)
		c->tprev->tnext = c->tnext;
	else
		l->head = c->tnext;
	if (c->tnext)
		c->tnext->tprev = c->tprev;
	else
		l->tail = c->tprev;
	c->tnext = c->tprev = NULL;
	c->clock = KC_WS_CLOCK_NONE;
}

/* Puts c at the tail of clock's list (its time is the latest there). */
static void
clock_append(kc_ws_hub *h, kc_ws_conn *c, kc_ws_clock clock)
{
	kc_ws_list *l = clock_list(h, clock);

	clock_unlink(h, c);
	c->tprev = l->tail;
	c->tnext = NULL;
	if (l->tail)
		l->tail->tnext = c;
	else
		l->head = c;
	l->tail = c;
	c->clock = clock;
}

static void
link_conn(kc_ws_hub *h, kc_ws_conn *c)
{
	kc_ws_conn **head = chain_of(h, c);

	c->bnext = *head;
	if (*head)
		(*head)->bprev = c;
	*head = c;
	kc_ws_interest_add(h, c, 1);
	c->last_rx = kc_evloop_now(h->loop);
	clock_append(h, c, KC_WS_CLOCK_QUIET);
}

/* Takes c out of its chain and off its clock (a no-op when it was never on them). */
static void
unlink_conn(kc_ws_hub *h, kc_ws_conn *c)
{
	kc_ws_conn **head = chain_of(h, c);

	if (c->bprev || *head == c)
		kc_ws_interest_add(h, c, -1);
	if (c->bprev)
		c->bprev->bnext = c->bnext;
	else if (*head == c)
		*head = c->bnext;
	if (c->bnext)
		c->bnext->bprev = c->bprev;
	c->bnext = c->bprev = NULL;
	clock_unlink(h, c);
}

/* A sign of life from the peer: back to the tail of the quiet clock. */
static void
alive(kc_ws_hub *h, kc_ws_conn *c)
{
	c->last_rx = kc_evloop_now(h->loop);
	if (c->clock == KC_WS_CLOCK_QUIET || c->clock == KC_WS_CLOCK_PINGED)
		clock_append(h, c, KC_WS_CLOCK_QUIET);
}

bool
kc_ws_stream_empty(kc_ws_hub *h)
{
	return !h->quiet.head && !h->pinged.head && !h->closing.head;
}

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
		kc_ws_msg_unref(c->pending[i]);
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
void
kc_ws_stream_kill(kc_ws_hub *h, kc_ws_conn *c)
{
	if (c->dead)
		return;
	c->dead = true;
	kc_ws_conn_detach(c);
	unlink_conn(h, c);
	drop_pending(c);
	atomic_fetch_sub(&h->count, 1);
	kc_metrics_add(KC_M_WS_CONNECTIONS, -1);
	if (!c->awaiting_ready)
		bury_later(h, c);
}

/* Queues a close frame and gives the peer grace seconds to answer it. */
void
kc_ws_stream_close(kc_ws_hub *h, kc_ws_conn *c, uint16_t code, const char *reason, double grace)
{
	if (c->dead || c->state == KC_WS_CLOSING)
		return;
	c->state = KC_WS_CLOSING;
	c->deadline = kc_evloop_now(h->loop) + grace;
	clock_append(h, c, KC_WS_CLOCK_CLOSING);
	drop_pending(c);
	if (!kc_ws_conn_queue_close(c, code, reason))
	{
		kc_ws_stream_kill(h, c);	/* out of memory: no close frame then */
		return;
	}
	mark_dirty(h, c);
}

static void
close_slow(kc_ws_hub *h, kc_ws_conn *c, const char *why)
{
	char		reason[120];

	snprintf(reason, sizeof(reason), "%s: reconnect with after=%lld", why, c->last_sent);
	kc_metrics_add(KC_M_WS_SLOW_CLOSED, 1);
	kc_logf(KC_LOG_INFO, "websocket of %s closed (1008): %s", c->all ? "admin" : c->student, reason);
	kc_ws_stream_close(h, c, 1008, reason, KC_WS_CLOSE_GRACE_S);
}

/* Sends event m to a LIVE connection unless already sent; 1008 when --ws-queue events wait. */
static void
send_event(kc_ws_hub *h, kc_ws_conn *c, kc_ws_msg *m, bool bounded)
{
	if (m->id <= c->last_sent || c->state != KC_WS_LIVE)
		return;
	if (bounded && kc_ws_conn_queued(c) >= (size_t) h->lim.queue + (size_t) c->lead)
	{
		close_slow(h, c, "too slow");
		return;
	}
	if (!kc_ws_conn_queue_text(c, m->text, m->len))
	{
		close_slow(h, c, "out of memory");
		return;
	}
	c->last_sent = m->id;
	mark_dirty(h, c);
}

/* A live event for a REPLAYING connection: kept until the replay arrives (bounded). */
static void
keep_aside(kc_ws_hub *h, kc_ws_conn *c, kc_ws_msg *m)
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

static void
deliver(kc_ws_hub *h, kc_ws_conn *c, kc_ws_msg *m)
{
	if (c->dead || m->id <= c->last_sent)
		return;
	if (c->state == KC_WS_LIVE)
		send_event(h, c, m, true);
	else if (c->state == KC_WS_REPLAYING)
		keep_aside(h, c, m);
}

void
kc_ws_stream_event(kc_ws_hub *h, kc_ws_msg *m)
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

/* The "refetch" message of docs/websocket.md for one live connection behind head. */
static void
refetch_conn(kc_ws_hub *h, kc_ws_conn *c, long long floor_pos, long long head)
{
	char		text[160];
	int			n;

	if (c->dead || c->state != KC_WS_LIVE || c->last_sent >= head)
		return;
	n = snprintf(text, sizeof(text), "{\"type\":\"refetch\",\"after\":%lld,\"log_floor\":%lld,"
				 "\"last_event_id\":%lld}", c->last_sent, floor_pos, head);
	if (!kc_ws_conn_queue_text(c, text, (size_t) n))
	{
		close_slow(h, c, "out of memory");
		return;
	}
	kc_metrics_add(KC_M_REFETCHES, 1);
	c->last_sent = head;
	mark_dirty(h, c);
}

void
kc_ws_stream_refetch(kc_ws_hub *h, long long floor_pos, long long head)
{
	if (head > h->pos)
		h->pos = head;
	for (int b = 0; b < KC_WS_BUCKETS; b++)
		for (kc_ws_conn *c = h->buckets[b]; c; c = c->bnext)
			refetch_conn(h, c, floor_pos, head);
	for (kc_ws_conn *c = h->firehose; c; c = c->bnext)
		refetch_conn(h, c, floor_pos, head);
}

/* The refetch of a rewound log for c, whose ids up to end are void. */
static bool
queue_refetch(kc_ws_conn *c, long long after, long long end)
{
	char		text[160];
	int			n = snprintf(text, sizeof(text),
							 "{\"type\":\"refetch\",\"reason\":\"rewound\",\"after\":%lld,"
							 "\"last_event_id\":%lld}", after, end);

	c->last_sent = end;
	kc_metrics_add(KC_M_REFETCHES, 1);
	return kc_ws_conn_queue_text(c, text, (size_t) n);
}

static void
rewind_conn(kc_ws_hub *h, kc_ws_conn *c, long long end)
{
	if (c->dead || c->state == KC_WS_CLOSING)
		return;
	if (c->state == KC_WS_REPLAYING)
	{
		/* what it kept aside names the old log: the refetch follows its hello */
		drop_pending(c);
		c->overflow = false;
		c->rewound_to = end;
		return;
	}
	if (!queue_refetch(c, c->last_sent, end))
	{
		close_slow(h, c, "out of memory");
		return;
	}
	mark_dirty(h, c);
}

void
kc_ws_stream_rewind(kc_ws_hub *h, long long end)
{
	kc_ws_list *lists[2] = {&h->quiet, &h->pinged};
	kc_logline	line;
	int			n = atomic_load(&h->count);

	h->pos = end;
	for (int i = 0; i < 2; i++)
	{
		kc_ws_conn *c = lists[i]->head;

		while (c)
		{
			kc_ws_conn *next = c->tnext;	/* a close moves c to the closing list */

			rewind_conn(h, c, end);
			c = next;
		}
	}
	kc_log_begin(&line, KC_LOG_INFO, "websockets told to refetch: the event log was rewound");
	kc_log_int(&line, "logEnd", end);
	kc_log_int(&line, "connections", n);
	kc_log_end(&line);
}

void
kc_ws_stream_add(kc_ws_hub *h, kc_ws_conn *c)
{
	if (!kc_ws_conn_attach(c))
	{
		kc_ws_stream_kill(h, c);
		return;
	}
	link_conn(h, c);
	if (c->after < 0)
	{
		long long	p = h->position ? h->position(h->position_arg) : 0;

		c->after = p > h->pos ? p : h->pos;
	}
	c->last_sent = c->after;
	if (h->stop_req)
		kc_ws_stream_close(h, c, 1001, "server shutting down", 0.5);
	else if (c->extra_len > 0)
		mark_dirty(h, c);		/* the flush reads the bytes MHD already had */
}

void
kc_ws_stream_ready(kc_ws_hub *h, kc_ws_conn *c, kc_ws_msg *msgs, kc_ws_replay how)
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
	if (c->state != KC_WS_REPLAYING)
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
	if (!kc_ws_conn_queue_text(c, hello, (size_t) n))
	{
		kc_ws_msg_free_list(msgs);
		kc_ws_stream_kill(h, c);
		return;
	}
	c->lead = (int) kc_ws_conn_queued(c);
	mark_dirty(h, c);
	if (how == KC_WS_REPLAY_FAILED)
	{
		kc_ws_msg_free_list(msgs);
		kc_ws_stream_close(h, c, 1013, "event log unavailable, retry later", KC_WS_CLOSE_GRACE_S);
		return;
	}
	c->state = KC_WS_LIVE;
	if (c->rewound_to > 0)
	{
		/* its replay may have read the log before the rewind: a refetch instead */
		kc_ws_msg_free_list(msgs);
		msgs = NULL;
		how = KC_WS_REPLAY_DONE;
		if (!queue_refetch(c, c->after, c->rewound_to))
		{
			kc_ws_stream_kill(h, c);
			return;
		}
	}
	for (kc_ws_msg *m = msgs; m; m = m->next)
		send_event(h, c, m, false); /* bounded by construction */
	kc_ws_msg_free_list(msgs);
	if (how == KC_WS_REPLAY_TRUNCATED)
	{
		close_slow(h, c, "too far behind");
		return;
	}
	for (int i = 0; i < c->npending && c->state == KC_WS_LIVE; i++)
		send_event(h, c, c->pending[i], true);
	drop_pending(c);
	if (c->overflow && c->state == KC_WS_LIVE)
		close_slow(h, c, "too slow");
}

/*
 * The lead leaves the queue first (wslay sends control frames first, then the
 * messages in order): of the before messages, those gone now were the lead's.
 */
static void
lead_sent(kc_ws_conn *c, size_t before)
{
	size_t		after = kc_ws_conn_queued(c);
	size_t		sent = before > after ? before - after : 0;

	c->lead = sent >= (size_t) c->lead ? 0 : c->lead - (int) sent;
}

void
kc_ws_stream_io(kc_ws_hub *h, kc_ws_conn *c, int ready)
{
	size_t		before;

	if (c->dead)
		return;
	before = kc_ws_conn_queued(c);
	if (!kc_ws_conn_pump(c, (ready & KC_EV_READ) != 0))
	{
		kc_ws_stream_kill(h, c);
		return;
	}
	if (c->lead > 0)
		lead_sent(c, before);
	if (c->heard)
	{
		c->heard = false;
		alive(h, c);
	}
}

/* Pings idle peers, drops the ones that stopped answering, ends late closes. */
void
kc_ws_stream_tick(kc_ws_hub *h)
{
	double		now = kc_evloop_now(h->loop);
	kc_ws_conn *c,
			   *next;

	for (c = h->closing.head; c; c = next)
	{
		next = c->tnext;
		if (now > c->deadline)
			kc_ws_stream_kill(h, c);
	}
	while ((c = h->pinged.head) && now - c->ping_at > h->lim.pong_timeout_s)
	{
		kc_metrics_add(KC_M_WS_DEAD_CLOSED, 1);
		kc_logf(KC_LOG_INFO, "websocket of %s dropped: no answer to ping in %d s",
				c->all ? "admin" : c->student, h->lim.pong_timeout_s);
		kc_ws_stream_kill(h, c);
	}
	while ((c = h->quiet.head) && now - c->last_rx >= h->lim.ping_interval_s)
	{
		if (!kc_ws_conn_queue_ping(c))
		{
			kc_ws_stream_kill(h, c);
			continue;
		}
		c->ping_at = now;
		clock_append(h, c, KC_WS_CLOCK_PINGED);
		mark_dirty(h, c);
	}
}

void
kc_ws_stream_flush(kc_ws_hub *h)
{
	while (h->dirty)
	{
		kc_ws_conn *c = h->dirty;

		h->dirty = c->dnext;
		c->dirty = false;
		kc_ws_stream_io(h, c, 0);
	}
	while (h->grave)
	{
		kc_ws_conn *c = h->grave;

		h->grave = c->gnext;
		kc_ws_conn_free(c);
	}
}
