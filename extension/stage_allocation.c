/*
 * stage_allocation.c
 *      PURCHASE_CREATED -> a trainer for the purchase, then TRAINER_ALLOCATED.
 *
 * The choice is DESIGN.md §4: an active trainer who may teach the course,
 * has a free place, is available at every planned session (checked in the
 * trainer's own zone, one session at a time, so daylight saving is right) and
 * has no booking overlapping any of them; least loaded first, ties by id.
 *
 * Concurrent allocations serialize per trainer on the trainer's row: the
 * candidate is locked (skipping trainers another allocation holds right now),
 * checked again with a fresh snapshot, and then booked.  The exclusion
 * constraint on trainer_bookings is the last line of defence.  When nobody
 * is free the allocation stays pending and the event is deferred.
 */
#include "kc_flow.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/uuid.h"

PG_FUNCTION_INFO_V1(kcf_auto_assign);

/* how long a deferred allocation waits: nobody free, or candidates busy */
#define KCF_NO_TRAINER_RETRY_MS (30 * 1000)
#define KCF_BUSY_TRAINER_RETRY_MS 20

/*
 * Up to four trainers eligible for purchase $1 (course $2), best first; $3
 * limits the search to one trainer.  Candidates are ranked by load first and
 * checked lazily in that order, so the usual case checks one or two.
 */
#define ELIGIBLE_TRAINERS_SQL \
	"WITH pl AS MATERIALIZED (SELECT * FROM kc_flow.purchase_plan($1))," \
	" span AS (SELECT range_agg(tstzrange(starts_at, ends_at)) AS times, count(*) AS n FROM pl)," \
	" cand AS (" \
	"  SELECT t.id, t.timezone" \
	"    FROM kc_flow.trainers t" \
	"    JOIN kc_flow.trainer_courses tc ON tc.trainer_id = t.id" \
	"   CROSS JOIN LATERAL (SELECT count(*) AS load FROM kc_flow.trainer_allocations a" \
	"                        WHERE a.trainer_id = t.id AND a.status IN ('approved', 'active')) l" \
	"   WHERE tc.course_id = $2 AND t.is_active AND ($3::uuid IS NULL OR t.id = $3)" \
	"     AND l.load < t.max_active_students" \
	"   ORDER BY l.load, t.id OFFSET 0)" \
	" SELECT c.id FROM cand c, span" \
	"  WHERE span.n > 0" \
	"    AND NOT EXISTS (SELECT 1 FROM kc_flow.trainer_bookings b" \
	"                     WHERE b.trainer_id = c.id AND b.during && span.times)" \
	"    AND NOT EXISTS (SELECT 1 FROM pl WHERE NOT EXISTS (" \
	"          SELECT 1 FROM kc_flow.trainer_availability av" \
	"           WHERE av.trainer_id = c.id" \
	"             AND av.weekday = extract(isodow FROM pl.starts_at AT TIME ZONE c.timezone)::int" \
	"             AND av.start_time <= (pl.starts_at AT TIME ZONE c.timezone)::time" \
	"             AND pl.ends_at AT TIME ZONE c.timezone" \
	"                 <= (pl.starts_at AT TIME ZONE c.timezone)::date + av.end_time))" \
	"  LIMIT 4"

typedef struct Allocation
{
	Datum		id;
	Datum		purchase_id;
	Datum		payment_id;		/* the correlation id of every event */
	Datum		student_id;
	Datum		course_id;
	bool		pending;
	bool		created;
	Datum		trainer_id;		/* when not pending */
} Allocation;

/* Finds or creates the allocation row of a purchase and locks it. */
static bool
lock_allocation(Datum purchase_id, Allocation *alloc)
{
	static SPIPlanPtr find_plan = NULL;
	static SPIPlanPtr insert_plan = NULL;
	Oid			types[2] = {UUIDOID, TEXTOID};
	Datum		values[2];
	bool		isnull;

	kcf_plan(&find_plan,
			 "SELECT a.id, a.purchase_id, a.student_id, a.course_id, a.status = 'pending', a.trainer_id,"
			 "       pu.payment_id"
			 "  FROM kc_flow.trainer_allocations a"
			 "  JOIN kc_flow.student_course_purchases pu ON pu.id = a.purchase_id"
			 " WHERE a.purchase_id = $1 FOR UPDATE OF a",
			 1, types);
	kcf_plan(&insert_plan,
			 "INSERT INTO kc_flow.trainer_allocations (purchase_id, student_id, course_id, session_mode)"
			 " SELECT pu.id, pu.student_id, pu.course_id, $2"
			 "   FROM kc_flow.student_course_purchases pu WHERE pu.id = $1 AND pu.is_active"
			 " ON CONFLICT (purchase_id) DO NOTHING"
			 " RETURNING id, purchase_id, student_id, course_id, true, trainer_id,"
			 "   (SELECT payment_id FROM kc_flow.student_course_purchases WHERE id = $1)",
			 2, types);

	values[0] = purchase_id;
	values[1] = CStringGetTextDatum(kcf_session_generation == KCF_SESSIONS_ROLLING ? "rolling" : "full");
	alloc->created = false;
	if (kcf_exec(find_plan, values, NULL, 1) == 0)
	{
		if (kcf_exec(insert_plan, values, NULL, 1) > 0)
			alloc->created = true;
		else if (kcf_exec(find_plan, values, NULL, 1) == 0)
			return false;		/* no active purchase: nothing to allocate */
	}
	alloc->id = kcf_get_datum(0, 1, &isnull);
	alloc->purchase_id = kcf_get_datum(0, 2, &isnull);
	alloc->student_id = kcf_get_datum(0, 3, &isnull);
	alloc->course_id = kcf_get_datum(0, 4, &isnull);
	alloc->pending = kcf_get_bool(0, 5, &isnull);
	alloc->trainer_id = kcf_get_datum(0, 6, &isnull);
	alloc->payment_id = kcf_get_datum(0, 7, &isnull);
	return true;
}

