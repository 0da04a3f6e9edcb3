/*
 * listen_int.h - what the listener's files share (listen.c: the thread, LISTEN
 * and the notifications; catchup.c: replaying the log into the cache;
 * log_health.c: kc_flow.health() polled into gauges). Not for other callers:
 * they use listen.h.
 */
#ifndef KC_LISTEN_INT_H
#define KC_LISTEN_INT_H

#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "listen.h"

struct kc_listener
{
	char	   *conninfo;
	kc_cache   *cache;
	kc_event_fn on_event;
	kc_skip_fn	on_skip;
	kc_rewind_fn on_rewind;
	void	   *arg;
	pthread_t	thread;
	int			wake[2];		/* pipe: written to stop the thread */
	_Atomic bool stop;
	_Atomic bool connected;
	_Atomic long long watermark;	/* last log position applied */
	char		ident[KC_EVENT_IDENT_MAX];	/* the event at watermark ("": unknown) */
	bool		rewound;		/* the log was rewound: the resync must purge Redis */
	_Atomic long long lag_us;	/* catch-up lag seen by the last health poll */
	_Atomic bool lag_known;
	_Atomic long long lag_polled_ms;	/* CLOCK_MONOTONIC of that poll */
	PGconn	   *conn;
	bool		synced;			/* this thread's view; the cache has the shared one */
	bool		warned_old_schema;
};

/* listen.c */

/*
 * A listener whose thread runs run(l): listener_main (LISTEN on Postgres,
 * target a conninfo) or follow_main (listen_follow.c: a --processes child
 * reading the feed, target its socket's path). NULL when out of memory or
 * threads.
 */
kc_listener *kc_listener_spawn(const char *target, kc_cache *cache, kc_event_fn on_event,
							   kc_skip_fn on_skip, kc_rewind_fn on_rewind, void *arg,
							   void *(*run) (void *));

/* catchup.c */

/*
 * Replays events_since(from) to the end of the log. Each event past the
 * listener's watermark is handed to the subscriber, and the watermark raised
 * to it. With invalidate, every event read is first invalidated in Redis and
 * the Redis watermark raised after each batch; without (Redis away: every
 * read bypasses it), Redis is not touched. Returns 1 done, 0 Redis failed,
 * -1 Postgres failed, -2 from is below the log's floor (KC410: resync).
 */
int			kc_catchup_run(kc_listener *l, long long from, bool invalidate);

typedef enum kc_resync
{
	KC_RESYNC_OK,				/* replayed, cache synced */
	KC_RESYNC_REDIS_DOWN,		/* Redis failed: pushes may go on without it */
	KC_RESYNC_FAILED			/* Postgres failed, or the log is not settled yet */
} kc_resync;

/*
 * Makes the cache trustworthy again after any outage: waits until every event
 * committed before the call has a log position, loads the watermark (or starts
 * an empty Redis at the newest position after purging stray views), replays
 * (invalidating from the older of the Redis watermark and the listener's,
 * pushing past the listener's), and marks the cache synced.
 */
kc_resync	kc_catchup_resync(kc_listener *l);

/*
 * The listener's own cursor below the log's floor (kc_catchup_run said -2):
 * when it is behind head (the log's), tells the subscriber (on_skip) and
 * moves it there.
 */
void		kc_catchup_skip_to(kc_listener *l, long long head);

/* The log position a new reader starts at (kc_flow.settled_event_id()); false when Postgres failed. */
bool		kc_catchup_start_position(kc_listener *l, long long *pos);

/*
 * Whatever Redis says, whether the log still gives the listener's own cursor
 * to the event it pushed there; if not (a failover that lost commits, a
 * restored database), moves the cursor to the log's end, tells the subscriber
 * (on_rewind) and leaves the purge of Redis to the next resync. 1 rewound, 0
 * not, -1 Postgres failed.
 */
int			kc_catchup_check_cursor(kc_listener *l);

/* log_health.c: polls kc_flow.health(watermark) into the gauges; false when Postgres failed. */
bool		kc_log_health_poll(kc_listener *l);

#endif
