/*
 * queue_ring.c
 *      The event queue as a ring of three tables, emptied by TRUNCATE.
 *
 * kc_flow.event_queue is partitioned by slot into event_queue_0, _1 and _2.
 * New rows go to the current slot (kc_flow.event_queue_slot(): the
 * generation sequence modulo 3).  Handled rows are still deleted one by
 * one, so while some transaction holds the xmin horizon a slot fills with
 * dead rows that no VACUUM may remove, and every claim walks them.  Rotation
 * bounds that, as PgQ rotates its event tables: once the current slot's file
 * is larger than kc_flow.queue_rotation_size, the slot after it (the oldest,
 * whose rows had two generations to be handled) is locked ACCESS EXCLUSIVE
 * with a short lock_timeout (200 ms), the rows still in it (waiting for a retry or a
 * trainer, or not claimed yet) are copied into the current slot, it is
 * TRUNCATEd, and it becomes the current slot.
 *
 * Nothing is lost or handled twice: every writer and claimer of that slot
 * holds a lock on it until its transaction ends, so once the lock is ours
 * they have all finished, and the copy reads with a snapshot taken after
 * the lock.  A claimer that waited for the lock replans and takes its
 * snapshot after our commit, so it finds the copied rows where they are now.
 * When the lock is not granted in time (a long transaction read the queue),
 * rotation gives up and is tried again later; the workers wait at most the
 * lock_timeout behind it.  TRUNCATE is not MVCC-safe: a snapshot older than
 * the rotation that had not read the queue before sees the truncated slot
 * empty and the copied rows not yet inserted (docs/extension.md).
 */
#include "kc_flow.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#define RING_SLOTS 3

/*
 * How long rotation waits for the oldest slot's lock, in ms: the longest the
 * workers may queue behind it.  Usually it waits for the other workers'
 * batches to commit; when a long transaction holds the lock it gives up, and
 * worker 0 backs off (worker.c).
 */
#define ROTATE_LOCK_TIMEOUT "200"

/* more rows than this left in the oldest slot: the workers are behind, copying them would not help */
#define ROTATE_MAX_MOVE 20000

PG_FUNCTION_INFO_V1(kcf_rotate_queue_sql);

static KcfRotation rotate(int64 generation, int current, int oldest);
static bool held_by_others(int oldest);
static void exec_sql(const char *sql);

/* Whether the queue is the ring of 0.2.0 (a 0.1.0 schema has one plain table). */
bool
kcf_queue_ring_installed(void)
{
	Oid			nsp = get_namespace_oid("kc_flow", true);

	return OidIsValid(nsp) && OidIsValid(get_relname_relid("event_queue_0", nsp));
}

/*
 * Rotates the ring when the current slot has grown past
 * kc_flow.queue_rotation_size (SPI connected, READ COMMITTED: a transaction
 * snapshot older than the lock could miss rows it must copy).  One rotator at
 * a time: another one busy is KCF_ROTATE_BUSY, as is a lock not granted in
 * time because some other session holds it; KCF_ROTATE_CONTENDED when only
 * the workers' own batches held it.  The slot's lock is held until the transaction ends: call it at the
 * end of a short transaction.
 */
KcfRotation
kcf_rotate_queue(void)
{
	static SPIPlanPtr plan = NULL;
	bool		isnull;
	int64		generation;
	int64		size;

	if (IsolationUsesXactSnapshot() || !kcf_queue_ring_installed())
		return KCF_ROTATE_NOT_DUE;
	if (!DatumGetBool(DirectFunctionCall2(pg_try_advisory_xact_lock_int4,
										  Int32GetDatum(KCF_LOCK_KEY1),
										  Int32GetDatum(KCF_LOCK_ROTATOR))))
		return KCF_ROTATE_BUSY;

	kcf_plan(&plan,
			 "SELECT g.last_value,"
			 "       pg_relation_size(format('kc_flow.event_queue_%s', g.last_value % 3)::regclass)"
			 "  FROM kc_flow.event_queue_generation g",
			 0, NULL);
	kcf_exec(plan, NULL, NULL, 1);
	generation = kcf_get_int64(0, 1, &isnull);
	size = kcf_get_int64(0, 2, &isnull);
	if (size < (int64) kcf_queue_rotation_size * 1024)
		return KCF_ROTATE_NOT_DUE;
	return rotate(generation, generation % RING_SLOTS, (generation + 1) % RING_SLOTS);
}

