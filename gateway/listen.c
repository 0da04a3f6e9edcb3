/*
 * listen.c - the listener thread: LISTEN kc_flow_events, catch up, poll health.
 *
 * One thread, one Postgres connection. A notification of kc_flow_events names
 * a range of log positions, "first-last", sent once per sequencer round after
 * the round committed (docs/design.md §6); the listener then replays the log
 * from its watermark (catchup.c), which invalidates and pushes every event of
 * the range and any it missed. The catch-up also runs every 5 s when idle and
 * after every (re)connection to Postgres or recovery of Redis (a resync, which
 * waits for every committed event to have its position before it reports the
 * cache synced). About once a second kc_flow.health() is read into the gauges
 * (log_health.c). While not caught up, the cache is marked unsynced and
 * requests bypass it. While Redis is away, the events are still pushed, read
 * from the log without invalidating (catchup.c says why that is safe). Each
 * new connection first checks that the log still gives the listener's cursor
 * to the event pushed there: a failover that lost commits or a restored
 * database rewinds it (catchup.c), whatever Redis holds.
 */
#define _GNU_SOURCE
#include "listen_int.h"

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

#include "db.h"
#include "log.h"
#include "metrics.h"

#define IDLE_CATCHUP_MS 5000
#define HEALTH_POLL_MS 1000
#define MAX_BACKOFF_MS 2000

bool
kc_notify_is_old(const char *payload)
{
	return payload != NULL && payload[0] == '{';
}

bool
kc_notify_range(const char *payload, long long *first, long long *last)
{
	char	   *end;
	long long	a,
				b;

	if (!payload || *payload < '0' || *payload > '9')
		return false;
	a = strtoll(payload, &end, 10);
	if (*end != '-' || end[1] < '0' || end[1] > '9')
		return false;
	b = strtoll(end + 1, &end, 10);
	if (*end != '\0' || a < 1 || b < a || b > 9007199254740992LL)
		return false;
	*first = a;
	*last = b;
	return true;
}

/* A notification: true when it may announce positions the listener has not applied. */
static bool
handle_notify(kc_listener *l, const char *payload)
{
	long long	first,
				last;

	if (kc_notify_range(payload, &first, &last))
		return last > atomic_load(&l->watermark);
	if (kc_notify_is_old(payload))
	{
		if (!l->warned_old_schema)
			kc_logf(KC_LOG_WARN, "the database runs the kc_flow 0.1.0 schema: following its event ids "
					"until ALTER EXTENSION kc_flow UPDATE; no health gauges meanwhile");
		l->warned_old_schema = true;
		return true;
	}
	kc_logf(KC_LOG_WARN, "ignoring malformed notification: %.200s", payload);
	return false;
}

/* Sleeps up to ms unless woken for stop; returns false when stopping. */
static bool
nap(kc_listener *l, int ms)
{
	struct pollfd p = {l->wake[0], POLLIN, 0};

	poll(&p, 1, ms);
	return !atomic_load(&l->stop);
}

/*
 * Redis is away: every request bypasses it, so invalidating is moot, and the
 * events go to the subscriber straight from the log (the resync that ends the
 * outage applies their invalidations before Redis is used again). A listener
 * that never pushed starts at the log's settled position; one below the log's
 * floor jumps to its head, its WebSocket clients told to refetch. False when
 * the connection failed.
 */
static bool
push_without_redis(kc_listener *l)
{
	long long	start;
	int			rc;

	if (atomic_load(&l->watermark) == 0)
	{
		if (!kc_catchup_start_position(l, &start))
			return PQstatus(l->conn) == CONNECTION_OK;
		atomic_store(&l->watermark, start);
		l->ident[0] = '\0';	/* unknown: the end alone checks it */
	}
	rc = kc_catchup_run(l, atomic_load(&l->watermark), false);
	/* below the log's floor: the sockets refetch (the resync after the outage purges) */
	if (rc == -2 && kc_catchup_start_position(l, &start))
	{
		kc_catchup_skip_to(l, start);
		rc = kc_catchup_run(l, start, false);
	}
	return rc >= 0 || PQstatus(l->conn) == CONNECTION_OK;
}

/*
 * Handles the notifications libpq holds; true when one asks for a catch-up.
 * Those that arrived while one of our own queries ran (a catch-up, a health
 * poll) were read off the socket with its result, so poll() would not report
 * them: they are looked for before each wait as well as after it.
 */
static bool
take_notifies(kc_listener *l)
{
	PGnotify   *n;
	bool		notified = false;

	while ((n = PQnotifies(l->conn)) != NULL)
	{
		if (handle_notify(l, n->extra))
			notified = true;
		PQfreemem(n);
	}
	return notified;
}

