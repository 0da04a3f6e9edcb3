/*
 * db.c - Postgres for request threads: the prepared statements of the read
 * side on connections of the gateway's one pool type (pool.c).
 *
 * A connection is checked out for one statement and returned at once. This
 * file says how a Postgres connection is opened (timeout set, statements
 * prepared), when it counts as broken, and how outages are logged.
 */
#include "db.h"

#include <stdatomic.h>
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
	const char *name;			/* "postgres" or "replica": the words of its log lines */
	int			stmt_timeout_ms;
	kc_pool    *pool;
	_Atomic int down;			/* a kc_db_down: why the last connect failed */
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
	kc_db	   *db = arg;

	atomic_store(&db->down, KC_DB_DOWN_NONE);
	if (prev == KC_POOL_DOWN)
	{
		kc_logf(KC_LOG_INFO, "%s reconnected", db->name);
		kc_metrics_add(KC_M_PG_RECONNECTS, 1);
	}
}

static void
on_down(void *arg, kc_pool_state prev, const char *why)
{
	kc_db	   *db = arg;
	kc_db_down	kind = kc_db_why_down(why);
	kc_db_down	before = (kc_db_down) atomic_exchange(&db->down, kind);

	if (kind == KC_DB_DOWN_STANDBYS && before != kind)
		kc_db_log_standbys(db->name, db->conninfo, why);
	else if (prev != KC_POOL_DOWN)
	{
		kc_logline	l;
		char		msg[64];

		snprintf(msg, sizeof(msg), "%s unavailable", db->name);
		kc_log_begin(&l, KC_LOG_WARN, msg);
		kc_log_str(&l, "error", why);
		kc_log_end(&l);
	}
}

kc_db_down
kc_db_why_down(const char *err)
{
	int			standbys = 0,
				others = 0;

	/* libpq writes one "connection to server at ... failed: reason" line per host tried */
	for (const char *line = err; line && *line;)
	{
		const char *end = strchr(line, '\n');
		size_t		len = end ? (size_t) (end - line) : strlen(line);
		char		buf[512];

		snprintf(buf, sizeof(buf), "%.*s", (int) len, line);
		line = end ? end + 1 : NULL;
		if (strncmp(buf, "connection to server", 20) != 0)
			continue;
		if (strstr(buf, "session is read-only") || strstr(buf, "server is in hot standby mode"))
			standbys++;
		else
			others++;
	}
	if (standbys == 0)
		return KC_DB_DOWN_UNREACHABLE;
	return others == 0 ? KC_DB_DOWN_STANDBYS : KC_DB_DOWN_STANDBYS_AND_UNREACHABLE;
}

void
kc_db_log_standbys(const char *name, const char *conninfo, const char *err)
{
	PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
	const char *hosts = NULL,
			   *ports = NULL;
	kc_logline	l;
	char		msg[160];

	for (PQconninfoOption *o = opts; o && o->keyword; o++)
	{
		if (strcmp(o->keyword, "host") == 0)
			hosts = o->val;
		else if (strcmp(o->keyword, "port") == 0)
			ports = o->val;
	}
	snprintf(msg, sizeof(msg), "%s: no read-write server, only standbys; retrying until one is promoted",
			 name);
	kc_log_begin(&l, KC_LOG_WARN, msg);
	kc_log_str(&l, "hosts", hosts ? hosts : "(default)");
	kc_log_str(&l, "ports", ports ? ports : "(default)");
	kc_log_str(&l, "error", err);
	kc_log_end(&l);
	PQconninfoFree(opts);
}

const char *
kc_db_down_reason(kc_db *db)
{
	switch ((kc_db_down) atomic_load(&db->down))
	{
		case KC_DB_DOWN_STANDBYS:
			return "postgres: no read-write server (only standbys)";
		case KC_DB_DOWN_STANDBYS_AND_UNREACHABLE:
			return "postgres: no read-write server (standbys and unreachable hosts)";
		default:
			return "postgres unavailable";
	}
}

static const kc_pool_ops pg_ops = {open_conn, close_conn, conn_usable, on_up, on_down};

