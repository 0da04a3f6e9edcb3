/*
 * log_ring.c
 *      The event log as a ring of three tables, emptied by TRUNCATE by age.
 *
 * kc_flow.events, event_log, processed_events and log_rounds are partitioned
 * by slot into <table>_0, _1 and _2; new rows go to the current slot
 * (kc_flow.log_slot(): the log generation modulo 3).  Once the current slot
 * has been current for half of kc_flow.event_retention, the oldest slot, whose
 * newest row is then at least event_retention old, is emptied (ring.c): what
 * must stay is copied into the current slot with the same ids and positions,
 * and the oldest slot of every table is TRUNCATEd.  What stays, as the
 * DELETE trim of 0.1.0 kept it:
 *   - events still queued for a stage, every event of a correlation (payment)
 *     with an unresolved dead letter, and events whose position is not in the
 *     oldest slot (not sequenced yet, or sequenced after their slot stopped
 *     being current);
 *   - the positions and processed marks of every event that stays;
 *   - the log head (the newest round) and the newest announced round, which
 *     the sequencer reads.
 * Resolved dead letters whose event goes are deleted with it (the foreign
 * key's ON DELETE CASCADE did that before: a TRUNCATE cannot cascade to
 * them).  kc_flow.trim_event_log(retention_s) rotates by hand, emptying in
 * turn each oldest table whose events are all older than retention_s.
 *
 * The floor: every position the emptied slot held is at most the highest of
 * them, and every position above it is in a slot the rotation did not touch.
 * That highest position is the new floor (kc_flow.log_floor()) unless the
 * floor is higher already, recorded in kc_flow.log_rotations with the rows
 * kept, and in the sequence kc_flow.log_floor_position, which
 * kc_flow.events_since() reads after its rows: a sequence is read without a
 * snapshot, so a reader whose snapshot is older than the rotation (it saw the
 * emptied slot empty) sees the new floor and refuses a cursor below it
 * instead of returning a page with a hole.  The rotation also takes the log
 * head (the sequencer's lock, without waiting) after the tables' locks, so
 * that no round reads the head with a snapshot older than the copy of it.
 */
#include "kc_flow.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(kcf_rotate_log_sql);
PG_FUNCTION_INFO_V1(kcf_trim_event_log_sql);

/* kc_flow.trim_event_log(): how often a busy rotation is tried again, and how long it waits */
#define TRIM_TRIES 10
#define TRIM_RETRY_US 100000L

/*
 * -1, or during kc_flow.trim_event_log() its retention: the oldest table may
 * then go as soon as its events are all older than that.
 */
static int	trim_retention_s = -1;

static bool log_due(int64 generation);
static bool log_carry(int64 generation, int current, int oldest);

static const char *const log_tables[] = {
	"kc_flow.events", "kc_flow.event_log", "kc_flow.processed_events", "kc_flow.log_rounds", NULL
};

static const KcfRing log_ring = {
	.name = "event log",
	.generation = "kc_flow.log_generation",
	.tables = log_tables,
	.rotator_lock = KCF_LOCK_LOG_ROTATOR,
	.then_lock = KCF_LOCK_SEQUENCER,
	.due = log_due,
	.carry = log_carry,
};

/* Whether the log is the ring of 0.2.0 (0.1.0 has plain tables and no log). */
bool
kcf_log_ring_installed(void)
{
	return kcf_ring_installed(&log_ring);
}

/*
 * Rotates the log's ring when its current slot has been current for half of
 * kc_flow.event_retention (0: never); SPI connected, READ COMMITTED; see
 * kcf_ring_rotate().
 */
KcfRotation
kcf_rotate_log(void)
{
	if (kcf_event_retention_s <= 0 || !kcf_log_ring_installed())
		return KCF_ROTATE_NOT_DUE;
	return kcf_ring_rotate(&log_ring);
}

static bool
log_due(int64 generation)
{
	bool		isnull;

	if (trim_retention_s >= 0)
	{
		kcf_ring_exec(psprintf("SELECT NOT EXISTS (SELECT 1 FROM kc_flow.events_%d e"
							   "                    WHERE e.created_at > now() - make_interval(secs => %d))",
							   (int) ((generation + 1) % KCF_RING_SLOTS), trim_retention_s));
		return kcf_get_bool(0, 1, &isnull);
	}
	kcf_ring_exec(psprintf("SELECT coalesce((SELECT clock_timestamp() - r.rotated_at >= make_interval(secs => %d / 2.0)"
						   "                   FROM kc_flow.log_rotations r ORDER BY r.generation DESC LIMIT 1), true)",
						   kcf_event_retention_s));
	return kcf_get_bool(0, 1, &isnull);
}

