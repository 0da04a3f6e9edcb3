/*
 * log_health.c - kc_flow.health() into the gateway's gauges, about once a second.
 *
 * Read on the listener's connection with the listener's watermark, so that
 * the database also tells how long the oldest event the gateway has not
 * applied has been in the log: kc_catchup_lag_seconds, and the lag /readyz
 * compares with its limit. The other gauges are the database's own view
 * (docs/design.md §5, kc_flow.health()); names are kept stable for dashboards.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "listen_int.h"
#include "log.h"
#include "metrics.h"

static const struct
{
	const char *key;			/* in kc_flow.health() */
	kc_gauge	gauge;
}			fields[] = {
	{"queue_depth", KC_G_QUEUE_DEPTH},
	{"dead_letters", KC_G_DEAD_LETTERS},
	{"oldest_xact_holding_events_seconds", KC_G_OLDEST_XACT_HOLDING_EVENTS},
	{"log_unsequenced", KC_G_LOG_UNSEQUENCED},
	{"log_unannounced", KC_G_LOG_UNANNOUNCED},
	{"notification_queue_usage", KC_G_NOTIFICATION_QUEUE_USAGE},
	{"reader_lag_seconds", KC_G_CATCHUP_LAG},
};

bool
kc_log_health_poll(kc_listener *l)
{
	char		pos[24];
	const char *param = pos;
	PGresult   *r;
	cJSON	   *h;
	const cJSON *lag;

	snprintf(pos, sizeof(pos), "%lld", atomic_load(&l->watermark));
	r = PQexecParams(l->conn, "SELECT kc_flow.health($1::bigint)::text", 1, NULL, &param, NULL, NULL, 0);
	if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
	{
		bool		conn_ok = PQstatus(l->conn) == CONNECTION_OK;

		const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);

		/* 42883: a 0.1.0 schema, which has no health(); the listener says so once */
		if (!state || strcmp(state, "42883") != 0)
			kc_logf(KC_LOG_WARN, "cannot read kc_flow.health(): %s", PQresultErrorMessage(r));
		PQclear(r);
		atomic_store(&l->lag_known, false);
		return conn_ok;
	}
	h = cJSON_Parse(PQgetvalue(r, 0, 0));
	PQclear(r);
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
	{
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(h, fields[i].key);

		if (cJSON_IsNumber(v))
			kc_metrics_set(fields[i].gauge, v->valuedouble);
	}
	lag = cJSON_GetObjectItemCaseSensitive(h, "reader_lag_seconds");
	if (cJSON_IsNumber(lag))
	{
		struct timespec now;

		clock_gettime(CLOCK_MONOTONIC, &now);
		atomic_store(&l->lag_us, (long long) (lag->valuedouble * 1e6));
		atomic_store(&l->lag_polled_ms, (long long) now.tv_sec * 1000 + now.tv_nsec / 1000000);
		atomic_store(&l->lag_known, true);
	}
	else
		atomic_store(&l->lag_known, false);
	cJSON_Delete(h);
	return true;
}
