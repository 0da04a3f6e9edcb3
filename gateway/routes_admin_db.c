/*
 * routes_admin_db.c - the operator console's own Postgres connections: two,
 * opened on first use, with the statement timeout of --pg-timeout-ms, on the
 * gateway's one pool type (pool.c). The request pool (db.c) runs the read
 * side's prepared statements only, and the console also writes (the retry).
 */
#include "routes_admin.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"

#define ADMIN_POOL_SIZE 2

typedef struct admin_db
{
	char	   *conninfo;
	int			timeout_ms;
	kc_pool    *pool;
} admin_db;

static pthread_mutex_t admin_db_lock = PTHREAD_MUTEX_INITIALIZER;
static admin_db *admin_pg;		/* made on first use, kept until the process exits */

static void *
admin_open(void *arg, char *err, size_t errlen)
{
	admin_db   *d = arg;
	PGconn	   *conn = kc_db_connect_raw(d->conninfo, "kc-gateway-admin", err, errlen);
	char		sql[64];

	if (!conn)
		return NULL;
	snprintf(sql, sizeof(sql), "SET statement_timeout = %d", d->timeout_ms);
	PQclear(PQexec(conn, sql));
	return conn;
}

static void
admin_close(void *conn)
{
	PQfinish(conn);
}

static bool
admin_usable(void *conn)
{
	return PQstatus(conn) == CONNECTION_OK;
}

/* outages are logged by the request pool (db.c) and the stats sampler already */
static void
admin_up(void *arg, kc_pool_state prev)
{
}

static void
admin_down(void *arg, kc_pool_state prev, const char *why)
{
}

static const kc_pool_ops admin_ops = {admin_open, admin_close, admin_usable, admin_up, admin_down};

static admin_db *
admin_pool(kc_app *app)
{
	admin_db   *d;

	pthread_mutex_lock(&admin_db_lock);
	if (!admin_pg)
	{
		d = calloc(1, sizeof(*d));
		if (d)
		{
			d->conninfo = strdup(app->cfg->database_url);
			d->timeout_ms = app->cfg->pg_timeout_ms;
			d->pool = d->conninfo ? kc_pool_create(&admin_ops, d, ADMIN_POOL_SIZE, app->cfg->pg_timeout_ms) : NULL;
			if (!d->pool)
			{
				free(d->conninfo);
				free(d);
				d = NULL;
			}
		}
		admin_pg = d;
	}
	d = admin_pg;
	pthread_mutex_unlock(&admin_db_lock);
	return d;
}

/* The server's primary message of a failed result, or libpq's. */
static void
failure_message(PGconn *conn, const PGresult *r, char *msg, size_t msglen)
{
	const char *primary = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;

	if (!msg)
		return;
	snprintf(msg, msglen, "%s", primary ? primary : (r ? PQresultErrorMessage(r) : PQerrorMessage(conn)));
	msg[strcspn(msg, "\n")] = '\0';
}

kc_db_status
kc_admin_exec(kc_app *app, const char *sql, int nparams, const char *const *params,
			  bool retry_once, PGresult **res, char *msg, size_t msglen)
{
	admin_db   *d = admin_pool(app);
	kc_pool_lease l;
	kc_db_status st = KC_DB_UNAVAILABLE;

	*res = NULL;
	if (!d || !kc_pool_checkout(d->pool, &l))
	{
		if (msg)
			snprintf(msg, msglen, "postgres is unavailable");
		return KC_DB_UNAVAILABLE;
	}
	for (int attempt = 0; attempt < 2; attempt++)
	{
		PGresult   *r = PQexecParams(l.conn, sql, nparams, NULL, params, NULL, NULL, 0);

		if (PQresultStatus(r) == PGRES_TUPLES_OK)
		{
			*res = r;
			st = KC_DB_OK;
			break;
		}
		st = kc_db_classify(l.conn, r);
		failure_message(l.conn, r, msg, msglen);
		PQclear(r);
		if (st != KC_DB_UNAVAILABLE || PQstatus(l.conn) == CONNECTION_OK)
			break;
		/* the connection died under us (a Postgres restart): a read is tried once more */
		if (!retry_once || l.fresh || attempt > 0)
			break;
		if (!kc_pool_reopen(d->pool, &l))
			break;
	}
	if (l.conn && PQstatus(l.conn) == CONNECTION_OK)
		kc_pool_checkin(d->pool, &l);
	else
		kc_pool_discard(d->pool, &l);
	return st;
}

