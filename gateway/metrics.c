/*
 * metrics.c - the counters behind GET /metrics.
 *
 * Requests are counted by route and status class of interest, latencies and the
 * event lag (event created_at -> invalidation applied) go into fixed-bucket
 * histograms. Everything is a relaxed atomic: /metrics may read a request that
 * is counted but whose latency is not yet, which Prometheus tolerates.
 */
#include "metrics.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "routes.h"

static const int codes[] = {101, 200, 304, 400, 401, 403, 404, 405, 409, 413, 414, 426, 431, 500, 503};
#define N_CODES (sizeof(codes) / sizeof(codes[0]))

static const double lat_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
0.05, 0.1, 0.25, 0.5, 1, 2.5};
#define N_LAT (sizeof(lat_bounds) / sizeof(lat_bounds[0]))

static const double lag_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
#define N_LAG (sizeof(lag_bounds) / sizeof(lag_bounds[0]))

typedef struct histogram
{
	_Atomic long long buckets[16];	/* non-cumulative; last is +Inf */
	_Atomic long long count;
	_Atomic long long sum_us;
} histogram;

/*
 * Everything one process counts. With --processes N (supervisor.c) there is one
 * slot per child in a segment shared by all of them, made before the fork, and
 * /metrics adds the slots up: whichever child answers, it shows the whole
 * gateway. A restarted child goes on counting in its slot, so counters never
 * go back; the supervisor zeroes the dead child's gauges.
 */
typedef struct metrics_slot
{
	/* indexed by the row of the route table */
	_Atomic long long requests[KC_ROUTES_MAX][N_CODES + 1];	/* last: other */
	histogram	latency[KC_ROUTES_MAX];
	histogram	event_lag;
	histogram	push_lag;
	_Atomic long long cache_outcomes[KC_ROUTES_MAX][KC_CACHE_OUT_COUNT];
	_Atomic long long counters[KC_M_COUNTER_COUNT];
	_Atomic double gauges[KC_G_COUNT];
	_Atomic int pid;			/* the child's, set by the supervisor; 0: none */
	_Atomic bool serving;		/* its HTTP server accepts and it is not draining */
	/* a child's place on the feed (feed.h), for /readyz of whichever child answers */
	_Atomic long long fed_pos;	/* the child: the last position it applied */
	_Atomic bool fed_dropped;	/* the listener process dropped it; the child clears it on resync */
	_Atomic long long behind_since_ms;	/* the listener process: since when it is behind (0: not) */
} metrics_slot;

/* the segment shared by the processes: a header, then one slot per process */
typedef struct metrics_shared
{
	_Atomic long long restarts; /* children the supervisor restarted */
	metrics_slot slots[];
} metrics_shared;

static metrics_slot single;		/* without --processes */
static metrics_shared *shared;	/* with it */
static metrics_slot *slots = &single;
static int	nslots = 1;
static int	nchildren = 1;		/* slots 1..nchildren serve HTTP; slot nslots may be the listener's */
static metrics_slot *mine = &single;
static int	my_index;			/* 1..N in a child, 0 otherwise */
static __thread double last_event_lag = -1;	/* kc_metrics_take_event_lag */

/*
 * How the slots of several processes add up. SUM: work each process does on
 * its own (requests, sockets, reconnects, Redis operations). MAX: what every
 * child counts alike because each one is handed every event (sessions), what
 * only the listener process counts (events applied, catch-ups, rewinds) or
 * reads from Postgres (kc_flow.health() gauges), and the catch-up lag.
 */
typedef enum agg
{
	SUM,
	MAX
} agg;

static const struct
{
	kc_gauge	g;
	agg			how;
	const char *name;
	const char *help;
}			gauge_defs[] = {
	{KC_G_QUEUE_DEPTH, MAX, "kc_flow_queue_depth", "events queued for a stage (kc_flow.health())"},
	{KC_G_DEAD_LETTERS, MAX, "kc_flow_dead_letters", "unresolved dead letters"},
	{KC_G_OLDEST_XACT_HOLDING_EVENTS, MAX, "kc_flow_oldest_xact_holding_events_seconds",
	"age of the oldest open transaction that emitted events not yet committed (0: none)"},
	{KC_G_LOG_UNSEQUENCED, MAX, "kc_flow_log_unsequenced", "committed events without a log position yet"},
	{KC_G_LOG_UNANNOUNCED, MAX, "kc_flow_log_unannounced", "log positions given but not yet announced by NOTIFY"},
	{KC_G_NOTIFICATION_QUEUE_USAGE, MAX, "kc_flow_notification_queue_usage",
	"pg_notification_queue_usage(): share of the NOTIFY queue in use"},
	{KC_G_CATCHUP_LAG, MAX, "kc_catchup_lag_seconds",
	"how long the oldest event in the log that this gateway has not applied has been there (0: none; "
	"with several processes, the slowest one's)"},
	{KC_G_LISTEN_CONNECTED, SUM, "kc_listen_connected",
	"gateway processes whose listener holds LISTEN and has caught up once"},
};

