/*
 * listen.c - LISTEN kc_flow_events, invalidate, catch up.
 *
 * Two paths apply an event's invalidation, and both are idempotent because the
 * invalidation script is a no-op once the fence covers the event's version:
 *  - fast path: the NOTIFY payload (student, version) is applied as soon as it
 *    arrives, so the home view is fresh within milliseconds of the commit;
 *  - catch-up: kc_flow.events_since(watermark) is read after every batch of
 *    notifications and on every (re)connect to Postgres or Redis. It returns
 *    events in a gap-free order, so the watermark kept in Redis only ever moves
 *    past events that are applied. Anything the fast path missed (the gateway
 *    was down, Redis or Postgres was away) is applied here.
 * While not caught up, the cache is marked unsynced and requests bypass it.
 */
#include "listen.h"

#include <cjson/cJSON.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "db.h"
#include "log.h"
#include "metrics.h"

#define CATCHUP_BATCH 1000
#define APPLIED_SLOTS 8192
#define IDLE_CATCHUP_MS 5000
#define MAX_BACKOFF_MS 2000

typedef struct applied_slot
{
	long long	id;
	double		at;				/* wall-clock seconds the fast path applied it */
} applied_slot;

struct kc_listener
{
	char	   *conninfo;
	kc_cache   *cache;
	kc_event_fn on_event;
	void	   *arg;
	pthread_t	thread;
	int			wake[2];		/* pipe: written to stop the thread */
	_Atomic bool stop;
	_Atomic bool connected;
	_Atomic long long watermark;
	PGconn	   *conn;
	bool		synced;			/* this thread's view; the cache has the shared one */
	applied_slot applied[APPLIED_SLOTS];
};

static double
wall_now(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (double) tv.tv_sec + tv.tv_usec / 1e6;
}

static void
log_invalidated(const char *student, const char *type, int existed_mask,
				long long version, double ms)
{
	for (int v = 0; v < 2; v++)
	{
		kc_logline	l;
		char		key[128];

		kc_cache_key(key, sizeof(key), (kc_view) v, student);
		kc_log_begin(&l, KC_LOG_INFO, "Cache INVALIDATED");
		kc_log_str(&l, "studentId", student);
		kc_log_str(&l, "cacheKey", key);
		kc_log_str(&l, "reason", type);
		kc_log_bool(&l, "existedBefore", (existed_mask & (1 << v)) != 0);
		kc_log_int(&l, "version", version);
		kc_log_ms(&l, "durationMs", ms);
		kc_log_end(&l);
	}
}

