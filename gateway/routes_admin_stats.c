/*
 * routes_admin_stats.c - the operator console's figures of the last minutes
 * (GET /api/v1/admin/stats), and the console's one clock.
 *
 * A sampler thread (started by the first event or admin request) closes an
 * interval every KC_STATS_INTERVAL_S seconds into a ring of KC_STATS_SAMPLES
 * samples: events applied, their commit -> invalidation and commit -> push
 * delays (mean, max), invalidation errors, WebSocket connections, and the
 * queue depth and dead letters read from Postgres (kc_flow.admin_queue_counts(),
 * on the console's own connections, routes_admin_db.c).
 */
#include "routes_admin.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "metrics.h"

double
kc_admin_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double) ts.tv_sec + ts.tv_nsec / 1e9;
}

void
kc_admin_iso(double t, char out[32])
{
	time_t		secs = (time_t) t;
	int			ms = (int) ((t - (double) secs) * 1000.0);
	struct tm	tm;
	size_t		n;

	if (ms < 0)
		ms = 0;
	if (ms > 999)
		ms = 999;
	gmtime_r(&secs, &tm);
	n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, 32 - n, ".%03dZ", ms);
}

/* The interval the sampler closes next. */
typedef struct interval_acc
{
	long long	events;
	long long	lag_n;
	double		lag_sum;
	double		lag_max;
	long long	push_n;
	double		push_sum;
	double		push_max;
} interval_acc;

static pthread_mutex_t acc_lock = PTHREAD_MUTEX_INITIALIZER;
static interval_acc acc;

void
kc_admin_stats_event(double lag_ms, double push_ms)
{
	pthread_mutex_lock(&acc_lock);
	acc.events++;
	if (lag_ms >= 0)
	{
		acc.lag_n++;
		acc.lag_sum += lag_ms;
		if (lag_ms > acc.lag_max)
			acc.lag_max = lag_ms;
	}
	if (push_ms >= 0)
	{
		acc.push_n++;
		acc.push_sum += push_ms;
		if (push_ms > acc.push_max)
			acc.push_max = push_ms;
	}
	pthread_mutex_unlock(&acc_lock);
}

typedef struct stats_sample
{
	double		t;				/* end of the interval */
	double		seconds;		/* its length */
	interval_acc a;
	long long	invalidation_errors;	/* during the interval */
	long long	ws_connections;
	long long	queue_depth;	/* -1: Postgres did not answer */
	long long	queue_due;
	long long	dead_letters;
} stats_sample;

static pthread_mutex_t stats_lock = PTHREAD_MUTEX_INITIALIZER;
static stats_sample samples[KC_STATS_SAMPLES];
static int	n_samples;
static int	next_sample;
static double sampling_since;
static pthread_mutex_t sampler_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_bool sampler_started;

/* Reads the queue figures; false when Postgres did not answer (logged once per outage). */
static bool
read_queue(kc_app *app, stats_sample *s)
{
	static bool failing;
	PGresult   *res = NULL;
	char		msg[256] = "";
	kc_db_status st = kc_admin_exec(app,
									"SELECT (c->>'queue_depth')::bigint, (c->>'queue_due')::bigint, "
									"(c->>'dead_letters')::bigint FROM kc_flow.admin_queue_counts() AS c",
									0, NULL, true, &res, msg, sizeof(msg));

	if (st != KC_DB_OK)
	{
		if (!failing)
			kc_logf(KC_LOG_WARN, "admin stats: cannot read the queue figures: %s", msg);
		failing = true;
		return false;
	}
	if (failing)
		kc_logf(KC_LOG_INFO, "admin stats: reading the queue figures again");
	failing = false;
	s->queue_depth = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	s->queue_due = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
	s->dead_letters = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
	PQclear(res);
	return true;
}

/*
 * Closes the interval that began at *last_t. The first call only reads the
 * queue: its interval would be too short to say anything about the rate.
 */
static void
take_sample(kc_app *app, double *last_t, long long *last_errors, bool first)
{
	stats_sample s;
	long long	errors = kc_metrics_get(KC_M_INVALIDATION_ERRORS);

	memset(&s, 0, sizeof(s));
	s.queue_depth = s.queue_due = s.dead_letters = -1;
	read_queue(app, &s);
	s.t = kc_admin_now();
	s.ws_connections = kc_metrics_get(KC_M_WS_CONNECTIONS);
	if (!first)
	{
		s.seconds = s.t - *last_t;
		*last_t = s.t;
		s.invalidation_errors = errors - *last_errors;
		*last_errors = errors;
		pthread_mutex_lock(&acc_lock);
		s.a = acc;
		memset(&acc, 0, sizeof(acc));
		pthread_mutex_unlock(&acc_lock);
	}

	pthread_mutex_lock(&stats_lock);
	samples[next_sample] = s;
	next_sample = (next_sample + 1) % KC_STATS_SAMPLES;
	if (n_samples < KC_STATS_SAMPLES)
		n_samples++;
	pthread_mutex_unlock(&stats_lock);
}