static const struct
{
	kc_counter	c;
	agg			how;
	const char *name;
	const char *type;
	const char *help;
}			counter_defs[] = {
	{KC_M_INVALIDATIONS, SUM, "kc_cache_invalidations_total", "counter", "cache invalidations applied"},
	{KC_M_INVALIDATIONS_SKIPPED, SUM, "kc_cache_invalidations_skipped_total", "counter",
	"events already covered by the fence"},
	{KC_M_INVALIDATION_BATCHES, SUM, "kc_cache_invalidation_batches_total", "counter",
	"Redis round trips that invalidated a catch-up batch's events"},
	{KC_M_FILLS, SUM, "kc_cache_fills_total", "counter", "cache entries stored after a miss"},
	{KC_M_FILLS_REFUSED, SUM, "kc_cache_fills_refused_total", "counter",
	"fills refused because an invalidation raised the fence past the read version"},
	{KC_M_EVENTS, MAX, "kc_events_total", "counter", "events applied by the listener"},
	{KC_M_CATCHUPS, MAX, "kc_catchups_total", "counter", "catch-up replays run"},
	{KC_M_CATCHUPS_BELOW_FLOOR, MAX, "kc_catchup_below_floor_total", "counter",
	"catch-ups that found their cursor below the log's floor (events trimmed): cached views purged, resumed at the head"},
	{KC_M_LOG_REWINDS, MAX, "kc_log_rewinds_total", "counter",
	"times the event log was found rewound below a cursor (a failover that lost commits, a restored database): views purged, sockets told to refetch"},
	{KC_M_REFETCHES, SUM, "kc_refetches_total", "counter",
	"clients told to refetch because their after= was below the log's floor (HTTP 410, WebSocket \"refetch\")"},
	{KC_M_PG_RECONNECTS, SUM, "kc_pg_reconnects_total", "counter", "request connections to Postgres re-established"},
	{KC_M_REDIS_RECONNECTS, SUM, "kc_redis_reconnects_total", "counter", "Redis recoveries"},
	{KC_M_LISTEN_RECONNECTS, SUM, "kc_listen_reconnects_total", "counter", "LISTEN connection re-established"},
	{KC_M_WS_CONNECTIONS, SUM, "kc_ws_connections", "gauge", "open WebSocket connections"},
	{KC_M_WS_MESSAGES, SUM, "kc_ws_messages_total", "counter", "WebSocket messages sent"},
	{KC_M_WS_RESUMES, SUM, "kc_ws_resumes_total", "counter", "WebSocket connections resumed with after= (reconnects)"},
	{KC_M_WS_SLOW_CLOSED, SUM, "kc_ws_slow_closed_total", "counter", "WebSocket consumers closed with 1008 for falling behind"},
	{KC_M_WS_DEAD_CLOSED, SUM, "kc_ws_dead_closed_total", "counter", "WebSocket peers dropped for not answering pings"},
	{KC_M_INVALIDATION_ERRORS, SUM, "kc_cache_invalidation_errors_total", "counter",
	"invalidations that failed in Redis (the catch-up applies them again)"},
	{KC_M_SESSIONS_EXPECTED, MAX, "kc_sessions_expected_total", "counter",
	"sessions new purchases call for (purchase_tier of PURCHASE_CREATED events applied)"},
	{KC_M_SESSIONS_CREATED, MAX, "kc_sessions_created_total", "counter",
	"sessions generated (count of SESSIONS_GENERATED events applied)"},
	{KC_M_REPLICA_READS, SUM, "kc_replica_reads_total", "counter", "cache misses answered by a read replica"},
	{KC_M_REPLICA_BEHIND, SUM, "kc_replica_fallbacks_total", "counter",
	"cache misses sent to the primary: the replicas were behind the version needed, down or failing"},
};