/* Copies what stays from the oldest slot into the current one and records the floor. */
static bool
log_carry(int64 generation, int current, int oldest)
{
	bool		isnull;
	int64		kept_events;
	int64		kept_positions;
	int64		kept_marks;

	kcf_ring_exec(psprintf("INSERT INTO kc_flow.events"
						   "  (id, event_type, correlation_id, student_id, payload, version, created_at, txid, slot)"
						   " SELECT e.id, e.event_type, e.correlation_id, e.student_id, e.payload, e.version,"
						   "        e.created_at, e.txid, %d"
						   "   FROM kc_flow.events_%d e"
						   "  WHERE NOT EXISTS (SELECT 1 FROM kc_flow.event_log_%d l WHERE l.event_id = e.id)"
						   "     OR EXISTS (SELECT 1 FROM kc_flow.event_queue q WHERE q.event_id = e.id)"
						   "     OR e.correlation_id IN (SELECT c.correlation_id FROM kc_flow.dead_letters d"
						   "                               JOIN kc_flow.events c ON c.id = d.event_id"
						   "                              WHERE NOT d.resolved)",
						   current, oldest, oldest));
	kept_events = SPI_processed;
	/* from here on, an event stays if it is in another slot */
	kcf_ring_exec(psprintf("INSERT INTO kc_flow.event_log (pos, event_id, student_id, logged_at, slot)"
						   " SELECT l.pos, l.event_id, l.student_id, l.logged_at, %d FROM kc_flow.event_log_%d l"
						   "  WHERE EXISTS (SELECT 1 FROM kc_flow.events e WHERE e.id = l.event_id AND e.slot <> %d)",
						   current, oldest, oldest));
	kept_positions = SPI_processed;
	kcf_ring_exec(psprintf("INSERT INTO kc_flow.processed_events (event_id, consumer, processed_at, slot)"
						   " SELECT p.event_id, p.consumer, p.processed_at, %d FROM kc_flow.processed_events_%d p"
						   "  WHERE EXISTS (SELECT 1 FROM kc_flow.events e WHERE e.id = p.event_id AND e.slot <> %d)",
						   current, oldest, oldest));
	kept_marks = SPI_processed;
	kcf_ring_exec(psprintf("DELETE FROM kc_flow.dead_letters d"
						   " WHERE NOT EXISTS (SELECT 1 FROM kc_flow.events e WHERE e.id = d.event_id AND e.slot <> %d)",
						   oldest));
	kcf_ring_exec(psprintf("INSERT INTO kc_flow.log_rounds (last_pos, first_pos, snapshot, xid, announced, sequenced_at, slot)"
						   " SELECT r.last_pos, r.first_pos, r.snapshot, r.xid, r.announced, r.sequenced_at, %d"
						   "   FROM kc_flow.log_rounds_%d r"
						   "  WHERE r.last_pos = (SELECT max(x.last_pos) FROM kc_flow.log_rounds x)"
						   "     OR r.last_pos = (SELECT max(x.last_pos) FROM kc_flow.log_rounds x WHERE x.announced)",
						   current, oldest));
	/* the floor: the highest position the emptied slot held, if higher than the floor */
	kcf_ring_exec(psprintf("WITH f AS (SELECT greatest((SELECT max(l.pos) FROM kc_flow.event_log_%d l),"
						   "                           (SELECT last_value FROM kc_flow.log_floor_position)) AS pos)"
						   " INSERT INTO kc_flow.log_rotations (generation, floor_pos, kept_events, kept_positions, kept_marks)"
						   " SELECT " INT64_FORMAT ", f.pos, " INT64_FORMAT ", " INT64_FORMAT ", " INT64_FORMAT " FROM f"
						   " RETURNING floor_pos",
						   oldest, generation + 1, kept_events, kept_positions, kept_marks));
	kcf_ring_exec(psprintf("SELECT setval('kc_flow.log_floor_position', " INT64_FORMAT ")",
						   kcf_get_int64(0, 1, &isnull)));
	return true;
}

/* kc_flow.rotate_log(): one rotation check by hand; 'rotated', 'not due' or 'busy'. */
Datum
kcf_rotate_log_sql(PG_FUNCTION_ARGS)
{
	return kcf_ring_rotate_by_hand(&log_ring, kcf_rotate_log, "kc_flow.rotate_log()");
}

/*
 * kc_flow.trim_event_log(retention_s): the log's ring rotated by hand as far
 * as a retention allows (NULL: kc_flow.event_retention, 0 of which keeps
 * everything): the oldest table is emptied when its events are all older
 * than retention_s, at most three times, so that what is older than it is
 * gone but for what stays.  A busy rotation is tried again a few times.
 * Returns the log's floor.
 */
Datum
kcf_trim_event_log_sql(PG_FUNCTION_ARGS)
{
	int32		retention_s = PG_ARGISNULL(0) ? kcf_event_retention_s : PG_GETARG_INT32(0);
	bool		isnull;
	int64		floor_pos;

	if (!kcf_log_ring_installed())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the kc_flow schema has no log ring yet"),
				 errhint("Run ALTER EXTENSION kc_flow UPDATE.")));
	if (!PG_ARGISNULL(0) && retention_s < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("retention_s must be at least 1"),
				 errdetail("Got %d.", retention_s),
				 errhint("Pass NULL to use kc_flow.event_retention.")));
	kcf_require_read_committed("kc_flow.trim_event_log()",
							   "The rows left in the tables it truncates are copied with a snapshot taken after its lock.");
	SPI_connect();
	if (retention_s > 0)
	{
		trim_retention_s = retention_s;
		PG_TRY();
		{
			for (int i = 0; i < KCF_RING_SLOTS; i++)
			{
				KcfRotation result;

				for (int try = 1;; try++)
				{
					result = kcf_ring_rotate(&log_ring);
					if ((result != KCF_ROTATE_BUSY && result != KCF_ROTATE_CONTENDED) || try == TRIM_TRIES)
						break;
					CHECK_FOR_INTERRUPTS();
					pg_usleep(TRIM_RETRY_US);
				}
				if (result != KCF_ROTATE_DONE)
					break;
			}
		}
		PG_FINALLY();
		{
			trim_retention_s = -1;
		}
		PG_END_TRY();
	}
	kcf_ring_exec("SELECT kc_flow.log_floor()");
	floor_pos = kcf_get_int64(0, 1, &isnull);
	SPI_finish();
	PG_RETURN_INT64(floor_pos);
}