static void *
sampler_main(void *arg)
{
	kc_app	   *app = arg;
	double		last_t = kc_admin_now();
	long long	last_errors = kc_metrics_get(KC_M_INVALIDATION_ERRORS);

	pthread_mutex_lock(&stats_lock);
	sampling_since = last_t;
	pthread_mutex_unlock(&stats_lock);
	/* a first point at once (the queue), so that a console opened now has one; then on the interval */
	take_sample(app, &last_t, &last_errors, true);
	for (;;)
	{
		double		now = kc_admin_now();
		double		next = ((long long) (now / KC_STATS_INTERVAL_S) + 1) * (double) KC_STATS_INTERVAL_S;
		struct timespec d;

		if (next - last_t < 1.0)
			next += KC_STATS_INTERVAL_S;	/* no interval shorter than a second */

		d.tv_sec = (time_t) (next - now);
		d.tv_nsec = (long) (((next - now) - (double) d.tv_sec) * 1e9);
		while (nanosleep(&d, &d) != 0 && errno == EINTR)
			;
		take_sample(app, &last_t, &last_errors, false);
	}
	return NULL;
}

void
kc_admin_sampler_start(kc_app *app)
{
	pthread_t	t;
	pthread_attr_t attr;

	if (!app || atomic_load(&sampler_started))
		return;
	pthread_mutex_lock(&sampler_lock);
	if (!atomic_load(&sampler_started))
	{
		/* runs until the process exits; it holds no lock while it sleeps */
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&t, &attr, sampler_main, app) != 0)
			kc_logf(KC_LOG_WARN, "admin stats: cannot start the sampler thread");
		pthread_attr_destroy(&attr);
		atomic_store(&sampler_started, true);	/* not retried: the console says no samples */
	}
	pthread_mutex_unlock(&sampler_lock);
}

/* A number, or null when negative (unknown). */
static void
add_count(cJSON *o, const char *name, long long v)
{
	if (v < 0)
		cJSON_AddNullToObject(o, name);
	else
		cJSON_AddNumberToObject(o, name, (double) v);
}

/* Milliseconds rounded to microseconds, or null when nothing was measured. */
static void
add_ms(cJSON *o, const char *name, long long n, double v)
{
	if (n <= 0)
		cJSON_AddNullToObject(o, name);
	else
		cJSON_AddNumberToObject(o, name, (double) (long long) (v * 1000.0 + 0.5) / 1000.0);
}

char *
kc_admin_samples_json(double *since)
{
	cJSON	   *arr = cJSON_CreateArray();
	char	   *out;

	if (!arr)
		return NULL;
	pthread_mutex_lock(&stats_lock);
	*since = sampling_since;
	for (int k = 0; k < n_samples; k++)
	{
		const stats_sample *s = &samples[(next_sample - n_samples + k + KC_STATS_SAMPLES) % KC_STATS_SAMPLES];
		cJSON	   *o = cJSON_CreateObject();

		if (!o)
			break;
		cJSON_AddNumberToObject(o, "t", (double) (long long) (s->t * 1000.0));
		cJSON_AddNumberToObject(o, "seconds", (double) (long long) (s->seconds * 1000.0 + 0.5) / 1000.0);
		cJSON_AddNumberToObject(o, "events", (double) s->a.events);
		cJSON_AddNumberToObject(o, "events_per_s",
								s->seconds > 0.001 ? (double) (long long) (s->a.events / s->seconds * 100.0 + 0.5) / 100.0 : 0);
		add_ms(o, "lag_avg_ms", s->a.lag_n, s->a.lag_n ? s->a.lag_sum / s->a.lag_n : 0);
		add_ms(o, "lag_max_ms", s->a.lag_n, s->a.lag_max);
		add_ms(o, "push_avg_ms", s->a.push_n, s->a.push_n ? s->a.push_sum / s->a.push_n : 0);
		add_ms(o, "push_max_ms", s->a.push_n, s->a.push_max);
		add_count(o, "queue_depth", s->queue_depth);
		add_count(o, "queue_due", s->queue_due);
		add_count(o, "dead_letters", s->dead_letters);
		cJSON_AddNumberToObject(o, "invalidation_errors", (double) s->invalidation_errors);
		cJSON_AddNumberToObject(o, "ws_connections", (double) s->ws_connections);
		cJSON_AddItemToArray(arr, o);
	}
	pthread_mutex_unlock(&stats_lock);
	out = cJSON_PrintUnformatted(arr);
	cJSON_Delete(arr);
	return out;
}
