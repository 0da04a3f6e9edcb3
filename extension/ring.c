/*
 * ring.c
 *      A ring of three tables emptied by TRUNCATE: the mechanics shared by the
 *      event queue's ring (queue_ring.c) and the event log's (log_ring.c).
 *
 * A ring is one or more tables partitioned by a slot column into <table>_0,
 * _1 and _2, whose default is a generation sequence modulo 3.  Rotating it,
 * as PgQ rotates its event tables: the slot after the current one (the
 * oldest) of every table of the ring is locked ACCESS EXCLUSIVE (waiting
 * for the first table's lock and taking the others' without waiting, so
 * that it never waits while holding one; a lock not free gives them all up
 * and the rotation tries again, for kc_flow.rotation_lock_timeout, 200 ms by
 * default, in all), the ring copies the rows that must stay into the current
 * slot (its carry function), the oldest slots are TRUNCATEd and the
 * generation advances, so that they become current.  One rotator per ring at
 * a time (an advisory lock).  Rotation refuses to run in REPEATABLE READ: the
 * copy must read with a snapshot taken after the lock, when every writer and
 * reader of the oldest slots has ended.
 */
#include "kc_flow.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"


/* a transaction this old holding an oldest table makes worker 0 back off */
#define LONG_TRANSACTION "1 s"

/* how long a rotation that found a lock taken waits before it tries again */
#define RETRY_MS 10

static KcfRotation rotate(const KcfRing *ring, int64 generation);
static bool held_by_others(const KcfRing *ring, int oldest);

/*
 * Rotates the ring if ring->due says so (SPI connected, READ COMMITTED).
 * Another rotator of the ring busy is KCF_ROTATE_BUSY, as is a lock not
 * granted in time because some other session's long transaction holds it;
 * KCF_ROTATE_CONTENDED when only the workers' own batches or short
 * transactions held it.  The slots' locks are held
 * until the transaction ends: call it at the end of a short transaction.
 */
KcfRotation
kcf_ring_rotate(const KcfRing *ring)
{
	bool		isnull;
	int64		generation;

	if (IsolationUsesXactSnapshot())
		return KCF_ROTATE_NOT_DUE;
	if (!DatumGetBool(DirectFunctionCall2(pg_try_advisory_xact_lock_int4,
										  Int32GetDatum(KCF_LOCK_KEY1),
										  Int32GetDatum(ring->rotator_lock))))
		return KCF_ROTATE_BUSY;
	kcf_ring_exec(psprintf("SELECT last_value FROM %s", ring->generation));
	generation = kcf_get_int64(0, 1, &isnull);
	if (!ring->due(generation))
		return KCF_ROTATE_NOT_DUE;
	return rotate(ring, generation);
}

/* One rotation's work, run in a subtransaction of its own by rotate(). */
typedef struct KcfRotationStep
{
	const KcfRing *ring;
	int64		generation;
	int			lock_timeout_ms;	/* how long it may wait for the first table */
	bool		done;			/* the oldest slots were emptied */
} KcfRotationStep;

/*
 * Locks the oldest slots, copies what stays, truncates them and advances the
 * generation; false (the subtransaction is rolled back) when the ring's
 * carry gave up.
 */
