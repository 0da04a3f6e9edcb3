/*
 * log.c
 *      The commit-ordered event log of 0.2.0: positions given after commit.
 *
 * An event gets its id when it is written, inside the writer's transaction,
 * so ids can commit out of order.  Its position in the log (the public
 * cursor) is given only after it committed, by a sequencer: one at a time
 * (an exclusive advisory transaction lock), each round giving consecutive
 * positions, in event id order, to every event that committed since the
 * previous round.  A round's positions commit together, and the next round
 * starts only after that commit is visible, so a reader that sees position N
 * sees every position below N: the log is gap-free in any snapshot, and an
 * open transaction delays only its own events.
 *
 * Which events committed since the previous round is told by snapshots, as
 * PgQ tells the events of a batch between two ticks: every event carries the
 * id of the transaction that wrote it (events.txid), and each round records
 * the snapshot it read with (log_rounds.snapshot).  An event visible now but
 * not visible in the previous round's snapshot is new; its txid is then
 * either at or above that snapshot's xmax or in its list of transactions in
 * progress, so two index probes of events_by_txid find all candidates, however
 * long some transaction has stayed open.  The previous sequencer's own
 * transaction (log_rounds.xid) counts as in progress, since it may have
 * written more after its round, and the unique event_id of event_log keeps
 * whatever it did sequence from being taken twice.
 *
 * The workers sequence at the end of each batch transaction (worker.c), and
 * kc_flow.run_pending() at its end; a round that gave positions sends one
 * NOTIFY kc_flow_events with the range not yet announced, "first-last".
 */
#include "kc_flow.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/lsyscache.h"

/* above this share of the NOTIFY queue a round is not announced (readers poll) */
#define ANNOUNCE_MAX_QUEUE_USAGE 0.5

PG_FUNCTION_INFO_V1(kcf_sequence_sql);
PG_FUNCTION_INFO_V1(kcf_oldest_event_writer);
PG_FUNCTION_INFO_V1(kcf_log_backlog);
PG_FUNCTION_INFO_V1(kcf_log_covers);

/*
 * Whether the database has the 0.2.0 log.  The library is installed before
 * ALTER EXTENSION kc_flow UPDATE runs, and keeps the 0.1.0 behaviour until then.
 */
bool
kcf_log_installed(void)
{
	Oid			nsp = get_namespace_oid("kc_flow", true);

	return OidIsValid(nsp) && OidIsValid(get_relname_relid("log_rounds", nsp));
}

/*
 * The candidates of a round, shared by the sequencer, kc_flow.log_backlog()
 * and kc_flow.log_covers(): committed events (visible to the statement's
 * snapshot, or written by the sequencer's own transaction) that the previous
 * round's snapshot did not see, and that are not in the log yet.  Parameters
 * from read_head(): $1 the head's last position, $2 its snapshot's xmax, $3
 * its snapshot's transactions in progress and its own, $4 its snapshot, $5
 * its own transaction.
 *
 * Planned once, as a generic plan (kcf_plan_generic): a round's candidates
 * are a few of the newest rows whatever the values, and planning them for
 * each round's values (over the three tables of each ring) was 6.4% of the
 * workers' samples at 300 purchases/s.  For a generic plan "txid >= $2"
 * alone is a third of events; closed above by the statement's own
 * snapshot's xmax (every committed event it sees is below it) it is a range,
 * which the planner guesses narrow, so the plan is the index probes of
 * events_by_txid that the values would give.  An event of the sequencer's own
 * transaction may be at or above that xmax (an xmax is one past the newest
 * completed transaction, and ours is not), hence its own term.  Whether a
 * candidate is in the log already is a probe of event_log's unique index per
 * candidate (written as a subquery, so that no plan hashes the whole log).
 */
#define FRESH_EVENTS \
	" fresh AS (" \
	"   SELECT e.id, e.student_id, e.txid, e.created_at FROM kc_flow.events e" \
	"    WHERE ((e.txid >= $2 AND e.txid < pg_snapshot_xmax(pg_current_snapshot()))" \
	"           OR e.txid = ANY ($3) OR e.txid = pg_current_xact_id_if_assigned())" \
	"      AND (NOT pg_visible_in_snapshot(e.txid, $4) OR e.txid = $5)" \
	"      AND (SELECT 1 FROM kc_flow.event_log l WHERE l.event_id = e.id) IS NULL)"
#define FRESH_NARGS 5
#define FRESH_TYPES INT8OID, XID8OID, XID8ARRAYOID, PG_SNAPSHOTOID, XID8OID

