/*
 * queue_ring.c
 *      The event queue as a ring of three tables, emptied by TRUNCATE.
 *
 * kc_flow.event_queue is partitioned by slot into event_queue_0, _1 and _2.
 * New rows go to the current slot (kc_flow.event_queue_slot(): the
 * generation sequence modulo 3).  Handled rows are still deleted one by
 * one, so while some transaction holds the xmin horizon a slot fills with
 * dead rows that no VACUUM may remove, and every claim walks them.  Rotation
 * (ring.c) bounds that: once the current slot's file is larger than
 * kc_flow.queue_rotation_size, the rows still in the oldest slot (waiting for
 * a retry or a trainer, or not claimed yet: they had two generations to be
 * handled) are copied into the current slot, and the oldest is TRUNCATEd and
 * becomes current.
 *
 * Nothing is lost or handled twice: every writer and claimer of that slot
 * holds a lock on it until its transaction ends, so once the lock is ours
 * they have all finished, and the copy reads with a snapshot taken after
 * the lock.  A claim whose snapshot is older than the rotation sees the
 * truncated slot empty and misses its copied rows for one batch; the next
 * batch finds them.  TRUNCATE is not MVCC-safe: a snapshot older than the
 * rotation that had not read the queue before sees the truncated slot empty
 * and the copied rows not yet inserted (docs/extension.md).
 *
 * The workers' claims leave out the tables that are drained: not current,
 * and found without a row while no transaction could write them.  Under a
 * held horizon the two older tables are full of handled rows' dead index
 * entries, each a heap visit for every claim that walks them; once drained,
 * a table stays so until a rotation makes it current again, since new rows
 * go to the current table only.  Worker 0 checks after each rotation check
 * and notes what it found with the generation in shared memory
 * (kcf_queue_claim_slots()).
 */
#include "kc_flow.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

/* more rows than this left in the oldest slot: the workers are behind, copying them would not help */
#define ROTATE_MAX_MOVE 20000

PG_FUNCTION_INFO_V1(kcf_rotate_queue_sql);

static bool queue_due(int64 generation);
static bool queue_carry(int64 generation, int current, int oldest);
static void note_drained(void);

static const char *const queue_tables[] = {"kc_flow.event_queue", NULL};

static const KcfRing queue_ring = {
	.name = "event queue",
	.generation = "kc_flow.event_queue_generation",
	.tables = queue_tables,
	.rotator_lock = KCF_LOCK_ROTATOR,
	.then_lock = 0,
	.due = queue_due,
	.carry = queue_carry,
};

/* Whether the queue is the ring of 0.2.0 (a 0.1.0 schema has one plain table). */
bool
kcf_queue_ring_installed(void)
{
	return kcf_ring_installed(&queue_ring);
}

/*
 * Rotates the ring when the current slot has grown past
 * kc_flow.queue_rotation_size (SPI connected, READ COMMITTED); see
 * kcf_ring_rotate().
 */
KcfRotation
kcf_rotate_queue(void)
{
	KcfRotation result;

	if (!kcf_queue_ring_installed())
		return KCF_ROTATE_NOT_DUE;
	result = kcf_ring_rotate(&queue_ring);
	/* holding the rotator's lock (not busy): no rotation can change the generation meanwhile */
	if (kcf_am_worker && kcf_shared_ready() && !IsolationUsesXactSnapshot() &&
		result != KCF_ROTATE_BUSY && result != KCF_ROTATE_CONTENDED)
		note_drained();
	return result;
}

/* The queue's parent table, or InvalidOid without the kc_flow schema. */
static Oid
queue_relid(void)
{
	Oid			nsp = get_namespace_oid("kc_flow", true);

	return OidIsValid(nsp) ? get_relname_relid("event_queue", nsp) : InvalidOid;
}

/* The generation of the queue's ring: its sequence's last value (not transactional). */
int64
kcf_queue_generation(void)
{
	static SPIPlanPtr plan = NULL;
	bool		isnull;

	kcf_plan(&plan, "SELECT last_value FROM kc_flow.event_queue_generation", 0, NULL);
	kcf_exec(plan, NULL, NULL, 1);
	return kcf_get_int64(0, 1, &isnull);
}

/*
 * Whether slot has not been current at any generation after from up to to:
 * then a table drained at from is still drained at to.
 */
static bool
not_current_since(int slot, int64 from, int64 to)
{
	if (from < 0 || to < from || to - from >= KCF_RING_SLOTS)
		return false;
	for (int64 g = from + 1; g <= to; g++)
		if (g % KCF_RING_SLOTS == slot)
			return false;
	return true;
}

/* One table's check, run in a subtransaction by slot_drained(). */
typedef struct KcfDrainCheck
{
	int			slot;
	bool		empty;
} KcfDrainCheck;