/* Eligible trainers right now (fresh snapshot); only_trainer may be 0. */
static int
eligible_trainers(const Allocation *alloc, Datum only_trainer, Datum **trainers)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[3] = {UUIDOID, UUIDOID, UUIDOID};
	Datum		values[3];
	char		nulls[3] = "   ";
	int			n;

	kcf_plan(&plan, ELIGIBLE_TRAINERS_SQL, 3, types);
	values[0] = alloc->purchase_id;
	values[1] = alloc->course_id;
	values[2] = only_trainer;
	if (only_trainer == (Datum) 0)
		nulls[2] = 'n';
	n = kcf_exec(plan, values, nulls, 0);
	*trainers = palloc(sizeof(Datum) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		(*trainers)[i] = kcf_get_datum(i, 1, &isnull);
	}
	return n;
}

/* Locks a trainer's row unless another transaction holds it. */
static bool
try_lock_trainer(Datum trainer_id)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {UUIDOID};
	Datum		values[1] = {trainer_id};

	kcf_plan(&plan,
			 "SELECT 1 FROM kc_flow.trainers WHERE id = $1 FOR NO KEY UPDATE SKIP LOCKED",
			 1, types);
	return kcf_exec(plan, values, NULL, 1) > 0;
}

/* Books every planned session on the trainer and approves the allocation. */
static int64
book_trainer(const Allocation *alloc, Datum trainer_id)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[2] = {UUIDOID, UUIDOID};
	Datum		values[2] = {alloc->id, trainer_id};
	bool		isnull;

	kcf_plan(&plan,
			 "WITH b AS ("
			 "  INSERT INTO kc_flow.trainer_bookings (allocation_id, seq, trainer_id, local_date, local_time, during)"
			 "  SELECT a.id, pl.seq, $2, pl.local_date, pl.local_time, tstzrange(pl.starts_at, pl.ends_at)"
			 "    FROM kc_flow.trainer_allocations a, kc_flow.purchase_plan(a.purchase_id) pl"
			 "   WHERE a.id = $1)"
			 " UPDATE kc_flow.trainer_allocations"
			 "    SET trainer_id = $2, status = 'approved', allocated_at = now(), updated_at = now()"
			 "  WHERE id = $1"
			 " RETURNING jsonb_build_object('allocation_id', id, 'purchase_id', purchase_id,"
			 "   'trainer_id', trainer_id, 'course_id', course_id)::text",
			 2, types);
	kcf_exec(plan, values, NULL, 1);
	(void) isnull;
	return kcf_emit("TRAINER_ALLOCATED", alloc->payment_id, alloc->student_id, kcf_get_text(0, 1));
}

static void
emit_pending(const Allocation *alloc, const char *reason)
{
	char	   *payload;

	payload = psprintf("{\"allocation_id\":\"%s\",\"purchase_id\":\"%s\",\"reason\":\"%s\"}",
					   DatumGetCString(DirectFunctionCall1(uuid_out, alloc->id)),
					   DatumGetCString(DirectFunctionCall1(uuid_out, alloc->purchase_id)),
					   reason);
	kcf_emit("ALLOCATION_PENDING", alloc->payment_id, alloc->student_id, payload);
}

typedef enum AllocResult
{
	ALLOC_ASSIGNED,				/* a trainer is (now or already) allocated */
	ALLOC_NO_PURCHASE,			/* the purchase is gone or ended: nothing to do */
	ALLOC_PENDING,				/* nobody is free: the allocation stays pending */
	ALLOC_BUSY					/* candidates are being booked by others right now */
} AllocResult;

/*
 * Allocates a trainer to a purchase if one is free; *trainer is the trainer,
 * *next_event the TRAINER_ALLOCATED event emitted (0 if none).
 */
