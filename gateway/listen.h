/*
 * listen.h - the event listener: one thread, one Postgres connection that
 * LISTENs on kc_flow_events, and the catch-up that makes the cache correct
 * after any outage (docs/design.md §6).
 *
 * For each event it first invalidates the student's cached views, then hands
 * the event to the subscriber (the WebSocket hub), so a client that refetches
 * on the push never sees the old view. The subscriber is called from the
 * catch-up only, so it sees events in gap-free log order (ev->id is the log
 * position); after a reconnect it may see a position again.
 */
#ifndef KC_LISTEN_H
#define KC_LISTEN_H

#include <stdbool.h>

#include "cache.h"

typedef struct kc_listener kc_listener;

/* One event as the listener saw it (strings valid during the callback only). */
typedef struct kc_event_note
{
	long long	id;
	const char *type;
	const char *student_id;
	const char *correlation_id;
	long long	version;
	const char *created_at;		/* ISO 8601 as in JSON; NULL on the fast path */
	const char *payload;		/* JSON text; NULL on the fast path */
	bool		more;			/* more events of the same catch-up batch follow at once */
} kc_event_note;

typedef void (*kc_event_fn) (const kc_event_note *ev, void *arg);

/*
 * Called in place of events a trim removed before the listener handed them
 * over (its cursor fell below the log's floor, floor_pos): the subscriber's
 * stream jumps to the log's head, and the next event it gets is past head.
 */
typedef void (*kc_skip_fn) (long long floor_pos, long long head, void *arg);

/*
 * The log was found rewound (docs/gateway.md, failover): positions up to end
 * name other events than the ones handed over, and the subscriber gets no
 * event at or below end from now on; called on the listener's thread, in
 * order with the events.
 */
typedef void (*kc_rewind_fn) (long long end, void *arg);

/* An event's identity in the log, "id@logged_at": fits in this, with its NUL. */
#define KC_EVENT_IDENT_MAX 96

/*
 * Reads a notification of kc_flow 0.2.0: the range of log positions a
 * sequencer round gave, "first-last" (decimal, 1 <= first <= last <= 2^53).
 */
bool		kc_notify_range(const char *payload, long long *first, long long *last);

/*
 * True when a NOTIFY payload is one of kc_flow 0.1.0: a JSON object per event,
 * sent inside the writer's transaction. The listener only says that the schema
 * is too old and runs its catch-up, which reads the event log itself, so the
 * first character is all it looks at; any channel user can send anything.
 */
bool		kc_notify_is_old(const char *payload);

kc_listener *kc_listener_start(const char *conninfo, kc_cache *cache,
							   kc_event_fn on_event, kc_skip_fn on_skip, kc_rewind_fn on_rewind,
							   void *arg);
/*
 * In a child of a gateway of several processes: a listener that LISTENs to
 * nothing itself but reads the listener process's feed at the abstract
 * address feed (feed.h, listen_follow.c); the accessors below answer for it.
 */
kc_listener *kc_listener_follow(const char *feed, kc_cache *cache,
								kc_event_fn on_event, kc_skip_fn on_skip, kc_rewind_fn on_rewind,
								void *arg);
void		kc_listener_stop(kc_listener *l);

/*
 * True once the listener holds LISTEN and has made its first catch-up attempt
 * on that connection: the cache is synced by then, or Redis was found down and
 * requests bypass it. Never true between LISTEN and the replay, so a gateway
 * does not report ready while it still serves views the log has overtaken.
 */
bool		kc_listener_connected(kc_listener *l);
long long	kc_listener_watermark(kc_listener *l);
/*
 * How long the oldest event in the log that the listener has not applied has
 * been there, as of the last health poll (about a second old at most); false
 * when unknown (not connected, or the poll failed). It grows whatever keeps
 * the listener from applying events: a long catch-up, a query blocked by a
 * lock (a poll older than two seconds adds its age). Redis away does not
 * hold it back: the events are pushed all the same.
 */
bool		kc_listener_lag(kc_listener *l, double *seconds);

#endif