/* Reads the log head into the first FRESH_NARGS parameters (memory of the caller's context). */
static void
read_head(Datum *values)
{
	static SPIPlanPtr plan = NULL;
	bool		isnull;

	kcf_plan(&plan,
			 "SELECT r.last_pos, pg_snapshot_xmax(r.snapshot),"
			 "       ARRAY(SELECT pg_snapshot_xip(r.snapshot) UNION ALL SELECT r.xid), r.snapshot, r.xid"
			 "  FROM kc_flow.log_rounds r ORDER BY r.last_pos DESC LIMIT 1",
			 0, NULL);
	if (kcf_exec(plan, NULL, NULL, 1) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("kc_flow.log_rounds is empty: the event log has no head"),
				 errhint("Reinstall the extension, or insert the first round as the install script does.")));
	for (int i = 0; i < FRESH_NARGS; i++)
		values[i] = SPI_datumTransfer(kcf_get_datum(0, i + 1, &isnull),
									  TupleDescAttr(SPI_tuptable->tupdesc, i)->attbyval,
									  TupleDescAttr(SPI_tuptable->tupdesc, i)->attlen);
}

/*
 * One sequencer round in the current transaction (SPI connected): takes the
 * log head (waiting for it, or with wait false giving up at once and saying
 * so in round->busy), gives positions to every event committed since the
 * previous round, and NOTIFYs the range not yet announced.  The lock is held
 * until the transaction ends, so call it at the end of a short transaction.
 * Returns whether positions were given.
 */
bool
kcf_sequence(KcfRound *round, bool wait)
{
	static SPIPlanPtr fresh_plan = NULL;
	static SPIPlanPtr plan = NULL;
	Oid			types[FRESH_NARGS] = {FRESH_TYPES};
	Oid			ins_types[5] = {INT8OID, PG_SNAPSHOTOID, INT8ARRAYOID, UUIDARRAYOID, BOOLOID};
	Datum		values[FRESH_NARGS];
	Datum		ins[5];
	bool		announce;
	bool		isnull;
	int64		announced_upto;

	memset(round, 0, sizeof(*round));
	/* callers refuse transaction snapshots (the workers override the default) */
	Assert(!IsolationUsesXactSnapshot());
	if (!wait)
	{
		round->busy = !DatumGetBool(DirectFunctionCall2(pg_try_advisory_xact_lock_int4,
														Int32GetDatum(KCF_LOCK_KEY1),
														Int32GetDatum(KCF_LOCK_SEQUENCER)));
		if (round->busy)
			return false;
	}
	else
		DirectFunctionCall2(pg_advisory_xact_lock_int4,
							Int32GetDatum(KCF_LOCK_KEY1), Int32GetDatum(KCF_LOCK_SEQUENCER));

	/* a full NOTIFY queue would fail the commit: then readers find the events by polling */
	announce = DatumGetFloat8(DirectFunctionCall1(pg_notification_queue_usage, (Datum) 0))
		< ANNOUNCE_MAX_QUEUE_USAGE;

	/*
	 * New statements: their snapshots are taken after the lock, so they see
	 * the previous round.  The candidates are read with the snapshot that the
	 * round records; the positions are written by a second, small statement.
	 */
	read_head(values);
	kcf_plan_generic(&fresh_plan,
					"WITH" FRESH_EVENTS
					" SELECT pg_current_snapshot(), array_agg(f.id ORDER BY f.id),"
					"        array_agg(f.student_id ORDER BY f.id), count(*) FROM fresh f",
					FRESH_NARGS, types);
	kcf_exec(fresh_plan, values, NULL, 1);
	if (kcf_get_int64(0, 4, &isnull) == 0)
		return false;
	ins[0] = values[0];			/* the head's last position */
	for (int i = 0; i < 3; i++)
		ins[i + 1] = SPI_datumTransfer(kcf_get_datum(0, i + 1, &isnull), false, -1);
	ins[4] = BoolGetDatum(announce);
	kcf_plan(&plan,
			 "WITH ins AS ("
			 "   INSERT INTO kc_flow.event_log (pos, event_id, student_id, logged_at)"
			 "   SELECT $1 + u.o, u.id, u.student_id, (SELECT clock_timestamp())"
			 "     FROM unnest($3::bigint[], $4::uuid[]) WITH ORDINALITY AS u(id, student_id, o)"
			 "   RETURNING pos),"
			 " rnd AS ("
			 "   INSERT INTO kc_flow.log_rounds (last_pos, first_pos, snapshot, xid, announced)"
			 "   SELECT max(pos), min(pos), $2, pg_current_xact_id(), $5 FROM ins"
			 "   RETURNING first_pos, last_pos)"
			 " SELECT first_pos, last_pos,"
			 "        (SELECT r.last_pos FROM kc_flow.log_rounds r WHERE r.announced"
			 "          ORDER BY r.last_pos DESC LIMIT 1)"
			 "   FROM rnd",
			 5, ins_types);
	kcf_exec(plan, ins, NULL, 0);

	round->first = kcf_get_int64(0, 1, &isnull);
	round->last = kcf_get_int64(0, 2, &isnull);
	announced_upto = kcf_get_int64(0, 3, &isnull);
	if (isnull)
		announced_upto = round->first - 1;
	if (announce)
	{
		char		payload[64];

		snprintf(payload, sizeof(payload), INT64_FORMAT "-" INT64_FORMAT,
				 Min(announced_upto + 1, round->first), round->last);
		Async_Notify("kc_flow_events", payload);
		round->announced = true;
	}
	else
		ereport(WARNING,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("kc_flow did not announce log positions " INT64_FORMAT "-" INT64_FORMAT,
						round->first, round->last),
				 errdetail("The NOTIFY queue is more than %.0f%% full; a full queue would fail the commit.",
						   100 * ANNOUNCE_MAX_QUEUE_USAGE),
				 errhint("A session that LISTENs is not reading its notifications; readers still find the events with kc_flow.events_since().")));
	return true;
}