/* The counter's row (every counter has one). */
static agg
counter_agg(kc_counter c)
{
	for (size_t i = 0; i < sizeof(counter_defs) / sizeof(counter_defs[0]); i++)
		if (counter_defs[i].c == c)
			return counter_defs[i].how;
	return SUM;
}

/* The long long at offset of every slot, added up or the largest. */
static long long
sum_or_max(agg how, size_t offset)
{
	long long	r = 0;

	for (int i = 0; i < nslots; i++)
	{
		long long	v = atomic_load_explicit((_Atomic long long *) ((char *) &slots[i] + offset),
											 memory_order_relaxed);

		r = how == SUM ? r + v : v > r ? v : r;
	}
	return r;
}

/*
 * A SUM gauge counts the children's (processes serving); a MAX one every
 * slot's, the listener process's too (it polls kc_flow.health()).
 */
static double
gauge_value(kc_gauge g, agg how)
{
	double		r = 0;

	for (int i = 0; i < (how == SUM ? nchildren : nslots); i++)
	{
		double		v = atomic_load_explicit(&slots[i].gauges[g], memory_order_relaxed);

		r = how == SUM ? r + v : v > r ? v : r;
	}
	return r;
}

bool
kc_metrics_share(int processes, bool listener)
{
	size_t		size = sizeof(metrics_shared) + (size_t) (processes + listener) * sizeof(metrics_slot);
	void	   *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return false;
	shared = p;					/* zeroed by the kernel */
	slots = shared->slots;
	nslots = processes + listener;
	nchildren = processes;
	mine = NULL;
	return true;
}

void
kc_metrics_child_born(int index, int pid, bool restart)
{
	if (restart)
		atomic_fetch_add(&shared->restarts, 1);
	atomic_store(&slots[index - 1].pid, pid);
}

void
kc_metrics_child_died(int index)
{
	metrics_slot *s = &slots[index - 1];

	/* its sockets and its listener are gone with it; its counters stay */
	atomic_store(&s->pid, 0);
	atomic_store(&s->serving, false);
	atomic_store(&s->counters[KC_M_WS_CONNECTIONS], 0);
	atomic_store(&s->fed_pos, 0);
	atomic_store(&s->fed_dropped, false);
	atomic_store(&s->behind_since_ms, 0);
	for (int g = 0; g < KC_G_COUNT; g++)
		atomic_store(&s->gauges[g], 0.0);
}

void
kc_metrics_become_child(int index)
{
	mine = &slots[index - 1];
	my_index = index;
}

void
kc_metrics_set_serving(bool serving)
{
	atomic_store(&mine->serving, serving);
}

int
kc_metrics_processes(void)
{
	return shared ? nchildren : 1;
}

int
kc_metrics_process_index(void)
{
	return my_index;
}

int
kc_metrics_processes_serving(void)
{
	int			n = 0;

	if (!shared)
		return atomic_load(&single.serving) ? 1 : 0;
	for (int i = 0; i < nchildren; i++)
		if (atomic_load(&slots[i].pid) != 0 && atomic_load(&slots[i].serving))
			n++;
	return n;
}

void
kc_metrics_feed_applied(long long pos, bool resynced)
{
	atomic_store(&mine->fed_pos, pos);
	if (resynced)
		atomic_store(&mine->fed_dropped, false);
}

void
kc_metrics_feed_dropped(int pid)
{
	for (int i = 0; shared && i < nchildren; i++)
		if (pid > 0 && atomic_load(&slots[i].pid) == pid)
			atomic_store(&slots[i].fed_dropped, true);
}

int
kc_metrics_feed_children(void)
{
	return shared ? nchildren : 0;
}

long long
kc_metrics_feed_position(int index)
{
	return atomic_load(&slots[index - 1].fed_pos);
}

void
kc_metrics_feed_behind_since(int index, long long since_ms)
{
	atomic_store(&slots[index - 1].behind_since_ms, since_ms);
}

bool
kc_metrics_feed_laggard(double max_behind_s, long long now_ms, kc_feed_laggard *out)
{
	for (int i = 0; shared && i < nchildren; i++)
	{
		metrics_slot *s = &slots[i];
		int			pid = atomic_load(&s->pid);
		long long	since = atomic_load(&s->behind_since_ms);
		long long	behind_ms = since != 0 ? now_ms - since : 0;

		if (pid == 0 || (!atomic_load(&s->fed_dropped) && behind_ms <= max_behind_s * 1000))
			continue;
		out->index = i + 1;
		out->pid = pid;
		out->dropped = atomic_load(&s->fed_dropped);
		out->behind_s = behind_ms / 1000.0;
		return true;
	}
	return false;
}