/*
 * The rotation itself, in a subtransaction so that a lock not granted in
 * time (55P03) is given up alone; any other error is the caller's.
 */
static KcfRotation
rotate(int64 generation, int current, int oldest)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	volatile KcfRotation result = KCF_ROTATE_DONE;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcontext);
	PG_TRY();
	{
		int			nest = NewGUCNestLevel();
		bool		isnull;

		(void) set_config_option("lock_timeout", ROTATE_LOCK_TIMEOUT, PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
		exec_sql(psprintf("LOCK TABLE kc_flow.event_queue_%d IN ACCESS EXCLUSIVE MODE", oldest));
		AtEOXact_GUC(true, nest);

		exec_sql(psprintf("SELECT count(*) FROM kc_flow.event_queue_%d", oldest));
		if (kcf_get_int64(0, 1, &isnull) > ROTATE_MAX_MOVE)
			result = KCF_ROTATE_BUSY;
		else
		{
			exec_sql(psprintf("INSERT INTO kc_flow.event_queue"
								  "  (event_id, consumer, attempts, deferrals, run_after, last_sqlstate, last_error, slot)"
								  " SELECT event_id, consumer, attempts, deferrals, run_after, last_sqlstate, last_error, %d"
								  "   FROM kc_flow.event_queue_%d",
								  current, oldest));
			exec_sql(psprintf("TRUNCATE kc_flow.event_queue_%d", oldest));
			exec_sql(psprintf("SELECT setval('kc_flow.event_queue_generation', " INT64_FORMAT ")",
								  generation + 1));
		}
		if (result == KCF_ROTATE_DONE)
			ReleaseCurrentSubTransaction();
		else
			RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcontext);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
		if (edata->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE)
			ReThrowError(edata);
		FreeErrorData(edata);
		result = KCF_ROTATE_BUSY;
	}
	PG_END_TRY();

	/* only the workers' batches held it (a long one, under load): no reason to back off */
	if (result == KCF_ROTATE_BUSY && !held_by_others(oldest))
		result = KCF_ROTATE_CONTENDED;

	if (result == KCF_ROTATE_DONE)
		ereport(DEBUG1,
				(errmsg("kc_flow: event queue rotated, slot %d truncated and current", oldest)));
	else
		ereport(DEBUG1,
				(errmsg("kc_flow: event queue not rotated, slot %d is locked or still holds many rows", oldest)));
	return result;
}

/* kc_flow.rotate_queue(): one rotation check by hand; 'rotated', 'not due' or 'busy'. */
Datum
kcf_rotate_queue_sql(PG_FUNCTION_ARGS)
{
	static const char *const answers[] = {"not due", "rotated", "busy", "busy"};
	KcfRotation result;

	if (!kcf_queue_ring_installed())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the kc_flow schema has no queue ring yet"),
				 errhint("Run ALTER EXTENSION kc_flow UPDATE.")));
	kcf_require_read_committed("kc_flow.rotate_queue()",
							   "The rows left in the table it truncates are copied with a snapshot taken after its lock.");
	SPI_connect();
	result = kcf_rotate_queue();
	SPI_finish();
	PG_RETURN_TEXT_P(cstring_to_text(answers[result]));
}

/* Whether a session other than us and the workers holds a lock on the oldest table. */
static bool
held_by_others(int oldest)
{
	bool		isnull;

	exec_sql(psprintf("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks l"
					  "  WHERE l.relation = 'kc_flow.event_queue_%d'::regclass AND l.granted"
					  "    AND l.pid <> pg_backend_pid()"
					  "    AND l.pid <> ALL (SELECT w.pid FROM kc_flow.worker_status() w))",
					  oldest));
	return kcf_get_bool(0, 1, &isnull);
}

/* Runs one statement built for this rotation (the slot is in its name, so it is not kept prepared). */
static void
exec_sql(const char *sql)
{
	int			rc = SPI_execute(sql, false, 0);

	if (rc < 0)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(rc));
}
