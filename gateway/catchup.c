/*
 * catchup.c - the listener's replay of the event log into the cache.
 *
 * The log (kc_flow.events_since) hands out events by position, in commit
 * order, and a reader that sees a position sees every smaller one: so the
 * watermark kept in Redis (the last position applied) only ever moves past
 * events whose invalidation is applied, and a replay from it misses nothing.
 * Each event is invalidated first and handed to the subscriber (the
 * WebSocket push) after, in position order. Invalidation is idempotent (the
 * fence), so replaying an event twice is harmless.
 *
 * After an outage (gateway restart, Redis restart or restore from an older
 * dump, the LISTEN connection lost) resync replays from the watermark, but
 * first waits until every event committed before it began has its position
 * (kc_flow.log_covers of a snapshot taken at the start): only then can "read
 * to the end of the log" mean "every committed event applied", and only then
 * is the cache marked synced. Until then requests bypass the cache.
 *
 * Two cursors: the watermark in Redis (invalidations applied) and the
 * listener's own (events handed to the subscriber). While Redis is away the
 * listener still replays the log without invalidating, so pushes go on (every
 * read bypasses Redis meanwhile); the Redis watermark stays where it was, so
 * the resync that ends the outage re-applies the invalidation of every event
 * pushed during it before a request may use Redis again, and pushes only the
 * events past the listener's cursor: none twice.
 *
 * A cursor below the log's floor (kc_flow.log_floor(): a trim removed events
 * this gateway never applied) cannot be replayed: every cached view is purged
 * and both cursors start again at the log's head, as for an empty Redis; when
 * the listener's own cursor was below, the subscriber is told (on_skip), so
 * that the WebSocket clients refetch.
 *
 * A log can also be rewound under both cursors: an asynchronous failover that
 * lost the primary's last commits, or a restored backup, gives positions again
 * from its own end, to other events. Each cursor therefore keeps the identity
 * of the event at its position ("id@logged_at"; Redis keeps it next to the
 * watermark, written by the same script), and a cursor whose position the log
 * now gives to another event, or does not give at all, finds the log rewound:
 * every view is purged, both cursors go to the log's end and the subscriber is
 * told (the WebSocket hub then tells every socket to refetch). The listener's
 * own cursor is checked on each new connection, whatever Redis says; the
 * Redis watermark at each resync. A watermark written without an identity (a
 * gateway before 0.2.0) is only checked against the log's end.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "listen_int.h"
#include "log.h"
#include "metrics.h"

#define CATCHUP_BATCH 1000
/*
 * "id@logged_at" of an event row e of events_since, logged_at in microseconds
 * since the epoch (whatever the session's time zone; created_at on 0.1.0,
 * which has no logged_at)
 */
#define IDENT_SQL "e.id::text || '@' || (extract(epoch from " \
	"coalesce((to_jsonb(e)->>'logged_at')::timestamptz, e.created_at)) * 1000000)::bigint::text"
#define COVER_WAIT_MS 2000		/* how long resync waits for the sequencer */
#define COVER_POLL_MS 10

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

/*
 * Invalidates the n events of a batch, in one Redis round trip; false when
 * Redis failed (then none of them counts as applied).
 */
static bool
apply_events(kc_listener *l, int n, const kc_event_note *ev)
{
	kc_invalidation *inv = malloc((size_t) n * sizeof(*inv));
	int		   *mask = malloc((size_t) n * sizeof(*mask));
	struct timespec t0,
				t1;
	double		ms;
	int			r = -1;

	if (inv && mask)
	{
		for (int i = 0; i < n; i++)
		{
			inv[i].student = ev[i].student_id;
			inv[i].version = ev[i].version;
		}
		clock_gettime(CLOCK_MONOTONIC, &t0);
		r = kc_cache_invalidate_batch(l->cache, n, inv, mask);
		clock_gettime(CLOCK_MONOTONIC, &t1);
	}
	else
		kc_logf(KC_LOG_ERROR, "out of memory invalidating %d events", n);
	if (r == 0)
	{
		ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
		kc_metrics_add(KC_M_INVALIDATION_BATCHES, 1);
		for (int i = 0; i < n; i++)
		{
			if (mask[i] >= 0)
			{
				kc_metrics_add(KC_M_INVALIDATIONS, 1);
				log_invalidated(ev[i].student_id, ev[i].type, mask[i], ev[i].version, ms);
			}
			else
			{
				kc_metrics_add(KC_M_INVALIDATIONS_SKIPPED, 1);
				kc_logf(KC_LOG_DEBUG, "invalidation of %s at version %lld already applied",
						ev[i].student_id, ev[i].version);
			}
		}
	}
	free(inv);
	free(mask);
	return r == 0;
}

