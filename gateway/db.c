/*
 * db.c - Postgres connection pool for request threads.
 *
 * A connection is checked out for one statement and returned at once, so the
 * mutex is held only for a push/pop; no lock is held while a query runs.
 */
#include "db.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "metrics.h"

#define RETRY_CONNECT_MS 500

struct kc_db
{
	char	   *conninfo;
	int			size;
	int			stmt_timeout_ms;
	PGconn	  **conns;			/* slot i: NULL until opened */
	int		   *free_slots;		/* stack of slot numbers */
	int			n_free;
	pthread_mutex_t lock;
	pthread_cond_t available;
	_Atomic long long down_until_ms;	/* fail fast until then */
	_Atomic bool up;
	_Atomic bool was_down;
};

static const struct
{
	const char *name;
	const char *sql;
	int			nparams;
}			statements[KC_STMT_COUNT] = {
	{"kc_home", "SELECT v::text, (v->>'version')::bigint FROM kc_flow.student_home($1::uuid) AS v", 1},
	{"kc_learning", "SELECT v::text, (v->>'version')::bigint FROM kc_flow.student_learning($1::uuid) AS v", 1},
	{"kc_sessions", "SELECT kc_flow.student_sessions($1::uuid, $2::text, $3::timestamptz, "
	"$4::timestamptz, $5::text, $6::int)::text", 6},
	{"kc_events",
		"SELECT coalesce(jsonb_agg(jsonb_build_object('id', e.id, 'event_type', e.event_type, "
		"'correlation_id', e.correlation_id, 'student_id', e.student_id, 'version', e.version, "
		"'created_at', e.created_at, 'payload', e.payload) ORDER BY e.id), '[]')::text, "
		"max(e.id) FROM kc_flow.events_since($1::bigint, $2::uuid, $3::int) AS e", 3},
	{"kc_ping", "SELECT 1", 0},
};

static long long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

PGconn *
kc_db_connect_raw(const char *conninfo, const char *appname, char *err, size_t errlen)
{
	const char *const keys[] = {"dbname", "application_name", "connect_timeout", NULL};
	const char *const vals[] = {conninfo, appname, "3", NULL};
	PGconn	   *conn = PQconnectdbParams(keys, vals, 1);

	if (conn == NULL || PQstatus(conn) != CONNECTION_OK)
	{
		if (err)
			snprintf(err, errlen, "%s", conn ? PQerrorMessage(conn) : "out of memory");
		PQfinish(conn);
		return NULL;
	}
	return conn;
}

/* Opens a request connection: timeout set, statements prepared. */
static PGconn *
open_conn(kc_db *db, char *err, size_t errlen)
{
	PGconn	   *conn = kc_db_connect_raw(db->conninfo, "kc-gateway", err, errlen);
	char		sql[64];
	PGresult   *r;

	if (!conn)
		return NULL;
	snprintf(sql, sizeof(sql), "SET statement_timeout = %d", db->stmt_timeout_ms);
	r = PQexec(conn, sql);
	PQclear(r);
	for (int i = 0; i < KC_STMT_COUNT; i++)
	{
		r = PQprepare(conn, statements[i].name, statements[i].sql, statements[i].nparams, NULL);
		if (PQresultStatus(r) != PGRES_COMMAND_OK)
		{
			snprintf(err, errlen, "cannot prepare %s: %s", statements[i].name,
					 PQresultErrorMessage(r));
			PQclear(r);
			PQfinish(conn);
			return NULL;
		}
		PQclear(r);
	}
	return conn;
}

kc_db *
kc_db_create(const char *conninfo, int size, int stmt_timeout_ms)
{
	kc_db	   *db = calloc(1, sizeof(*db));

	if (!db)
		return NULL;
	db->conninfo = strdup(conninfo);
	db->size = size;
	db->stmt_timeout_ms = stmt_timeout_ms;
	db->conns = calloc((size_t) size, sizeof(PGconn *));
	db->free_slots = calloc((size_t) size, sizeof(int));
	if (!db->conninfo || !db->conns || !db->free_slots)
	{
		kc_db_destroy(db);
		return NULL;
	}
	for (int i = 0; i < size; i++)
		db->free_slots[i] = i;
	db->n_free = size;
	pthread_mutex_init(&db->lock, NULL);
	pthread_cond_init(&db->available, NULL);
	atomic_store(&db->up, true);
	return db;
}

