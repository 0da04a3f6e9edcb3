/*
 * metrics.h - process-wide counters and histograms exposed on GET /metrics in
 * the Prometheus text format. Updates are lock-free atomics, safe from any thread.
 */
#ifndef KC_METRICS_H
#define KC_METRICS_H

#include <stddef.h>

typedef enum kc_route_id
{
	KC_ROUTE_HOME = 0,
	KC_ROUTE_LEARNING,
	KC_ROUTE_SESSIONS,
	KC_ROUTE_EVENTS,
	KC_ROUTE_HEALTHZ,
	KC_ROUTE_READYZ,
	KC_ROUTE_METRICS,
	KC_ROUTE_STATIC,
	KC_ROUTE_WS,
	KC_ROUTE_DEMO,
	KC_ROUTE_UNKNOWN,
	KC_ROUTE_COUNT
} kc_route_id;

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
	KC_M_FILLS,					/* cache SETs stored */
	KC_M_FILLS_REFUSED,			/* fills refused by the fence */
	KC_M_EVENTS,				/* events seen by the listener */
	KC_M_CATCHUPS,				/* catch-up runs */
	KC_M_PG_RECONNECTS,
	KC_M_REDIS_RECONNECTS,
	KC_M_LISTEN_RECONNECTS,
	KC_M_WS_CONNECTIONS,		/* gauge: open WebSocket connections */
	KC_M_WS_MESSAGES,			/* WebSocket messages sent */
	KC_M_WS_RESUMES,			/* WebSocket connections that came back with after= */
	KC_M_WS_SLOW_CLOSED,		/* WebSocket consumers closed with 1008 */
	KC_M_WS_DEAD_CLOSED,		/* WebSocket peers dropped for not answering pings */
	KC_M_COUNTER_COUNT
} kc_counter;

const char *kc_route_name(kc_route_id r);
void		kc_metrics_request(kc_route_id route, int status, double seconds);
void		kc_metrics_cache(kc_route_id route, kc_cache_outcome outcome);
void		kc_metrics_add(kc_counter c, long long delta);
long long	kc_metrics_get(kc_counter c);
/* commit-to-invalidation delay of one event */
void		kc_metrics_event_lag(double seconds);
/* Renders all metrics; returns a malloc'd string (NULL on out of memory). */
char	   *kc_metrics_render(size_t *len);

#endif