int
kc_catchup_run(kc_listener *l, long long from, bool invalidate)
{
	long long	last = from;
	char		last_ident[KC_EVENT_IDENT_MAX];
	/* the batch's events, pointing into its result */
	kc_event_note *evs = malloc(CATCHUP_BATCH * sizeof(*evs));
	int			rc = 1;

	if (!evs)
	{
		kc_logf(KC_LOG_ERROR, "out of memory for a catch-up batch");
		return -1;
	}
	for (;;)
	{
		char		after[24],
					batch[16];
		const char *params[2] = {after, batch};
		PGresult   *r;
		int			rows;

		snprintf(after, sizeof(after), "%lld", last);
		snprintf(batch, sizeof(batch), "%d", CATCHUP_BATCH);
		/*
		 * Written for both logs: 0.2.0's events_since gives pos and logged_at,
		 * 0.1.0's (between the library's upgrade and ALTER EXTENSION) gives
		 * neither, and there the id is the cursor. Existing events keep their
		 * id as position in the update, so one watermark serves both.
		 */
		r = PQexecParams(l->conn,
						 "SELECT coalesce((to_jsonb(e)->>'pos')::bigint, e.id), e.event_type, e.student_id, "
						 "e.correlation_id, e.version, "
						 "extract(epoch from coalesce((to_jsonb(e)->>'logged_at')::timestamptz, e.created_at))::float8, "
						 "to_json(e.created_at)#>>'{}', e.payload::text, " IDENT_SQL " "
						 "FROM kc_flow.events_since($1::bigint, NULL, $2::int) AS e",
						 2, NULL, params, NULL, NULL, 0);
		if (PQresultStatus(r) != PGRES_TUPLES_OK)
		{
			const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);

			rc = state && strcmp(state, "KC410") == 0 ? -2 : -1;
			if (rc == -1)
				kc_logf(KC_LOG_WARN, "catch-up query failed: %s", PQresultErrorMessage(r));
			PQclear(r);
			break;
		}
		rows = PQntuples(r);
		for (int i = 0; i < rows; i++)
		{
			kc_event_note *ev = &evs[i];

			ev->id = strtoll(PQgetvalue(r, i, 0), NULL, 10);
			ev->type = PQgetvalue(r, i, 1);
			ev->student_id = PQgetvalue(r, i, 2);
			ev->correlation_id = PQgetisnull(r, i, 3) ? NULL : PQgetvalue(r, i, 3);
			ev->version = strtoll(PQgetvalue(r, i, 4), NULL, 10);
			ev->created_at = PQgetvalue(r, i, 6);
			ev->payload = PQgetvalue(r, i, 7);
			ev->more = i < rows - 1;
		}
		/* every event of the batch invalidated before any of them is pushed */
		if (rows > 0 && invalidate && !apply_events(l, rows, evs))
		{
			PQclear(r);
			rc = 0;
			break;
		}
		for (int i = 0; i < rows; i++)
		{
			const kc_event_note *ev = &evs[i];

			last = ev->id;
			snprintf(last_ident, sizeof(last_ident), "%s", PQgetvalue(r, i, 8));
			if (ev->id <= atomic_load(&l->watermark))
				continue;		/* pushed before: its invalidation only was owed */
			kc_metrics_add(KC_M_EVENTS, 1);
			/* from the event's entry in the log (about its commit) to its invalidation */
			kc_metrics_event_lag(wall_now() - strtod(PQgetvalue(r, i, 5), NULL));
			/* invalidated, or Redis away and bypassed by every read: the push may go */
			if (l->on_event)
				l->on_event(ev, l->arg);
			atomic_store(&l->watermark, ev->id);
			memcpy(l->ident, last_ident, sizeof(l->ident));
		}
		PQclear(r);
		if (rows > 0 && invalidate && kc_cache_set_watermark(l->cache, last, last_ident) < 0)
		{
			rc = 0;
			break;
		}
		if (rows < CATCHUP_BATCH)
			break;
	}
	free(evs);
	return rc;
}