void
kc_db_destroy(kc_db *db)
{
	if (!db)
		return;
	for (int i = 0; db->conns && i < db->size; i++)
		PQfinish(db->conns[i]);
	free(db->conns);
	free(db->free_slots);
	free(db->conninfo);
	free(db);
}

bool
kc_db_up(kc_db *db)
{
	return atomic_load(&db->up);
}

static int
checkout(kc_db *db)
{
	int			slot;

	pthread_mutex_lock(&db->lock);
	while (db->n_free == 0)
		pthread_cond_wait(&db->available, &db->lock);
	slot = db->free_slots[--db->n_free];
	pthread_mutex_unlock(&db->lock);
	return slot;
}

static void
checkin(kc_db *db, int slot)
{
	pthread_mutex_lock(&db->lock);
	db->free_slots[db->n_free++] = slot;
	pthread_cond_signal(&db->available);
	pthread_mutex_unlock(&db->lock);
}

/* Makes sure slot holds a live connection; false when Postgres is down. */
static bool
ensure_conn(kc_db *db, int slot, char *msg, size_t msglen)
{
	char		err[512];

	if (db->conns[slot] && PQstatus(db->conns[slot]) == CONNECTION_OK)
		return true;
	PQfinish(db->conns[slot]);
	db->conns[slot] = NULL;
	if (now_ms() < atomic_load(&db->down_until_ms))
	{
		if (msg)
			snprintf(msg, msglen, "postgres is unavailable");
		return false;
	}
	db->conns[slot] = open_conn(db, err, sizeof(err));
	if (!db->conns[slot])
	{
		atomic_store(&db->down_until_ms, now_ms() + RETRY_CONNECT_MS);
		if (!atomic_exchange(&db->was_down, true))
		{
			kc_logline	l;

			kc_log_begin(&l, KC_LOG_WARN, "postgres unavailable");
			kc_log_str(&l, "error", err);
			kc_log_end(&l);
		}
		atomic_store(&db->up, false);
		if (msg)
			snprintf(msg, msglen, "postgres is unavailable");
		return false;
	}
	if (atomic_exchange(&db->was_down, false))
	{
		kc_logf(KC_LOG_INFO, "postgres reconnected");
		kc_metrics_add(KC_M_PG_RECONNECTS, 1);
	}
	atomic_store(&db->up, true);
	return true;
}

kc_db_status
kc_db_classify(PGconn *conn, const PGresult *res)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

	if (conn == NULL || PQstatus(conn) != CONNECTION_OK)
		return KC_DB_UNAVAILABLE;
	if (state == NULL)
		return res ? KC_DB_ERROR : KC_DB_UNAVAILABLE;
	if (strcmp(state, "P0002") == 0)
		return KC_DB_NOT_FOUND;
	if (strncmp(state, "22", 2) == 0)
		return KC_DB_BAD_INPUT;
	if (strncmp(state, "08", 2) == 0 || strncmp(state, "57", 2) == 0 ||
		strncmp(state, "53", 2) == 0)
		return KC_DB_UNAVAILABLE;
	return KC_DB_ERROR;
}

kc_db_status
kc_db_exec(kc_db *db, kc_db_stmt stmt, int nparams, const char *const *params,
		   PGresult **res, char *msg, size_t msglen)
{
	int			slot = checkout(db);
	kc_db_status st = KC_DB_UNAVAILABLE;

	*res = NULL;
	for (int attempt = 0; attempt < 2; attempt++)
	{
		bool		was_open = db->conns[slot] != NULL;
		PGresult   *r;

		if (!ensure_conn(db, slot, msg, msglen))
		{
			st = KC_DB_UNAVAILABLE;
			break;
		}
		r = PQexecPrepared(db->conns[slot], statements[stmt].name, nparams, params, NULL, NULL, 0);
		if (PQresultStatus(r) == PGRES_TUPLES_OK)
		{
			*res = r;
			st = KC_DB_OK;
			break;
		}
		st = kc_db_classify(db->conns[slot], r);
		if (msg)
			snprintf(msg, msglen, "%s", r ? PQresultErrorMessage(r) : PQerrorMessage(db->conns[slot]));
		PQclear(r);
		if (st != KC_DB_UNAVAILABLE || PQstatus(db->conns[slot]) == CONNECTION_OK)
			break;
		/* the connection died under us: drop it, retry once if it had been good */
		PQfinish(db->conns[slot]);
		db->conns[slot] = NULL;
		if (!was_open)
			break;
	}
	checkin(db, slot);
	return st;
}