static void
observe(histogram *h, const double *bounds, size_t n, double v)
{
	size_t		i = 0;

	while (i < n && v > bounds[i])
		i++;
	atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->sum_us, (long long) (v * 1e6), memory_order_relaxed);
}

void
kc_metrics_request(const kc_route *route, int status, double seconds)
{
	size_t		r = (size_t) (route - kc_routes);
	size_t		i = 0;

	while (i < N_CODES && codes[i] != status)
		i++;
	atomic_fetch_add_explicit(&mine->requests[r][i], 1, memory_order_relaxed);
	observe(&mine->latency[r], lat_bounds, N_LAT, seconds);
}

void
kc_metrics_cache(const kc_route *route, kc_cache_outcome outcome)
{
	atomic_fetch_add_explicit(&mine->cache_outcomes[route - kc_routes][outcome], 1, memory_order_relaxed);
}

void
kc_metrics_add(kc_counter c, long long delta)
{
	atomic_fetch_add_explicit(&mine->counters[c], delta, memory_order_relaxed);
}

long long
kc_metrics_get(kc_counter c)
{
	return sum_or_max(counter_agg(c), offsetof(metrics_slot, counters[c]));
}

void
kc_metrics_set(kc_gauge g, double value)
{
	atomic_store_explicit(&mine->gauges[g], value, memory_order_relaxed);
}

double
kc_metrics_gauge(kc_gauge g)
{
	for (size_t i = 0; i < sizeof(gauge_defs) / sizeof(gauge_defs[0]); i++)
		if (gauge_defs[i].g == g)
			return gauge_value(g, gauge_defs[i].how);
	return 0;
}

void
kc_metrics_event_lag(double seconds)
{
	observe(&mine->event_lag, lag_bounds, N_LAG, seconds < 0 ? 0 : seconds);
	last_event_lag = seconds < 0 ? 0 : seconds;
}

double
kc_metrics_take_event_lag(void)
{
	double		v = last_event_lag;

	last_event_lag = -1;
	return v;
}

void
kc_metrics_push_lag(double seconds)
{
	observe(&mine->push_lag, lag_bounds, N_LAG, seconds < 0 ? 0 : seconds);
}

/* A growing output buffer; on allocation failure it stays failed. */
typedef struct outbuf
{
	char	   *data;
	size_t		len;
	size_t		cap;
	int			failed;
} outbuf;