/*
 * Locks the table in SHARE mode without waiting, which no transaction that
 * inserts, updates or deletes its rows may hold beside it: once granted,
 * every write to it has ended, and a snapshot taken now sees every row it
 * will ever hold until it is current again, the other workers' claimed and
 * not yet committed rows included.  Returns false, so that the
 * subtransaction and its lock are rolled back at once.
 */
static bool
drain_check_step(void *arg)
{
	KcfDrainCheck *check = (KcfDrainCheck *) arg;
	bool		isnull;

	kcf_ring_exec(psprintf("LOCK TABLE kc_flow.event_queue_%d IN SHARE MODE NOWAIT", check->slot));
	kcf_ring_exec(psprintf("SELECT NOT EXISTS (SELECT 1 FROM kc_flow.event_queue_%d)", check->slot));
	check->empty = kcf_get_bool(0, 1, &isnull);
	return false;
}

/* Whether the table of slot (not current) holds no row, its lock free; false when it is taken. */
static bool
slot_drained(int slot)
{
	KcfDrainCheck check = {slot, false};
	ErrorData  *edata = kcf_in_subtransaction(drain_check_step, &check);

	if (edata != NULL)
	{
		if (edata->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE)
			ReThrowError(edata);
		FreeErrorData(edata);
		return false;
	}
	return check.empty;
}

/*
 * Worker 0, holding the rotator's lock: finds which tables other than the
 * current one are drained and notes them with the generation.  A table
 * found drained at a generation since which it has not been current is not
 * checked again.
 */
static void
note_drained(void)
{
	Oid			relid = queue_relid();
	int64		known_generation;
	uint32		known = kcf_queue_drained(relid, &known_generation);
	int64		generation = kcf_queue_generation();
	uint32		drained = 0;

	for (int k = 1; k < KCF_RING_SLOTS; k++)
	{
		int			slot = (int) ((generation + k) % KCF_RING_SLOTS);

		if (((known & (1u << slot)) && not_current_since(slot, known_generation, generation)) ||
			slot_drained(slot))
			drained |= 1u << slot;
	}
	kcf_queue_drained_note(relid, generation, drained);
}

/*
 * The slots a worker's claim must scan, a bit each, as noted at *generation
 * (-1: nothing noted, every slot): all but the drained tables.  Valid while
 * the generation has not moved on, which the claim checks after its snapshot.
 */
uint32
kcf_queue_claim_slots(int64 *generation)
{
	uint32		all = (1u << KCF_RING_SLOTS) - 1;
	uint32		drained = kcf_queue_drained(queue_relid(), generation);

	if (*generation < 0)
		return all;
	/* the current table is never left out */
	drained &= ~(1u << (*generation % KCF_RING_SLOTS));
	return all & ~drained;
}

/*
 * Due when the current slot's file is larger than kc_flow.queue_rotation_size,
 * unless the oldest slot still holds a backlog (more than ROTATE_MAX_MOVE rows
 * not handled yet): copying it forward would not help, and asking for its
 * lock would only make the workers' claims wait behind the request. Counted
 * without that lock, and at most to one row past the limit.
 */
static bool
queue_due(int64 generation)
{
	bool		isnull;

	kcf_ring_exec(psprintf("SELECT pg_relation_size('kc_flow.event_queue_%d')",
						   (int) (generation % KCF_RING_SLOTS)));
	if (kcf_get_int64(0, 1, &isnull) < (int64) kcf_queue_rotation_size * 1024)
		return false;
	kcf_ring_exec(psprintf("SELECT count(*) FROM (SELECT 1 FROM kc_flow.event_queue_%d LIMIT %d) x",
						   (int) ((generation + 1) % KCF_RING_SLOTS), ROTATE_MAX_MOVE + 1));
	return kcf_get_int64(0, 1, &isnull) <= ROTATE_MAX_MOVE;
}

/* Copies the rows left in the oldest slot into the current one; false with a backlog. */
static bool
queue_carry(int64 generation, int current, int oldest)
{
	bool		isnull;

	kcf_ring_exec(psprintf("SELECT count(*) FROM kc_flow.event_queue_%d", oldest));
	if (kcf_get_int64(0, 1, &isnull) > ROTATE_MAX_MOVE)
		return false;
	kcf_ring_exec(psprintf("INSERT INTO kc_flow.event_queue"
						   "  (event_id, consumer, attempts, deferrals, run_after, last_sqlstate, last_error, slot)"
						   " SELECT event_id, consumer, attempts, deferrals, run_after, last_sqlstate, last_error, %d"
						   "   FROM kc_flow.event_queue_%d",
						   current, oldest));
	return true;
}

/* kc_flow.rotate_queue(): one rotation check by hand; 'rotated', 'not due' or 'busy'. */
Datum
kcf_rotate_queue_sql(PG_FUNCTION_ARGS)
{
	return kcf_ring_rotate_by_hand(&queue_ring, kcf_rotate_queue, "kc_flow.rotate_queue()");
}