/* One-value query on the listener's connection; malloc'd text, NULL on failure. */
static char *
query_value(kc_listener *l, const char *sql, const char *param, const char *what)
{
	PGresult   *r = PQexecParams(l->conn, sql, param ? 1 : 0, NULL, &param, NULL, NULL, 0);
	char	   *v = NULL;

	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
		v = strdup(PQgetvalue(r, 0, 0));
	else
		kc_logf(KC_LOG_WARN, "cannot read %s: %s", what, PQresultErrorMessage(r));
	PQclear(r);
	return v;
}

/*
 * Waits until every event visible in snapshot has a log position (the workers
 * give them within milliseconds); false when that takes longer than
 * COVER_WAIT_MS (no sequencer running) or Postgres failed.
 */
static bool
wait_covered(kc_listener *l, const char *snapshot)
{
	char	   *has_log = query_value(l, "SELECT to_regprocedure('kc_flow.log_covers(pg_snapshot)') IS NOT NULL",
									  NULL, "whether the database has the 0.2.0 log");

	if (!has_log)
		return false;
	if (strcmp(has_log, "f") == 0)
	{
		/* 0.1.0's events_since is gap-free by its horizon: nothing to wait for */
		free(has_log);
		return true;
	}
	free(has_log);
	for (int waited = 0; waited <= COVER_WAIT_MS; waited += COVER_POLL_MS)
	{
		char	   *v = query_value(l, "SELECT kc_flow.log_covers($1::pg_snapshot)", snapshot,
									"whether the log covers the committed events");
		bool		covered = v && strcmp(v, "t") == 0;

		free(v);
		if (!v || covered)
			return covered;
		if (atomic_load(&l->stop))
			return false;
		usleep(COVER_POLL_MS * 1000);
	}
	kc_logf(KC_LOG_WARN, "committed events still have no log position after %d ms "
			"(are the kc_flow workers running?); requests bypass the cache meanwhile", COVER_WAIT_MS);
	return false;
}

/*
 * The identity of the event at log position pos into ident ("" when the log
 * has none there, or pos is 0); KC410 (pos below the floor) counts as none
 * too. False when Postgres failed.
 */
static bool
identity_at(kc_listener *l, long long pos, char *ident, size_t len)
{
	char		before[24];
	const char *param = before;
	PGresult   *r;
	bool		ok;

	ident[0] = '\0';
	if (pos <= 0)
		return true;
	snprintf(before, sizeof(before), "%lld", pos - 1);
	r = PQexecParams(l->conn,
					 "SELECT coalesce((to_jsonb(e)->>'pos')::bigint, e.id), " IDENT_SQL " "
					 "FROM kc_flow.events_since($1::bigint, NULL, 1) AS e",
					 1, NULL, &param, NULL, NULL, 0);
	ok = PQresultStatus(r) == PGRES_TUPLES_OK;
	if (ok && PQntuples(r) == 1 && strtoll(PQgetvalue(r, 0, 0), NULL, 10) == pos)
		snprintf(ident, len, "%s", PQgetvalue(r, 0, 1));
	else if (!ok)
	{
		const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);

		ok = state && strcmp(state, "KC410") == 0;
		if (!ok)
			kc_logf(KC_LOG_WARN, "cannot read the event at log position %lld: %s",
					pos, PQresultErrorMessage(r));
	}
	PQclear(r);
	return ok;
}

/*
 * Whether a cursor at pos that handed over the event ident names finds the
 * log rewound under it: 1 when the log ends below pos or gives pos to another
 * event, 0 when not or when it cannot tell (no identity kept: the end alone
 * decides), -1 when Postgres failed.
 */
static int
cursor_rewound(kc_listener *l, long long pos, const char *ident, long long end)
{
	char		now[KC_EVENT_IDENT_MAX];

	if (pos > end)
		return 1;
	if (pos <= 0 || !ident[0])
		return 0;
	if (!identity_at(l, pos, now, sizeof(now)))
		return -1;
	/* trimmed since (""): the catch-up's KC410 purges then */
	return now[0] && strcmp(now, ident) != 0;
}