/*
 * kc_flow.sequence_log(): one sequencer round in the caller's transaction;
 * the range of positions given, NULLs when none.
 */
Datum
kcf_sequence_sql(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[2];
	bool		nulls[2] = {true, true};
	KcfRound	round;

	kcf_require_read_committed("kc_flow.sequence_log()",
							   "A round reads the log head with a snapshot taken after it holds the head's lock; "
							   "an older snapshot would give positions that are already taken.");
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (!kcf_log_installed())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the kc_flow schema has no event log yet"),
				 errhint("Run ALTER EXTENSION kc_flow UPDATE.")));
	SPI_connect();
	if (kcf_sequence(&round, true))
	{
		values[0] = Int64GetDatum(round.first);
		values[1] = Int64GetDatum(round.last);
		nulls[0] = nulls[1] = false;
	}
	SPI_finish();
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/*
 * kc_flow.oldest_event_writer(): the start of the oldest open transaction that
 * has emitted events, NULL when none.  Preloaded: from shared memory.  Else
 * from the shared advisory lock such a transaction holds.
 */
Datum
kcf_oldest_event_writer(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	TimestampTz since = 0;
	bool		isnull = true;

	if (kcf_shared_ready())
	{
		since = kcf_oldest_writer();
		if (since == 0)
			PG_RETURN_NULL();
		PG_RETURN_TIMESTAMPTZ(since);
	}
	/* (KCF_LOCK_KEY1, KCF_LOCK_WRITER) as pg_locks shows a lock on two int4 keys */
	StaticAssertStmt(KCF_LOCK_KEY1 == 1801676396 && KCF_LOCK_WRITER == 1, "lock keys as in the query");
	SPI_connect();
	kcf_plan(&plan,
			 "SELECT min(a.xact_start) FROM pg_catalog.pg_locks l"
			 "  JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid"
			 " WHERE l.locktype = 'advisory' AND l.database = (SELECT oid FROM pg_catalog.pg_database"
			 "                                                  WHERE datname = current_database())"
			 "   AND l.classid = 1801676396 AND l.objid = 1 AND l.objsubid = 2 AND l.granted",
			 0, NULL);
	kcf_exec(plan, NULL, NULL, 1);
	if (SPI_processed > 0)
		since = DatumGetTimestampTz(kcf_get_datum(0, 1, &isnull));
	SPI_finish();
	if (isnull)
		PG_RETURN_NULL();
	PG_RETURN_TIMESTAMPTZ(since);
}

/*
 * kc_flow.log_backlog(): committed events without a position yet, and the
 * creation time of the oldest of them (NULL when none).
 */
Datum
kcf_log_backlog(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[FRESH_NARGS] = {FRESH_TYPES};
	Datum		head[FRESH_NARGS];
	TupleDesc	tupdesc;
	Datum		values[2];
	bool		nulls[2] = {false, false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	SPI_connect();
	read_head(head);
	kcf_plan_generic(&plan, "WITH" FRESH_EVENTS " SELECT count(*), min(f.created_at) FROM fresh f",
					FRESH_NARGS, types);
	kcf_exec(plan, head, NULL, 1);
	values[0] = kcf_get_datum(0, 1, &nulls[0]);
	values[1] = kcf_get_datum(0, 2, &nulls[1]);
	SPI_finish();
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/*
 * kc_flow.log_covers(snapshot): true when every event visible in that
 * snapshot (pg_current_snapshot() of some earlier moment) has a position, so
 * that a reader who then reads the log to its end has seen every event that
 * had committed at that moment.
 */
Datum
kcf_log_covers(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[FRESH_NARGS + 1] = {FRESH_TYPES, PG_SNAPSHOTOID};
	Datum		values[FRESH_NARGS + 1];
	bool		isnull;
	int64		missing;

	SPI_connect();
	read_head(values);
	values[FRESH_NARGS] = PG_GETARG_DATUM(0);
	kcf_plan_generic(&plan,
			 "WITH" FRESH_EVENTS
			 " SELECT count(*) FROM fresh f WHERE pg_visible_in_snapshot(f.txid, $6)",
			 FRESH_NARGS + 1, types);
	kcf_exec(plan, values, NULL, 1);
	missing = kcf_get_int64(0, 1, &isnull);
	SPI_finish();
	PG_RETURN_BOOL(missing == 0);
}
