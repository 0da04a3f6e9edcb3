/*
 * routes_admin.h - what the operator console's files share (docs/gateway.md,
 * "Operator console"):
 *   routes_admin.c        /admin, search, stats, retry; the admin check and answers
 *   routes_admin_story.c  a payment's story
 *   routes_admin_trace.c  what this gateway did with each recent event (the
 *                         listener's subscriber, kc_ws_on_event, feeds it)
 *   routes_admin_stats.c  the figures sampled every few seconds; the clock
 *   routes_admin_db.c     the console's own Postgres connections
 */
#ifndef KC_ROUTES_ADMIN_H
#define KC_ROUTES_ADMIN_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "db.h"
#include "listen.h"
#include "request.h"

struct cJSON;

#define KC_TRACE_SLOTS 65536	/* events remembered (the last ones applied) */
#define KC_STATS_INTERVAL_S 5	/* one stats sample every ... */
#define KC_STATS_SAMPLES 180	/* ... kept for 15 minutes */
#define KC_SEARCH_MAX_CHARS 200 /* longer search texts get 400 */

/* routes_admin.c: every /api/v1/admin route first: 403 unless an admin (or auth is off). */
bool		kc_admin_only(kc_request *req, kc_response *resp);
/* A failed statement: 503 while Postgres is away, 404 (not_found) for P0002, 400 for class 22, else 500. */
void		kc_admin_db_error(kc_request *req, kc_response *resp, kc_db_status st,
							  const char *msg, const char *not_found);
/* Sends a cJSON document (consumed) with status, never cached. */
void		kc_admin_send_json(kc_response *resp, int status, struct cJSON *doc);
/* Adds name: the ISO time of t, or null when t <= 0. */
void		kc_admin_add_time(struct cJSON *o, const char *name, double t);

/* Wall-clock time, seconds since the epoch. */
double		kc_admin_now(void);
/* ISO 8601 UTC with milliseconds ("2026-11-25T21:29:17.409Z"); out has 32 bytes. */
void		kc_admin_iso(double t, char out[32]);
/*
 * Parses a timestamp as Postgres writes it in JSON ("2026-11-25T21:29:17.409191+00:00",
 * any offset, fraction optional) into seconds since the epoch; false when it cannot.
 */
bool		kc_admin_parse_ts(const char *s, double *out);
/* True when s (len bytes) is valid UTF-8 without NUL; *chars gets the number of characters. */
bool		kc_admin_utf8_ok(const char *s, size_t len, size_t *chars);

/*
 * The listener's subscriber calls this for every event it handed over (after
 * its invalidation): reached is when the subscriber got it, pushed when it was
 * handed to the WebSocket hub (0: it was not). Records the invalidation and
 * push times of the event, feeds kc_push_lag_seconds, kc_sessions_expected_total,
 * kc_sessions_created_total and the stats, and starts the stats sampler.
 * An id at or below the highest already recorded (a replay after a listener
 * reconnect) changes nothing.
 */
void		kc_admin_trace_event(kc_app *app, const kc_event_note *ev, double reached,
								 double pushed, int sockets);

typedef enum kc_trace_status
{
	KC_TRACE_RECORDED,			/* the entry is filled */
	KC_TRACE_NOT_YET,			/* above the newest event applied: not applied yet */
	KC_TRACE_OLDER,				/* older than the record holds (evicted) */
	KC_TRACE_BEFORE_START,		/* before the first event this gateway applied */
	KC_TRACE_NOT_SEEN			/* within the record, but never handed over */
} kc_trace_status;

typedef struct kc_trace_entry
{
	long long	id;
	double		created;		/* the event's created_at (0: unknown) */
	double		invalidated;	/* when its invalidation was applied */
	bool		invalidated_exact;	/* false: an upper bound (when the subscriber got it) */
	double		pushed;			/* when it was handed to the WebSocket hub; 0: not */
	int			sockets;		/* WebSocket connections open then */
} kc_trace_entry;

kc_trace_status kc_admin_trace_lookup(long long id, kc_trace_entry *out);

/* What the record holds: the first id applied, the oldest and newest held, since when. */
typedef struct kc_trace_window
{
	long long	first;			/* 0: nothing applied yet */
	long long	oldest;
	long long	newest;
	double		since;
	int			capacity;
} kc_trace_window;

void		kc_admin_trace_window(kc_trace_window *w);

/* One event applied: its commit -> invalidation and commit -> push delays, ms (-1: unknown). */
void		kc_admin_stats_event(double lag_ms, double push_ms);
/* Starts the stats sampler thread once (later calls do nothing). */
void		kc_admin_sampler_start(kc_app *app);
/* The sampled stats as a JSON array (malloc'd), oldest first. */
char	   *kc_admin_samples_json(double *since);

/*
 * Runs one statement on the console's own Postgres connections (two, opened
 * on first use, statement timeout --pg-timeout-ms). A read (retry_once) is
 * retried once on a new connection when the one it used died. KC_DB_OK with
 * *res set (PQclear it), or the failure with the server's message in msg.
 */
kc_db_status kc_admin_exec(kc_app *app, const char *sql, int nparams,
						   const char *const *params, bool retry_once,
						   PGresult **res, char *msg, size_t msglen);

#endif
