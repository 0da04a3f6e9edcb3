/*
 * log_trim.c
 *      Trimming the event log, and the floor it leaves for readers.
 *
 * Worker 0 trims every minute (worker.c), and kc_flow.trim_event_log() does
 * the same on demand (without preload, call it from a scheduler): handled
 * events older than kc_flow.event_retention leave events, processed_events
 * and the log.  A trim that removed a log position records the highest one it
 * removed in kc_flow.log_trims, in the same transaction; kc_flow.log_floor()
 * is the highest recorded, and every position above it that was ever given
 * is still readable.  kc_flow.events_since() refuses a cursor below the floor
 * (SQLSTATE KC410), so a reader whose cursor fell behind the retention learns
 * that it must reload its state instead of reading a page with a hole.
 */
#include "kc_flow.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(kcf_trim_event_log_sql);

/*
 * Handled events older than $1 seconds; a payment with an unresolved dead
 * letter keeps all its events (flow_status() and the student's home still
 * tell its story).
 */
#define OLD_EVENTS \
	"WITH old AS (" \
	"  DELETE FROM kc_flow.events e" \
	"   WHERE e.created_at < now() - make_interval(secs => $1)" \
	"     AND NOT EXISTS (SELECT 1 FROM kc_flow.event_queue q WHERE q.event_id = e.id)" \
	"     AND e.correlation_id NOT IN (SELECT c.correlation_id FROM kc_flow.dead_letters d" \
	"                                   JOIN kc_flow.events c ON c.id = d.event_id WHERE NOT d.resolved)" \
	"  RETURNING e.id)"

/*
 * Trims what is older than retention_s seconds (0: nothing) and returns how
 * many events it removed.  With the 0.2.0 log (log: true) their positions go
 * too, the floor is raised to the highest of them, and sequencer rounds as
 * old are forgotten but for the head.  SPI connected.
 */
int
kcf_trim_event_log(int retention_s, bool log)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr plan_010 = NULL;
	Oid			types[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(retention_s)};
	int			n;

	if (retention_s <= 0)
		return 0;
	if (log)
		kcf_plan(&plan,
				 OLD_EVENTS ","
				 " p AS (DELETE FROM kc_flow.processed_events p USING old WHERE p.event_id = old.id),"
				 " l AS (DELETE FROM kc_flow.event_log l USING old WHERE l.event_id = old.id RETURNING l.pos),"
				 " f AS (INSERT INTO kc_flow.log_trims (floor_pos)"
				 "       SELECT max(l.pos) FROM l HAVING max(l.pos) > kc_flow.log_floor()),"
				 " r AS (DELETE FROM kc_flow.log_rounds r"
				 "        WHERE r.sequenced_at < now() - make_interval(secs => $1)"
				 "          AND r.last_pos < (SELECT max(x.last_pos) FROM kc_flow.log_rounds x))"
				 " SELECT 1 FROM old",
				 1, types);
	else
		kcf_plan(&plan_010,
				 OLD_EVENTS
				 " DELETE FROM kc_flow.processed_events p USING old WHERE p.event_id = old.id",
				 1, types);
	n = kcf_exec(log ? plan : plan_010, values, NULL, 0);
	if (n > 0)
		ereport(LOG, (errmsg("kc_flow: trimmed %d events older than %d s from the event log", n, retention_s)));
	return n;
}

/*
 * kc_flow.trim_event_log(retention_s): the trim worker 0 runs every minute,
 * now, with kc_flow.event_retention or the retention given; returns the
 * log's floor after it.
 */
Datum
kcf_trim_event_log_sql(PG_FUNCTION_ARGS)
{
	int32		retention_s = PG_ARGISNULL(0) ? kcf_event_retention_s : PG_GETARG_INT32(0);
	bool		isnull;
	int64		floor_pos;
	static SPIPlanPtr floor_plan = NULL;

	if (!kcf_log_installed())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the kc_flow schema has no event log yet"),
				 errhint("Run ALTER EXTENSION kc_flow UPDATE.")));
	if (!PG_ARGISNULL(0) && retention_s < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("retention_s must be at least 1"),
				 errdetail("Got %d.", retention_s),
				 errhint("Pass NULL to use kc_flow.event_retention.")));
	SPI_connect();
	(void) kcf_trim_event_log(retention_s, true);
	kcf_plan(&floor_plan, "SELECT kc_flow.log_floor()", 0, NULL);
	kcf_exec(floor_plan, NULL, NULL, 1);
	floor_pos = kcf_get_int64(0, 1, &isnull);
	SPI_finish();
	PG_RETURN_INT64(floor_pos);
}
