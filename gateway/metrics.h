/*
 * metrics.h - process-wide counters and histograms exposed on GET /metrics in
 * the Prometheus text format. Updates are lock-free atomics, safe from any thread.
 * Requests are counted per route under the labels of the route table (routes.h).
 * With --processes N the figures live in a segment shared by the children
 * (supervisor.c) and every read adds the children up (metrics.c says how).
 */
#ifndef KC_METRICS_H
#define KC_METRICS_H

#include <stdbool.h>
#include <stddef.h>

struct kc_route;

typedef enum kc_cache_outcome
{
	KC_CACHE_OUT_HIT = 0,
	KC_CACHE_OUT_MISS,
	KC_CACHE_OUT_BYPASS,
	KC_CACHE_OUT_COUNT
} kc_cache_outcome;

typedef enum kc_counter
{
	KC_M_INVALIDATIONS = 0,		/* invalidations applied (fence raised, keys deleted) */
	KC_M_INVALIDATIONS_SKIPPED, /* event already covered by the fence */
	KC_M_INVALIDATION_BATCHES,	/* Redis calls that invalidated a catch-up batch */
	KC_M_FILLS,					/* cache SETs stored */
	KC_M_FILLS_REFUSED,			/* fills refused by the fence */
	KC_M_EVENTS,				/* events seen by the listener */
	KC_M_CATCHUPS,				/* catch-up runs */
	KC_M_CATCHUPS_BELOW_FLOOR,	/* catch-ups whose cursor was below the log's floor: views purged */
	KC_M_LOG_REWINDS,			/* the log was found rewound (failover that lost commits, restore) */
	KC_M_REFETCHES,				/* clients told to refetch: 410 on /events/recent, "refetch" on the socket */
	KC_M_PG_RECONNECTS,
	KC_M_REDIS_RECONNECTS,
	KC_M_LISTEN_RECONNECTS,
	KC_M_WS_CONNECTIONS,		/* gauge: open WebSocket connections */
	KC_M_WS_MESSAGES,			/* WebSocket messages sent */
	KC_M_WS_RESUMES,			/* WebSocket connections that came back with after= */
	KC_M_WS_SLOW_CLOSED,		/* WebSocket consumers closed with 1008 */
	KC_M_WS_DEAD_CLOSED,		/* WebSocket peers dropped for not answering pings */
	/* the operator console's (routes_admin_trace.c, cache.c) */
	KC_M_INVALIDATION_ERRORS,	/* invalidations Redis failed (retried by the next catch-up) */
	KC_M_SESSIONS_EXPECTED,		/* sessions new purchases call for (PURCHASE_CREATED purchase_tier) */
	KC_M_SESSIONS_CREATED,		/* sessions generated (SESSIONS_GENERATED count) */
	/* replica.c, routes_student.c */
	KC_M_REPLICA_READS,			/* misses answered by a replica */
	KC_M_REPLICA_BEHIND,		/* misses a replica could not answer (behind, down, failing) */
	KC_M_COUNTER_COUNT
} kc_counter;

/* Gauges set from outside (the listener's poll of kc_flow.health(), log_health.c). */
typedef enum kc_gauge
{
	KC_G_QUEUE_DEPTH = 0,
	KC_G_DEAD_LETTERS,
	KC_G_OLDEST_XACT_HOLDING_EVENTS,
	KC_G_LOG_UNSEQUENCED,
	KC_G_LOG_UNANNOUNCED,
	KC_G_NOTIFICATION_QUEUE_USAGE,
	KC_G_CATCHUP_LAG,
	KC_G_LISTEN_CONNECTED,		/* 1 while the listener holds LISTEN (listen.c) */
	KC_G_COUNT
} kc_gauge;

/* One request answered, counted under its row of the route table (routes.h). */
void		kc_metrics_request(const struct kc_route *route, int status, double seconds);
void		kc_metrics_cache(const struct kc_route *route, kc_cache_outcome outcome);
void		kc_metrics_add(kc_counter c, long long delta);
long long	kc_metrics_get(kc_counter c);
void		kc_metrics_set(kc_gauge g, double value);
/* a gauge as /metrics shows it: over every process */
double		kc_metrics_gauge(kc_gauge g);
/* commit-to-invalidation delay of one event */
void		kc_metrics_event_lag(double seconds);
/*
 * The delay the last kc_metrics_event_lag call of this thread recorded, once
 * (-1 when none since the last take): the listener records an event's lag right
 * before it hands the event to its subscriber, on the same thread, so the
 * subscriber learns when the invalidation was applied.
 */
double		kc_metrics_take_event_lag(void);
/* commit-to-push delay of one event (handed to the WebSocket hub) */
void		kc_metrics_push_lag(double seconds);
/* The gateway's processes (supervisor.c), which share their figures. */
/*
 * Before the fork: one slot per child in a shared segment, and with listener
 * one more (index processes + 1) for the listener process (feed.h); false
 * when it cannot be mapped.
 */
bool		kc_metrics_share(int processes, bool listener);
/* The supervisor: child index (1..N) runs as pid now, in place of a dead one when restart. */
void		kc_metrics_child_born(int index, int pid, bool restart);
/* The supervisor: child index died; its sockets and gauges go, its counters stay. */
void		kc_metrics_child_died(int index);
/* In child index, right after the fork: its updates go to its own slot. */
void		kc_metrics_become_child(int index);
/* This process's HTTP server accepts (true) or drains (false). */
void		kc_metrics_set_serving(bool serving);
int			kc_metrics_processes(void);	/* N; 1 without --processes */
int			kc_metrics_process_index(void); /* 1..N in a child; 0 without --processes */
int			kc_metrics_processes_serving(void);

/*
 * The children's place on the feed (feed.h), for /readyz. A child: it applied
 * the feed up to pos; resynced when the listener process just greeted it (it
 * is at the feed's position again), which clears its dropped mark.
 */
void		kc_metrics_feed_applied(long long pos, bool resynced);
/* The listener process: it dropped the child of that pid from the feed. */
void		kc_metrics_feed_dropped(int pid);
/* The listener process: N (0 without --processes), child index's position, */
int			kc_metrics_feed_children(void);
long long	kc_metrics_feed_position(int index);
/* ... and since when (CLOCK_MONOTONIC, ms; 0: it is not) it is behind what was handed out. */
void		kc_metrics_feed_behind_since(int index, long long since_ms);

/* A child /readyz refuses: dropped from the feed and not resynced, or behind. */
typedef struct kc_feed_laggard
{
	int			index;			/* 1..N */
	int			pid;
	bool		dropped;
	double		behind_s;		/* at least this long behind the events handed out */
} kc_feed_laggard;

/* The first child dropped or more than max_behind_s behind the feed; false when none. */
bool		kc_metrics_feed_laggard(double max_behind_s, long long now_ms, kc_feed_laggard *out);

/* Renders all metrics; returns a malloc'd string (NULL on out of memory). */
char	   *kc_metrics_render(size_t *len);

#endif