/* Invalidates for one event; false when Redis failed. */
static bool
apply_event(kc_listener *l, const kc_event_note *ev)
{
	struct timespec t0,
				t1;
	int			mask = 0;
	int			r;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	r = kc_cache_invalidate(l->cache, ev->student_id, ev->version, &mask);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (r < 0)
		return false;
	if (r == 1)
	{
		kc_metrics_add(KC_M_INVALIDATIONS, 1);
		log_invalidated(ev->student_id, ev->type, mask, ev->version,
						(t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6);
	}
	else
	{
		kc_metrics_add(KC_M_INVALIDATIONS_SKIPPED, 1);
		kc_logf(KC_LOG_DEBUG, "invalidation of %s at version %lld already applied",
				ev->student_id, ev->version);
	}
	return true;
}

/* True when j is a number holding an integer in [min, 2^53] (exact in a double). */
static bool
json_int_in(const cJSON *j, double min, long long *out)
{
	double		v;

	if (!cJSON_IsNumber(j))
		return false;
	v = j->valuedouble;
	if (!(v >= min && v <= 9007199254740992.0) || (double) (long long) v != v)
		return false;
	*out = (long long) v;
	return true;
}

bool
kc_notify_parse(const char *payload, kc_event_note *ev, kc_notify_buf *buf)
{
	cJSON	   *j = cJSON_Parse(payload);
	const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
	const cJSON *student = cJSON_GetObjectItemCaseSensitive(j, "student_id");
	const cJSON *corr = cJSON_GetObjectItemCaseSensitive(j, "correlation_id");
	long long	id,
				version;
	bool		ok;

	ok = json_int_in(cJSON_GetObjectItemCaseSensitive(j, "id"), 1, &id) &&
		json_int_in(cJSON_GetObjectItemCaseSensitive(j, "version"), 0, &version) &&
		cJSON_IsString(student) && kc_uuid_normalize(student->valuestring, buf->student);
	if (ok)
	{
		if (cJSON_IsString(type) && type->valuestring[0] &&
			strlen(type->valuestring) < sizeof(buf->type))
			strcpy(buf->type, type->valuestring);
		else
			strcpy(buf->type, "UNKNOWN");
		memset(ev, 0, sizeof(*ev));
		ev->id = id;
		ev->version = version;
		ev->type = buf->type;
		ev->student_id = buf->student;
		if (cJSON_IsString(corr) && kc_uuid_normalize(corr->valuestring, buf->correlation))
			ev->correlation_id = buf->correlation;
	}
	cJSON_Delete(j);
	return ok;
}

/* Applies a NOTIFY payload right away (fast path). */
static void
handle_notify(kc_listener *l, const char *payload)
{
	kc_event_note ev;
	kc_notify_buf buf;

	if (!kc_notify_parse(payload, &ev, &buf))
	{
		kc_logf(KC_LOG_WARN, "ignoring malformed notification: %.200s", payload);
		return;
	}
	kc_metrics_add(KC_M_EVENTS, 1);
	if (l->synced && kc_cache_usable(l->cache) && apply_event(l, &ev))
	{
		applied_slot *s = &l->applied[ev.id % APPLIED_SLOTS];

		s->id = ev.id;
		s->at = wall_now();
	}
}

/*
 * Replays events_since(watermark) until the end of the settled log, applying
 * those the fast path has not, and advances the watermark in Redis after each
 * batch. Returns 1 done, 0 Redis failed, -1 Postgres failed.
 */
static int
catch_up(kc_listener *l)
{
	for (;;)
	{
		char		after[24],
					batch[16];
		const char *params[2] = {after, batch};
		PGresult   *r;
		int			rows;
		long long	last = atomic_load(&l->watermark);

		snprintf(after, sizeof(after), "%lld", last);
		snprintf(batch, sizeof(batch), "%d", CATCHUP_BATCH);
		r = PQexecParams(l->conn,
						 "SELECT id, event_type, student_id, correlation_id, version, "
						 "extract(epoch from created_at)::float8, "
						 "to_json(created_at)#>>'{}', payload::text "
						 "FROM kc_flow.events_since($1::bigint, NULL, $2::int)",
						 2, NULL, params, NULL, NULL, 0);
		if (PQresultStatus(r) != PGRES_TUPLES_OK)
		{
			kc_logf(KC_LOG_WARN, "catch-up query failed: %s", PQresultErrorMessage(r));
			PQclear(r);
			return -1;
		}
		rows = PQntuples(r);
		for (int i = 0; i < rows; i++)
		{
			kc_event_note ev;
			double		created = strtod(PQgetvalue(r, i, 5), NULL);
			applied_slot *s;

			ev.id = strtoll(PQgetvalue(r, i, 0), NULL, 10);
			ev.type = PQgetvalue(r, i, 1);
			ev.student_id = PQgetvalue(r, i, 2);
			ev.correlation_id = PQgetisnull(r, i, 3) ? NULL : PQgetvalue(r, i, 3);
			ev.version = strtoll(PQgetvalue(r, i, 4), NULL, 10);
			ev.created_at = PQgetvalue(r, i, 6);
			ev.payload = PQgetvalue(r, i, 7);
			s = &l->applied[ev.id % APPLIED_SLOTS];
			if (s->id == ev.id)
			{
				kc_metrics_event_lag(s->at - created);
				s->id = 0;
			}
			else
			{
				if (!apply_event(l, &ev))
				{
					PQclear(r);
					return 0;
				}
				kc_metrics_event_lag(wall_now() - created);
			}
			/* invalidated (just now or by the fast path): the push may go */
			if (l->on_event)
				l->on_event(&ev, l->arg);
			last = ev.id;
		}
		PQclear(r);
		if (rows > 0)
		{
			if (kc_cache_set_watermark(l->cache, last) < 0)
				return 0;
			atomic_store(&l->watermark, last);
		}
		if (rows < CATCHUP_BATCH)
			return 1;
	}
}

/*
 * Makes the cache trustworthy again: loads the watermark (or, for an empty
 * Redis, starts from the settled end of the log after purging stray views),
 * replays, and marks the cache synced. false when it must be retried.
 */
static bool
resync(kc_listener *l)
{
	unsigned long epoch = kc_cache_down_epoch(l->cache);
	long long	wm = 0;
	int			found;
	int			rc;

	l->synced = false;
	if (kc_cache_ping(l->cache) < 0)
		return false;
	found = kc_cache_get_watermark(l->cache, &wm);
	if (found < 0)
		return false;
	if (found == 0)
	{
		PGresult   *r = PQexec(l->conn, "SELECT kc_flow.settled_event_id()");
		long long	purged;

		if (PQresultStatus(r) != PGRES_TUPLES_OK)
		{
			kc_logf(KC_LOG_WARN, "cannot read the event log position: %s", PQresultErrorMessage(r));
			PQclear(r);
			return false;
		}
		wm = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
		PQclear(r);
		purged = kc_cache_purge_views(l->cache);
		if (purged < 0 || kc_cache_set_watermark(l->cache, wm) < 0)
			return false;
		kc_logf(KC_LOG_INFO, "no watermark in redis: starting at event %lld, %lld stale views purged",
				wm, purged);
	}
	atomic_store(&l->watermark, wm);
	kc_metrics_add(KC_M_CATCHUPS, 1);
	rc = catch_up(l);
	if (rc <= 0)
		return false;
	l->synced = kc_cache_set_synced(l->cache, epoch);
	if (l->synced)
	{
		kc_logline	line;

		kc_log_begin(&line, KC_LOG_INFO, "cache synced");
		kc_log_int(&line, "watermark", atomic_load(&l->watermark));
		kc_log_int(&line, "replayedFrom", wm);
		kc_log_end(&line);
	}
	return l->synced;
}

/* Sleeps up to ms unless woken for stop; returns false when stopping. */
static bool
nap(kc_listener *l, int ms)
{
	struct pollfd p = {l->wake[0], POLLIN, 0};

	poll(&p, 1, ms);
	return !atomic_load(&l->stop);
}

/* Serves one connection until it fails or the listener stops. */
static void
serve_connection(kc_listener *l)
{
	struct timespec last_catchup;
	PGresult   *r = PQexec(l->conn, "LISTEN kc_flow_events");

	if (PQresultStatus(r) != PGRES_COMMAND_OK)
	{
		kc_logf(KC_LOG_WARN, "LISTEN failed: %s", PQresultErrorMessage(r));
		PQclear(r);
		return;
	}
	PQclear(r);
	kc_logf(KC_LOG_INFO, "listening on kc_flow_events");
	clock_gettime(CLOCK_MONOTONIC, &last_catchup);
	l->synced = false;

	while (!atomic_load(&l->stop))
	{
		struct pollfd p[2] = {{PQsocket(l->conn), POLLIN, 0}, {l->wake[0], POLLIN, 0}};
		bool		notified = false;
		PGnotify   *n;
		struct timespec now;

		if (!l->synced || !kc_cache_usable(l->cache))
		{
			if (!resync(l))
			{
				if (PQstatus(l->conn) != CONNECTION_OK)
					break;
				if (!nap(l, 500))
					break;
				/* keep reading notifications so the socket buffer drains */
			}
			clock_gettime(CLOCK_MONOTONIC, &last_catchup);
		}
		/* the first replay was tried: from here on readiness may be reported */
		atomic_store(&l->connected, true);
		if (poll(p, 2, 500) < 0)
			continue;
		if (p[1].revents)
			break;
		if (!PQconsumeInput(l->conn))
		{
			kc_logf(KC_LOG_WARN, "listen connection lost: %s", PQerrorMessage(l->conn));
			break;
		}
		while ((n = PQnotifies(l->conn)) != NULL)
		{
			handle_notify(l, n->extra);
			PQfreemem(n);
			notified = true;
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (l->synced && (notified ||
						  (now.tv_sec - last_catchup.tv_sec) * 1000 > IDLE_CATCHUP_MS))
		{
			int			rc = catch_up(l);

			last_catchup = now;
			if (rc < 0)
				break;
			if (rc == 0)
				l->synced = false;
		}
	}
	atomic_store(&l->connected, false);
	/* events may commit unseen from now on: requests must bypass the cache */
	kc_cache_set_unsynced(l->cache);
	l->synced = false;
}

static void *
listener_main(void *arg)
{
	kc_listener *l = arg;
	int			backoff = 100;
	bool		ever = false;

	while (!atomic_load(&l->stop))
	{
		char		err[512];

		l->conn = kc_db_connect_raw(l->conninfo, "kc-gateway-listener", err, sizeof(err));
		if (!l->conn)
		{
			kc_logline	line;

			kc_log_begin(&line, KC_LOG_WARN, "listen connection failed");
			kc_log_str(&line, "error", err);
			kc_log_int(&line, "retryMs", backoff);
			kc_log_end(&line);
			if (!nap(l, backoff))
				break;
			backoff = backoff * 2 > MAX_BACKOFF_MS ? MAX_BACKOFF_MS : backoff * 2;
			continue;
		}
		if (ever)
			kc_metrics_add(KC_M_LISTEN_RECONNECTS, 1);
		ever = true;
		backoff = 100;
		serve_connection(l);
		PQfinish(l->conn);
		l->conn = NULL;
		if (!atomic_load(&l->stop))
			nap(l, 100);
	}
	return NULL;
}

kc_listener *
kc_listener_start(const char *conninfo, kc_cache *cache, kc_event_fn on_event, void *arg)
{
	kc_listener *l = calloc(1, sizeof(*l));

	if (!l)
		return NULL;
	l->conninfo = strdup(conninfo);
	l->cache = cache;
	l->on_event = on_event;
	l->arg = arg;
	if (!l->conninfo || pipe(l->wake) != 0)
	{
		free(l->conninfo);
		free(l);
		return NULL;
	}
	if (pthread_create(&l->thread, NULL, listener_main, l) != 0)
	{
		close(l->wake[0]);
		close(l->wake[1]);
		free(l->conninfo);
		free(l);
		return NULL;
	}
	return l;
}

void
kc_listener_stop(kc_listener *l)
{
	if (!l)
		return;
	atomic_store(&l->stop, true);
	if (write(l->wake[1], "x", 1) < 0)
		kc_logf(KC_LOG_WARN, "cannot wake the listener");
	pthread_join(l->thread, NULL);
	close(l->wake[0]);
	close(l->wake[1]);
	free(l->conninfo);
	free(l);
}

bool
kc_listener_connected(kc_listener *l)
{
	return atomic_load(&l->connected);
}

long long
kc_listener_watermark(kc_listener *l)
{
	return atomic_load(&l->watermark);
}