kc_db *
kc_db_create(const char *conninfo, int size, int stmt_timeout_ms, const char *name)
{
	kc_db	   *db = calloc(1, sizeof(*db));

	if (!db)
		return NULL;
	db->name = name;
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

/* A deadlock's victim or a serialization failure: rolled back, worth running again. */
static bool
rolled_back(const PGresult *res)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

	return state && (strcmp(state, "40P01") == 0 || strcmp(state, "40001") == 0);
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
	if (strcmp(state, "KC410") == 0)
		return KC_DB_GONE;
	if (strncmp(state, "08", 2) == 0 || strncmp(state, "57", 2) == 0 ||
		strncmp(state, "53", 2) == 0 || rolled_back(res))
		return KC_DB_UNAVAILABLE;
	return KC_DB_ERROR;
}

/* A statement rolled back by Postgres is run again at most this often. */
#define RERUNS 2

/*
 * Runs a prepared statement (stmt) or, with stmt < 0, the text sql, on a
 * pooled connection: kc_db_exec's promises. A statement Postgres rolled back
 * as a deadlock's victim or a serialization failure (it waited on a lock that
 * DDL such as ALTER EXTENSION kc_flow UPDATE holds) is run again, up to
 * RERUNS times: it is a statement of its own, so nothing of it stayed; after
 * that it counts as unavailable (503). A connection that was good and died
 * under the statement is replaced once and the statement run on the new one.
 */
static kc_db_status
run(kc_db *db, int stmt, const char *sql, int nparams, const char *const *params,
	PGresult **res, char *msg, size_t msglen)
{
	kc_pool_lease l;
	kc_db_status st = KC_DB_UNAVAILABLE;
	int			reruns = 0;
	bool		reopened = false;

	*res = NULL;
	if (!kc_pool_checkout(db->pool, &l))
	{
		if (msg)
			snprintf(msg, msglen, "postgres is unavailable");
		return KC_DB_UNAVAILABLE;
	}
	/* the first run, the reruns, the run on a new connection */
	for (int runs = 0; runs < 1 + RERUNS + 1; runs++)
	{
		PGresult   *r = stmt >= 0 ?
			PQexecPrepared(l.conn, statements[stmt].name, nparams, params, NULL, NULL, 0) :
			PQexecParams(l.conn, sql, nparams, NULL, params, NULL, NULL, 0);

		if (PQresultStatus(r) == PGRES_TUPLES_OK)
		{
			*res = r;
			st = KC_DB_OK;
			break;
		}
		st = kc_db_classify(l.conn, r);
		if (msg)
			snprintf(msg, msglen, "%s", r ? PQresultErrorMessage(r) : PQerrorMessage(l.conn));
		if (rolled_back(r) && reruns < RERUNS)
		{
			kc_logf(KC_LOG_WARN, "statement rolled back by postgres (%s), running it again: %.200s",
					PQresultErrorField(r, PG_DIAG_SQLSTATE), PQresultErrorMessage(r));
			PQclear(r);
			reruns++;
			continue;
		}
		PQclear(r);
		/* an answer, or a dead connection that was new or is the replacement: done */
		if (st != KC_DB_UNAVAILABLE || PQstatus(l.conn) == CONNECTION_OK || l.fresh || reopened)
			break;
		if (!kc_pool_reopen(db->pool, &l))
		{
			if (msg)
				snprintf(msg, msglen, "postgres is unavailable");
			break;
		}
		reopened = true;
	}
	if (l.conn && PQstatus(l.conn) == CONNECTION_OK)
		kc_pool_checkin(db->pool, &l);
	else
		kc_pool_discard(db->pool, &l);
	return st;
}

kc_db_status
kc_db_exec(kc_db *db, kc_db_stmt stmt, int nparams, const char *const *params,
		   PGresult **res, char *msg, size_t msglen)
{
	return run(db, (int) stmt, NULL, nparams, params, res, msg, msglen);
}

/* Not prepared: a 0.1.0 schema, which the gateway also serves, has no log_floor(). */
bool
kc_db_log_bounds(kc_db *db, long long *floor_pos, long long *head_pos)
{
	PGresult   *res;

	if (run(db, -1, "SELECT kc_flow.log_floor(), kc_flow.settled_event_id()", 0, NULL,
			&res, NULL, 0) != KC_DB_OK)
		return false;
	*floor_pos = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	*head_pos = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
	PQclear(res);
	return true;
}