static void
outf(outbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
outf(outbuf *b, const char *fmt, ...)
{
	va_list		ap;
	int			n;

	if (b->failed)
		return;
	for (;;)
	{
		va_start(ap, fmt);
		n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
		if (n < 0)
		{
			b->failed = 1;
			return;
		}
		if ((size_t) n < b->cap - b->len)
		{
			b->len += (size_t) n;
			return;
		}
		{
			size_t		ncap = b->cap * 2 + (size_t) n;
			char	   *nd = realloc(b->data, ncap);

			if (!nd)
			{
				b->failed = 1;
				return;
			}
			b->data = nd;
			b->cap = ncap;
		}
	}
}

/* The histogram at offset of metrics_slot, added up over the slots. */
static void
render_histogram(outbuf *b, const char *name, const char *labels, size_t offset,
				 const double *bounds, size_t n)
{
	long long	cum = 0;
	const char *sep = labels[0] ? "," : "";

	for (size_t i = 0; i <= n; i++)
	{
		cum += sum_or_max(SUM, offset + offsetof(histogram, buckets[i]));
		if (i < n)
			outf(b, "%s_bucket{%s%sle=\"%g\"} %lld\n", name, labels, sep, bounds[i], cum);
		else
			outf(b, "%s_bucket{%s%sle=\"+Inf\"} %lld\n", name, labels, sep, cum);
	}
	outf(b, "%s_sum%s%s%s %.6f\n", name, labels[0] ? "{" : "", labels, labels[0] ? "}" : "",
		 sum_or_max(SUM, offset + offsetof(histogram, sum_us)) / 1e6);
	outf(b, "%s_count%s%s%s %lld\n", name, labels[0] ? "{" : "", labels, labels[0] ? "}" : "",
		 sum_or_max(SUM, offset + offsetof(histogram, count)));
}

char *
kc_metrics_render(size_t *len)
{
	outbuf		b = {malloc(16384), 0, 16384, 0};

	if (!b.data)
		return NULL;
	outf(&b, "# HELP kc_http_requests_total HTTP requests by route and status code\n"
		 "# TYPE kc_http_requests_total counter\n");
	for (int r = 0; r < kc_route_count; r++)
		for (size_t i = 0; i <= N_CODES; i++)
		{
			long long	v = sum_or_max(SUM, offsetof(metrics_slot, requests[r][i]));

			if (v == 0)
				continue;
			if (i < N_CODES)
				outf(&b, "kc_http_requests_total{route=\"%s\",code=\"%d\"} %lld\n", kc_routes[r].label, codes[i], v);
			else
				outf(&b, "kc_http_requests_total{route=\"%s\",code=\"other\"} %lld\n", kc_routes[r].label, v);
		}
	outf(&b, "# HELP kc_http_request_duration_seconds request latency by route\n"
		 "# TYPE kc_http_request_duration_seconds histogram\n");
	for (int r = 0; r < kc_route_count; r++)
	{
		char		labels[64];

		snprintf(labels, sizeof(labels), "route=\"%s\"", kc_routes[r].label);
		render_histogram(&b, "kc_http_request_duration_seconds", labels,
						 offsetof(metrics_slot, latency[r]), lat_bounds, N_LAT);
	}
	outf(&b, "# HELP kc_cache_requests_total cache outcome of cached routes\n"
		 "# TYPE kc_cache_requests_total counter\n");
	for (int r = 0; r < kc_route_count; r++)
		for (int o = 0; o < KC_CACHE_OUT_COUNT; o++)
		{
			static const char *const on[] = {"hit", "miss", "bypass"};

			if (!(kc_routes[r].flags & KC_ROUTE_CACHED))
				continue;
			outf(&b, "kc_cache_requests_total{route=\"%s\",outcome=\"%s\"} %lld\n",
				 kc_routes[r].label, on[o], sum_or_max(SUM, offsetof(metrics_slot, cache_outcomes[r][o])));
		}
	for (size_t i = 0; i < sizeof(counter_defs) / sizeof(counter_defs[0]); i++)
		outf(&b, "# HELP %s %s\n# TYPE %s %s\n%s %lld\n", counter_defs[i].name, counter_defs[i].help,
			 counter_defs[i].name, counter_defs[i].type, counter_defs[i].name,
			 kc_metrics_get(counter_defs[i].c));
	for (size_t i = 0; i < sizeof(gauge_defs) / sizeof(gauge_defs[0]); i++)
		outf(&b, "# HELP %s %s\n# TYPE %s gauge\n%s %.6g\n", gauge_defs[i].name, gauge_defs[i].help,
			 gauge_defs[i].name, gauge_defs[i].name,
			 gauge_value(gauge_defs[i].g, gauge_defs[i].how));
	if (shared)
		outf(&b, "# HELP kc_gateway_processes processes serving this gateway's port (--processes)\n"
			 "# TYPE kc_gateway_processes gauge\nkc_gateway_processes %d\n"
			 "# HELP kc_gateway_processes_serving processes up, their HTTP server accepting\n"
			 "# TYPE kc_gateway_processes_serving gauge\nkc_gateway_processes_serving %d\n"
			 "# HELP kc_gateway_restarts_total processes the supervisor restarted after they died\n"
			 "# TYPE kc_gateway_restarts_total counter\nkc_gateway_restarts_total %lld\n",
			 nchildren, kc_metrics_processes_serving(), atomic_load(&shared->restarts));
	outf(&b, "# HELP kc_event_lag_seconds event entering the log (its commit) to cache invalidation\n"
		 "# TYPE kc_event_lag_seconds histogram\n");
	render_histogram(&b, "kc_event_lag_seconds", "", offsetof(metrics_slot, event_lag), lag_bounds, N_LAG);
	outf(&b, "# HELP kc_push_lag_seconds event creation to WebSocket push (handed to the hub)\n"
		 "# TYPE kc_push_lag_seconds histogram\n");
	render_histogram(&b, "kc_push_lag_seconds", "", offsetof(metrics_slot, push_lag), lag_bounds, N_LAG);
	if (b.failed)
	{
		free(b.data);
		return NULL;
	}
	*len = b.len;
	return b.data;
}
