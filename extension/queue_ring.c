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
 */
#include "kc_flow.h"

#include "access/xact.h"
#include "utils/builtins.h"

/* more rows than this left in the oldest slot: the workers are behind, copying them would not help */
#define ROTATE_MAX_MOVE 20000

PG_FUNCTION_INFO_V1(kcf_rotate_queue_sql);

static bool queue_due(int64 generation);
static bool queue_carry(int64 generation, int current, int oldest);

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
	if (!kcf_queue_ring_installed())
		return KCF_ROTATE_NOT_DUE;
	return kcf_ring_rotate(&queue_ring);
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
