/*
 * db.c - Postgres for request threads: the prepared statements of the read
 * side on connections of the gateway's one pool type (pool.c).
 *
 * A connection is checked out for one statement and returned at once. This
 * file says how a Postgres connection is opened (timeout set, statements
 * prepared), when it counts as broken, and how outages are logged.
 */
#include "db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"
#include "pool.h"

#define CONNECT_TIMEOUT "3"

struct kc_db
{
	char	   *conninfo;
	int			stmt_timeout_ms;
	kc_pool    *pool;
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
	/* 0.2.0's log position, or 0.1.0's id until ALTER EXTENSION (catchup.c says why) */
	{"kc_events",
		"SELECT coalesce(jsonb_agg(jsonb_build_object('id', e.cursor, 'event_type', e.event_type, "
		"'correlation_id', e.correlation_id, 'student_id', e.student_id, 'version', e.version, "
		"'created_at', e.created_at, 'payload', e.payload) ORDER BY e.cursor), '[]')::text, "
		"max(e.cursor) FROM (SELECT s.*, coalesce((to_jsonb(s)->>'pos')::bigint, s.id) AS cursor "
		"FROM kc_flow.events_since($1::bigint, $2::uuid, $3::int) AS s) AS e", 3},
	{"kc_ping", "SELECT 1", 0},
};

PGconn *
kc_db_connect_raw(const char *conninfo, const char *appname, char *err, size_t errlen)
{
	const char *const keys[] = {"dbname", "application_name", "connect_timeout", NULL};
	const char *const vals[] = {conninfo, appname, CONNECT_TIMEOUT, NULL};
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
static void *
open_conn(void *arg, char *err, size_t errlen)
{
	kc_db	   *db = arg;
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

static void
close_conn(void *conn)
{
	PQfinish(conn);
}

static bool
conn_usable(void *conn)
{
	return PQstatus(conn) == CONNECTION_OK;
}

static void
on_up(void *arg, kc_pool_state prev)
{
	if (prev == KC_POOL_DOWN)
	{
		kc_logf(KC_LOG_INFO, "postgres reconnected");
		kc_metrics_add(KC_M_PG_RECONNECTS, 1);
	}
}

static void
on_down(void *arg, kc_pool_state prev, const char *why)
{
	if (prev != KC_POOL_DOWN)
	{
		kc_logline	l;

		kc_log_begin(&l, KC_LOG_WARN, "postgres unavailable");
		kc_log_str(&l, "error", why);
		kc_log_end(&l);
	}
}

static const kc_pool_ops pg_ops = {open_conn, close_conn, conn_usable, on_up, on_down};

kc_db *
kc_db_create(const char *conninfo, int size, int stmt_timeout_ms)
{
	kc_db	   *db = calloc(1, sizeof(*db));

	if (!db)
		return NULL;
	db->conninfo = strdup(conninfo);
	db->stmt_timeout_ms = stmt_timeout_ms;
	/* a request waits for a connection at most as long as a statement may run */
	db->pool = kc_pool_create(&pg_ops, db, size, stmt_timeout_ms);
	if (!db->conninfo || !db->pool)
	{
		kc_db_destroy(db);
		return NULL;
	}
	return db;
}

void
kc_db_destroy(kc_db *db)
{
	if (!db)
		return;
	kc_pool_destroy(db->pool);
	free(db->conninfo);
	free(db);
}

bool
kc_db_up(kc_db *db)
{
	return kc_pool_get_state(db->pool) != KC_POOL_DOWN;
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
	kc_pool_lease l;
	kc_db_status st = KC_DB_UNAVAILABLE;

	*res = NULL;
	if (!kc_pool_checkout(db->pool, &l))
	{
		if (msg)
			snprintf(msg, msglen, "postgres is unavailable");
		return KC_DB_UNAVAILABLE;
	}
	for (int attempt = 0; attempt < 2; attempt++)
	{
		PGresult   *r = PQexecPrepared(l.conn, statements[stmt].name, nparams, params,
									   NULL, NULL, 0);

		if (PQresultStatus(r) == PGRES_TUPLES_OK)
		{
			*res = r;
			st = KC_DB_OK;
			break;
		}
		st = kc_db_classify(l.conn, r);
		if (msg)
			snprintf(msg, msglen, "%s", r ? PQresultErrorMessage(r) : PQerrorMessage(l.conn));
		PQclear(r);
		if (st != KC_DB_UNAVAILABLE || PQstatus(l.conn) == CONNECTION_OK)
			break;
		/* the connection died under us: retry once on a new one if it had been good */
		if (l.fresh || attempt > 0)
			break;
		if (!kc_pool_reopen(db->pool, &l))
		{
			if (msg)
				snprintf(msg, msglen, "postgres is unavailable");
			break;
		}
	}
	if (l.conn && PQstatus(l.conn) == CONNECTION_OK)
		kc_pool_checkin(db->pool, &l);
	else
		kc_pool_discard(db->pool, &l);
	return st;
}
