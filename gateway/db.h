/*
 * db.h - the pool of Postgres connections that requests use.
 *
 * Connections live in a kc_pool (pool.h): they are opened lazily, carry
 * prepared statements for the read functions of
 * extension/schema/50_read_side.sql, and are re-opened after a failure. While
 * Postgres is unreachable callers fail fast (no connect attempt more than
 * every half second), so the gateway answers 503 quickly; a request waits for
 * a free connection at most the statement timeout.
 */
#ifndef KC_DB_H
#define KC_DB_H

#include <stdbool.h>
#include <libpq-fe.h>

typedef struct kc_db kc_db;

typedef enum kc_db_status
{
	KC_DB_OK = 0,
	KC_DB_NOT_FOUND,			/* SQLSTATE P0002: unknown student */
	KC_DB_BAD_INPUT,			/* SQLSTATE class 22: a parameter was invalid */
	KC_DB_UNAVAILABLE,			/* Postgres down, restarting, timing out, or a deadlock victim thrice */
	KC_DB_GONE,					/* SQLSTATE KC410: a cursor below the log's floor (refetch) */
	KC_DB_ERROR					/* anything else: a bug or a schema mismatch */
} kc_db_status;

/* Prepared statement names, in the order db.c declares them. */
typedef enum kc_db_stmt
{
	KC_STMT_HOME = 0,
	KC_STMT_LEARNING,
	KC_STMT_SESSIONS,
	KC_STMT_EVENTS,
	KC_STMT_PING,
	KC_STMT_COUNT
} kc_db_stmt;

/* name ("postgres", "replica") starts its log lines; a static string. */
kc_db	   *kc_db_create(const char *conninfo, int size, int stmt_timeout_ms, const char *name);
void		kc_db_destroy(kc_db *db);

/*
 * Runs a prepared statement on a pooled connection and returns its result in
 * *res (PQclear it) when KC_DB_OK; on error *res is NULL and, when msg is not
 * NULL, the server's message is copied there. A connection lost mid-way is
 * re-opened and the statement retried once (all statements are reads).
 */
kc_db_status kc_db_exec(kc_db *db, kc_db_stmt stmt, int nparams,
						const char *const *params, PGresult **res,
						char *msg, size_t msglen);

/*
 * The log's floor (kc_flow.log_floor()) and head (kc_flow.settled_event_id()),
 * what a reader told KC_DB_GONE needs to start again; false when Postgres failed.
 */
bool		kc_db_log_bounds(kc_db *db, long long *floor_pos, long long *head_pos);

/* True when the last attempt to use Postgres succeeded. */
bool		kc_db_up(kc_db *db);

/* Why connecting failed, from libpq's message (one line per host it tried). */
typedef enum kc_db_down
{
	KC_DB_DOWN_NONE = 0,		/* not down */
	KC_DB_DOWN_UNREACHABLE,		/* no server answered as wanted, none a standby */
	KC_DB_DOWN_STANDBYS,		/* every server that answered is a standby (read-only) */
	KC_DB_DOWN_STANDBYS_AND_UNREACHABLE /* standbys, and hosts that did not answer */
} kc_db_down;

kc_db_down	kc_db_why_down(const char *err);
/* Says, naming the URL's hosts, that only standbys answered and that the gateway keeps retrying. */
void		kc_db_log_standbys(const char *name, const char *conninfo, const char *err);
/* The reason /readyz gives while the pool cannot connect. */
const char *kc_db_down_reason(kc_db *db);

/* Opens a standalone connection with the pool's settings (NULL on failure). */
PGconn	   *kc_db_connect_raw(const char *conninfo, const char *appname, char *err, size_t errlen);

/* Maps a failed result (or NULL) of conn to a status. */
kc_db_status kc_db_classify(PGconn *conn, const PGresult *res);

#endif