/*
 * The log was found rewound: positions up to end now name other events than
 * the ones applied and pushed. Moves the listener's cursor to end (with the
 * identity there), has the next resync purge Redis, and tells the subscriber.
 * False when Postgres failed.
 */
static bool
rewind_to(kc_listener *l, long long end, const char *whose, long long pos)
{
	kc_logline	line;

	kc_log_begin(&line, KC_LOG_WARN, "the event log was rewound under a cursor (a failover that lost "
				 "commits, or a restored database): cached views purged, sockets told to refetch, "
				 "resuming at its end");
	kc_log_str(&line, "cursor", whose);
	kc_log_int(&line, "position", pos);
	kc_log_int(&line, "logEnd", end);
	kc_log_end(&line);
	if (!identity_at(l, end, l->ident, sizeof(l->ident)))
		return false;
	kc_metrics_add(KC_M_LOG_REWINDS, 1);
	atomic_store(&l->watermark, end);
	l->rewound = true;
	if (l->on_rewind)
		l->on_rewind(end, l->arg);
	return true;
}

int
kc_catchup_check_cursor(kc_listener *l)
{
	long long	pos = atomic_load(&l->watermark);
	long long	end;
	int			rewound;

	if (pos <= 0)
		return 0;				/* nothing handed over yet */
	if (!kc_catchup_start_position(l, &end))
		return -1;
	rewound = cursor_rewound(l, pos, l->ident, end);
	if (rewound == 1 && !rewind_to(l, end, "listener", pos))
		return -1;
	return rewound;
}

/*
 * The Redis watermark wm, and the identity of the event at event_pos (at or
 * below wm; 0: none kept), against the log. Returns 1 when the log was
 * rewound under it, or under the listener's cursor (found earlier on this
 * connection): the caller starts again as with an empty Redis. 0 when not,
 * -1 when Postgres failed.
 */
static int
check_rewound(kc_listener *l, long long wm, long long event_pos, const char *ident)
{
	long long	end;
	int			rewound;

	if (l->rewound)
		return 1;				/* found under the listener's cursor: purge */
	if (!kc_catchup_start_position(l, &end))
		return -1;
	rewound = wm > end ? 1 : cursor_rewound(l, event_pos, ident, end);
	if (rewound == 1 && !rewind_to(l, end, "redis", wm))
		return -1;
	return rewound;
}

/*
 * A cursor below the log's floor: a trim removed events it had not applied,
 * so no replay can tell which views they made stale. Purges every cached view,
 * moves both cursors to the log's head and returns it in *from; false when
 * Postgres (-1) or Redis (0, in *rc) failed.
 */
void
kc_catchup_skip_to(kc_listener *l, long long head)
{
	char	   *floor_pos;

	if (atomic_load(&l->watermark) >= head)
		return;
	floor_pos = query_value(l, "SELECT kc_flow.log_floor()", NULL, "the log's floor");
	{
		kc_logline	line;

		kc_log_begin(&line, KC_LOG_WARN, "events were trimmed before this gateway pushed them: "
					 "live WebSockets told to refetch");
		kc_log_int(&line, "pushed", atomic_load(&l->watermark));
		kc_log_int(&line, "logHead", head);
		kc_log_end(&line);
	}
	if (l->on_skip)
		l->on_skip(floor_pos ? strtoll(floor_pos, NULL, 10) : head, head, l->arg);
	free(floor_pos);
	atomic_store(&l->watermark, head);
	if (!identity_at(l, head, l->ident, sizeof(l->ident)))
		l->ident[0] = '\0';	/* unknown: the log's end alone checks the cursor */
}

static bool
restart_at_head(kc_listener *l, long long *from, int *rc)
{
	long long	head;
	long long	purged;
	char		ident[KC_EVENT_IDENT_MAX];

	*rc = -1;
	if (!kc_catchup_start_position(l, &head) || !identity_at(l, head, ident, sizeof(ident)))
		return false;
	purged = kc_cache_purge_views(l->cache);
	*rc = 0;
	if (purged < 0 || kc_cache_reset_watermark(l->cache, head, ident) < 0)
		return false;
	kc_metrics_add(KC_M_CATCHUPS_BELOW_FLOOR, 1);
	{
		kc_logline	line;

		kc_log_begin(&line, KC_LOG_WARN, "the watermark is below the event log's floor (events trimmed "
					 "before this gateway applied them): cached views purged, resuming at the log's head");
		kc_log_int(&line, "watermark", *from);
		kc_log_int(&line, "logHead", head);
		kc_log_int(&line, "purged", purged);
		kc_log_end(&line);
	}
	/* the subscriber may have missed events too: then its clients must refetch */
	kc_catchup_skip_to(l, head);
	*from = head;
	return true;
}