static bool
rotation_step(void *arg)
{
	KcfRotationStep *step = (KcfRotationStep *) arg;
	const KcfRing *ring = step->ring;
	int			current = step->generation % KCF_RING_SLOTS;
	int			oldest = (step->generation + 1) % KCF_RING_SLOTS;
	int			nest = NewGUCNestLevel();
	StringInfoData tables;

	initStringInfo(&tables);
	for (const char *const *t = ring->tables; *t; t++)
		appendStringInfo(&tables, "%s%s_%d", t == ring->tables ? "" : ", ", *t, oldest);

	/*
	 * Waits for the first table's lock only and takes the others without
	 * waiting: holding one while waiting for another could deadlock with a
	 * reader that locks them in another order (events_since reads event_log
	 * before events, a claim events first).
	 */
	/*
	 * What is left of kc_flow.rotation_lock_timeout (200 ms): the longest the
	 * workers' claims queue behind the request.  Usually it waits for the
	 * other workers' batches to commit; when a long transaction holds a lock
	 * it gives up, and worker 0 backs off (worker.c).
	 */
	(void) set_config_option("lock_timeout", psprintf("%d", step->lock_timeout_ms),
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	kcf_ring_exec(psprintf("LOCK TABLE %s_%d IN ACCESS EXCLUSIVE MODE", ring->tables[0], oldest));
	AtEOXact_GUC(true, nest);
	kcf_ring_exec(psprintf("LOCK TABLE %s IN ACCESS EXCLUSIVE MODE NOWAIT", tables.data));
	if (ring->then_lock != 0 &&
		!DatumGetBool(DirectFunctionCall2(pg_try_advisory_xact_lock_int4,
										  Int32GetDatum(KCF_LOCK_KEY1),
										  Int32GetDatum(ring->then_lock))))
		ereport(ERROR,
				(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
				 errmsg("kc_flow: the %s's rotation could not take advisory lock %d", ring->name, ring->then_lock)));

	if (!ring->carry(step->generation, current, oldest))
		return false;
	kcf_ring_exec(psprintf("TRUNCATE %s", tables.data));
	kcf_ring_exec(psprintf("SELECT setval('%s', " INT64_FORMAT ")", ring->generation, step->generation + 1));
	step->done = true;
	return true;
}

/*
 * The rotation itself, in a subtransaction so that a lock not granted
 * (55P03) is given up alone, with every lock the try took; any other error is
 * the caller's.  A lock not free is tried again until
 * kc_flow.rotation_lock_timeout has passed since the first try: a
 * transaction that held it may have ended already, since a commit releases
 * its table locks first, waking the rotation that waited for the first table,
 * and its advisory locks (the log head a sequencer round held) after them.
 */
static KcfRotation
rotate(const KcfRing *ring, int64 generation)
{
	KcfRotationStep step = {ring, generation, kcf_rotation_lock_timeout_ms, false};
	int			oldest = (generation + 1) % KCF_RING_SLOTS;
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), kcf_rotation_lock_timeout_ms);
	KcfRotation result;
	ErrorData  *edata;

	while ((edata = kcf_in_subtransaction(rotation_step, &step)) != NULL)
	{
		long		left_ms;

		if (edata->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE)
			ReThrowError(edata);
		FreeErrorData(edata);
		step.done = false;
		left_ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (left_ms <= RETRY_MS)
			break;
		(void) WaitLatch(NULL, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, RETRY_MS, PG_WAIT_EXTENSION);
		CHECK_FOR_INTERRUPTS();
		step.lock_timeout_ms = (int) (left_ms - RETRY_MS);
	}
	result = step.done ? KCF_ROTATE_DONE : KCF_ROTATE_BUSY;

	/* only the workers' batches held it (a long one, under load): no reason to back off */
	if (result == KCF_ROTATE_BUSY && !held_by_others(ring, oldest))
		result = KCF_ROTATE_CONTENDED;

	if (result == KCF_ROTATE_DONE)
		ereport(DEBUG1,
				(errmsg("kc_flow: %s rotated, slot %d truncated and current", ring->name, oldest)));
	else
		ereport(DEBUG1,
				(errmsg("kc_flow: %s not rotated, slot %d is locked or still holds many rows",
						ring->name, oldest)));
	return result;
}

/*
 * Whether a long transaction (older than LONG_TRANSACTION) of a session other
 * than us and the workers holds a lock on one of the oldest tables: what the
 * back-off is for.  A short one (a reader's statement that had locked one
 * table of the log's ring when the rotation took another) is gone by the
 * next try.
 */
static bool
held_by_others(const KcfRing *ring, int oldest)
{
	StringInfoData tables;
	bool		isnull;

	initStringInfo(&tables);
	for (const char *const *t = ring->tables; *t; t++)
		appendStringInfo(&tables, "%s'%s_%d'::regclass", t == ring->tables ? "" : ", ", *t, oldest);
	kcf_ring_exec(psprintf("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks l"
						   "  JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid"
						   "  WHERE l.relation IN (%s) AND l.granted"
						   "    AND l.pid <> pg_backend_pid()"
						   "    AND l.pid <> ALL (SELECT w.pid FROM kc_flow.worker_status() w)"
						   "    AND a.xact_start < clock_timestamp() - interval '" LONG_TRANSACTION "')",
						   tables.data));
	return kcf_get_bool(0, 1, &isnull);
}

/* Runs one statement built for a rotation (slots are in the names, so it is not kept prepared). */
void
kcf_ring_exec(const char *sql)
{
	int			rc = SPI_execute(sql, false, 0);

	if (rc < 0)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(rc));
}

/* Whether the database has the ring (a 0.1.0 schema has plain tables): its first table's slot 0. */
bool
kcf_ring_installed(const KcfRing *ring)
{
	Oid			nsp = get_namespace_oid("kc_flow", true);
	const char *table = strchr(ring->tables[0], '.') + 1;

	return OidIsValid(nsp) && OidIsValid(get_relname_relid(psprintf("%s_0", table), nsp));
}

/*
 * A rotation asked for by hand (kc_flow.rotate_queue(), rotate_log()): rotate
 * is the ring's own check; answers 'rotated', 'not due' or 'busy'.  Refused
 * in REPEATABLE READ (see the header) and before the ring is installed.
 */
Datum
kcf_ring_rotate_by_hand(const KcfRing *ring, KcfRotation (*rotate) (void), const char *function)
{
	static const char *const answers[] = {"not due", "rotated", "busy", "busy"};
	KcfRotation result;

	if (!kcf_ring_installed(ring))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the kc_flow schema has no %s ring yet", ring->name),
				 errhint("Run ALTER EXTENSION kc_flow UPDATE.")));
	kcf_require_read_committed(function,
							   "The rows left in the tables it truncates are copied with a snapshot taken after its lock.");
	SPI_connect();
	result = rotate();
	SPI_finish();
	PG_RETURN_TEXT_P(cstring_to_text(answers[result]));
}