static AllocResult
allocate(Datum purchase_id, Datum *trainer, int64 *next_event)
{
	Allocation	alloc;
	Datum	   *trainers;
	bool		busy = false;
	int			n;

	*next_event = 0;
	if (!lock_allocation(purchase_id, &alloc))
		return ALLOC_NO_PURCHASE;
	if (!alloc.pending)
	{
		*trainer = alloc.trainer_id;
		return ALLOC_ASSIGNED;
	}

	n = eligible_trainers(&alloc, (Datum) 0, &trainers);
	for (int i = 0; i < n; i++)
	{
		Datum	   *recheck;

		if (!try_lock_trainer(trainers[i]))
		{
			busy = true;
			continue;
		}
		if (eligible_trainers(&alloc, trainers[i], &recheck) == 0)
			continue;
		*next_event = book_trainer(&alloc, trainers[i]);
		*trainer = trainers[i];
		return ALLOC_ASSIGNED;
	}
	if (busy)
		return ALLOC_BUSY;
	if (alloc.created)
		emit_pending(&alloc, "no_trainer_available");
	return ALLOC_PENDING;
}

KcfOutcome
kcf_stage_allocation(const KcfEvent *event, KcfStageResult *result)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(event->id)};
	bool		isnull;
	Datum		purchase_id;
	Datum		trainer;

	kcf_plan(&plan,
			 "SELECT (payload->>'purchase_id')::uuid FROM kc_flow.events WHERE id = $1",
			 1, types);
	kcf_exec(plan, values, NULL, 1);
	purchase_id = kcf_get_datum(0, 1, &isnull);
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("event " INT64_FORMAT " has no purchase_id in its payload", event->id)));

	switch (allocate(purchase_id, &trainer, &result->next_event))
	{
		case ALLOC_ASSIGNED:
		case ALLOC_NO_PURCHASE:
			return KCF_DONE;
		case ALLOC_BUSY:
			result->defer_ms = KCF_BUSY_TRAINER_RETRY_MS;
			return KCF_DEFER;
		case ALLOC_PENDING:
			break;
	}
	result->defer_ms = KCF_NO_TRAINER_RETRY_MS;
	return KCF_DEFER;
}

/* Marks the queued allocation work of a purchase as done by hand. */
static void
settle_queued_allocation(Datum purchase_id)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {UUIDOID};
	Datum		values[1] = {purchase_id};

	kcf_plan(&plan,
			 "WITH d AS ("
			 "  DELETE FROM kc_flow.event_queue q USING kc_flow.events e"
			 "   WHERE e.id = q.event_id AND q.consumer = 'allocation'"
			 "     AND e.event_type = 'PURCHASE_CREATED' AND e.payload->>'purchase_id' = $1::text"
			 "  RETURNING q.event_id)"
			 " INSERT INTO kc_flow.processed_events (event_id, consumer)"
			 " SELECT event_id, 'allocation' FROM d ON CONFLICT DO NOTHING",
			 1, types);
	kcf_exec(plan, values, NULL, 0);
}

/* kc_flow.auto_assign(purchase_id): allocation by hand; NULL when nobody is free. */
Datum
kcf_auto_assign(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr exists_plan = NULL;
	Datum		purchase_id = PG_GETARG_DATUM(0);
	Oid			types[1] = {UUIDOID};
	Datum		values[1] = {purchase_id};
	Datum		trainer = (Datum) 0;
	int64		next_event;
	AllocResult res;

	SPI_connect();
	kcf_plan(&exists_plan,
			 "SELECT 1 FROM kc_flow.student_course_purchases WHERE id = $1", 1, types);
	if (kcf_exec(exists_plan, values, NULL, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("purchase %s does not exist",
						DatumGetCString(DirectFunctionCall1(uuid_out, purchase_id)))));

	res = allocate(purchase_id, &trainer, &next_event);
	if (res == ALLOC_ASSIGNED)
	{
		pg_uuid_t  *copy = SPI_palloc(sizeof(pg_uuid_t));

		memcpy(copy, DatumGetPointer(trainer), sizeof(pg_uuid_t));
		trainer = UUIDPGetDatum(copy);
		settle_queued_allocation(purchase_id);
	}
	SPI_finish();

	switch (res)
	{
		case ALLOC_ASSIGNED:
			PG_RETURN_DATUM(trainer);
		case ALLOC_NO_PURCHASE:
			ereport(NOTICE,
					(errmsg("purchase is no longer active, no trainer allocated")));
			break;
		case ALLOC_BUSY:
			ereport(NOTICE,
					(errmsg("every eligible trainer is being booked by another transaction"),
					 errhint("Try again in a moment.")));
			break;
		case ALLOC_PENDING:
			ereport(NOTICE,
					(errmsg("no trainer is free for this purchase, the allocation stays pending")));
			break;
	}
	PG_RETURN_NULL();
}