kc_resync
kc_catchup_resync(kc_listener *l)
{
	unsigned long epoch = kc_cache_down_epoch(l->cache);
	long long	wm = 0,
				wm_event,
				pushed,
				from;
	int			found;
	int			rc;
	char	   *snapshot;
	char		ident[KC_EVENT_IDENT_MAX];

	l->synced = false;
	if (kc_cache_ping(l->cache) < 0)
		return KC_RESYNC_REDIS_DOWN;
	/* every event committed before this moment must be applied before "synced" */
	snapshot = query_value(l, "SELECT pg_current_snapshot()::text", NULL, "a snapshot");
	if (!snapshot)
		return KC_RESYNC_FAILED;
	if (!wait_covered(l, snapshot))
	{
		free(snapshot);
		return KC_RESYNC_FAILED;
	}
	free(snapshot);
	found = kc_cache_get_watermark(l->cache, &wm, &wm_event, ident, sizeof(ident));
	if (found < 0)
		return KC_RESYNC_REDIS_DOWN;
	if (found == 1)
	{
		int			rewound = check_rewound(l, wm, wm_event, ident);

		if (rewound < 0)
			return KC_RESYNC_FAILED;
		if (rewound == 1)
			found = 0;			/* start again as with an empty Redis */
	}
	if (found == 0)
	{
		long long	purged;

		if (!kc_catchup_start_position(l, &wm) || !identity_at(l, wm, ident, sizeof(ident)))
			return KC_RESYNC_FAILED;
		purged = kc_cache_purge_views(l->cache);
		if (purged < 0 || kc_cache_reset_watermark(l->cache, wm, ident) < 0)
			return KC_RESYNC_REDIS_DOWN;
		l->rewound = false;
		wm_event = wm;
		kc_logf(KC_LOG_INFO, "no usable watermark in redis: starting at log position %lld, %lld stale views purged",
				wm, purged);
	}
	/*
	 * Invalidate from the older of the two cursors, push past the listener's:
	 * a Redis behind it (an outage, an older dump) gets the invalidations of
	 * the events pushed meanwhile; a Redis ahead of it (another gateway moved
	 * it) leaves no event of the gap unpushed. A listener that never pushed
	 * starts at the Redis watermark.
	 */
	pushed = atomic_load(&l->watermark);
	if (pushed == 0)
	{
		atomic_store(&l->watermark, wm);
		/* checked against the log above, when Redis keeps it */
		if (wm_event == wm)
			memcpy(l->ident, ident, sizeof(l->ident));
		else
			l->ident[0] = '\0';
	}
	from = pushed > 0 && pushed < wm ? pushed : wm;
	kc_metrics_add(KC_M_CATCHUPS, 1);
	rc = kc_catchup_run(l, from, true);
	if (rc == -2 && restart_at_head(l, &from, &rc))
		rc = kc_catchup_run(l, from, true);
	switch (rc)
	{
		case 0:
			return KC_RESYNC_REDIS_DOWN;
		case -1:
		case -2:
			return KC_RESYNC_FAILED;
	}
	l->synced = kc_cache_set_synced(l->cache, epoch);
	if (!l->synced)
		return KC_RESYNC_REDIS_DOWN;
	{
		kc_logline	line;

		kc_log_begin(&line, KC_LOG_INFO, "cache synced");
		kc_log_int(&line, "watermark", atomic_load(&l->watermark));
		kc_log_int(&line, "replayedFrom", from);
		kc_log_end(&line);
	}
	return KC_RESYNC_OK;
}

bool
kc_catchup_start_position(kc_listener *l, long long *pos)
{
	char	   *v = query_value(l, "SELECT kc_flow.settled_event_id()", NULL, "the log position");

	if (!v)
		return false;
	*pos = strtoll(v, NULL, 10);
	free(v);
	return true;
}