/* Serves one connection until it fails or the listener stops. */
static void
serve_connection(kc_listener *l)
{
	struct timespec last_catchup,
				last_health = {0, 0};
	PGresult   *r = PQexec(l->conn, "LISTEN kc_flow_events");

	if (PQresultStatus(r) != PGRES_COMMAND_OK)
	{
		kc_logf(KC_LOG_WARN, "LISTEN failed: %s", PQresultErrorMessage(r));
		PQclear(r);
		return;
	}
	PQclear(r);
	kc_logf(KC_LOG_INFO, "listening on kc_flow_events");
	/* a new connection may reach a promoted standby or a restored database */
	if (kc_catchup_check_cursor(l) < 0)
		return;
	clock_gettime(CLOCK_MONOTONIC, &last_catchup);
	l->synced = false;

	while (!atomic_load(&l->stop))
	{
		struct pollfd p[2] = {{PQsocket(l->conn), POLLIN, 0}, {l->wake[0], POLLIN, 0}};
		bool		notified;
		struct timespec now;

		if (!l->synced || !kc_cache_usable(l->cache))
		{
			kc_resync rs = kc_catchup_resync(l);

			if (rs == KC_RESYNC_REDIS_DOWN && !push_without_redis(l))
				break;
			if (rs == KC_RESYNC_FAILED)
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
		kc_metrics_set(KC_G_LISTEN_CONNECTED, 1);
		notified = take_notifies(l);
		if (poll(p, 2, notified ? 0 : 500) < 0 && !notified)
			continue;
		if (p[1].revents)
			break;
		if (!PQconsumeInput(l->conn))
		{
			kc_logf(KC_LOG_WARN, "listen connection lost: %s", PQerrorMessage(l->conn));
			break;
		}
		if (take_notifies(l))
			notified = true;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (l->synced && (notified ||
						  (now.tv_sec - last_catchup.tv_sec) * 1000 > IDLE_CATCHUP_MS))
		{
			int			rc = kc_catchup_run(l, atomic_load(&l->watermark), true);

			last_catchup = now;
			if (rc < 0 && PQstatus(l->conn) != CONNECTION_OK)
				break;
			/*
			 * A query that failed on a healthy connection (say, while ALTER
			 * EXTENSION replaced the log's functions) keeps LISTEN: the next
			 * round resyncs, as after any gap, instead of reconnecting.
			 */
			if (rc <= 0)
			{
				l->synced = false;
				kc_cache_set_unsynced(l->cache);
			}
		}
		if ((now.tv_sec - last_health.tv_sec) * 1000 + (now.tv_nsec - last_health.tv_nsec) / 1000000
			>= HEALTH_POLL_MS)
		{
			last_health = now;
			if (!kc_log_health_poll(l))
				break;
		}
	}
	atomic_store(&l->connected, false);
	kc_metrics_set(KC_G_LISTEN_CONNECTED, 0);
	atomic_store(&l->lag_known, false);
	/* events may commit unseen from now on: requests must bypass the cache */
	kc_cache_set_unsynced(l->cache);
	l->synced = false;
}

static void *
listener_main(void *arg)
{
	kc_listener *l = arg;
	int			backoff = 100;

	pthread_setname_np(pthread_self(), "kc-listen");
	bool		ever = false;
	kc_db_down	down = KC_DB_DOWN_NONE;

	while (!atomic_load(&l->stop))
	{
		char		err[1024];

		l->conn = kc_db_connect_raw(l->conninfo, "kc-gateway-listener", err, sizeof(err));
		if (!l->conn)
		{
			kc_logline	line;
			kc_db_down	was = down;

			/* only standbys (a URL of standbys, or a failover under way): said once, retried */
			down = kc_db_why_down(err);
			if (down == KC_DB_DOWN_STANDBYS && was != down)
				kc_db_log_standbys("listen", l->conninfo, err);
			kc_log_begin(&line, KC_LOG_WARN, "listen connection failed");
			kc_log_str(&line, "error", err);
			kc_log_int(&line, "retryMs", backoff);
			kc_log_end(&line);
			if (!nap(l, backoff))
				break;
			backoff = backoff * 2 > MAX_BACKOFF_MS ? MAX_BACKOFF_MS : backoff * 2;
			continue;
		}
		down = KC_DB_DOWN_NONE;
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
kc_listener_spawn(const char *target, kc_cache *cache, kc_event_fn on_event, kc_skip_fn on_skip,
				  kc_rewind_fn on_rewind, void *arg, void *(*run) (void *))
{
	kc_listener *l = calloc(1, sizeof(*l));

	if (!l)
		return NULL;
	l->conninfo = strdup(target);
	l->cache = cache;
	l->on_event = on_event;
	l->on_skip = on_skip;
	l->on_rewind = on_rewind;
	l->arg = arg;
	if (!l->conninfo || pipe(l->wake) != 0)
	{
		free(l->conninfo);
		free(l);
		return NULL;
	}
	if (pthread_create(&l->thread, NULL, run, l) != 0)
	{
		close(l->wake[0]);
		close(l->wake[1]);
		free(l->conninfo);
		free(l);
		return NULL;
	}
	return l;
}

kc_listener *
kc_listener_start(const char *conninfo, kc_cache *cache, kc_event_fn on_event, kc_skip_fn on_skip,
				  kc_rewind_fn on_rewind, void *arg)
{
	return kc_listener_spawn(conninfo, cache, on_event, on_skip, on_rewind, arg, listener_main);
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

bool
kc_listener_lag(kc_listener *l, double *seconds)
{
	struct timespec now;
	long long	age_ms;

	if (!atomic_load(&l->lag_known))
		return false;
	/* a listener stuck in a query polls no more: the lag grows by the poll's age */
	clock_gettime(CLOCK_MONOTONIC, &now);
	age_ms = (long long) now.tv_sec * 1000 + now.tv_nsec / 1000000 - atomic_load(&l->lag_polled_ms);
	*seconds = atomic_load(&l->lag_us) / 1e6 + (age_ms > 2 * HEALTH_POLL_MS ? age_ms / 1e3 : 0);
	return true;
}
