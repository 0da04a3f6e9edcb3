/*
 * session_plan.c
 *      The planned sessions of a purchase, computed once per purchase in a batch.
 *
 * The allocation stage needs the plan (kc_flow.purchase_plan) to search and
 * book; the sessions stage, run next in the same batch for the allocation it
 * approved, needs the same rows to insert.  A plan never changes for a
 * purchase (it is anchored at the payment's success time), so the allocation
 * stage hands its plan over and the sessions stage takes it instead of
 * computing it again.  One plan is held at a time, in a memory context of its
 * own that outlives the subtransactions of a batch; when the sessions stage
 * finds none for its allocation (a retried or rolling top-up), it loads the
 * plan from SQL.
 */
#include "kc_flow.h"

#include "catalog/pg_type.h"
#include "utils/datum.h"
#include "utils/memutils.h"
#include "utils/uuid.h"

/* the plan's columns, each aggregated in session order */
#define PLAN_COLUMNS \
	"SELECT range_agg(tstzrange(pl.starts_at, pl.ends_at)), array_agg(pl.local_date ORDER BY pl.seq)," \
	"       array_agg(pl.local_time ORDER BY pl.seq), array_agg(pl.starts_at ORDER BY pl.seq)," \
	"       array_agg(pl.ends_at ORDER BY pl.seq), count(*)"

static MemoryContext handover_context = NULL;
static pg_uuid_t handover_allocation;
static bool handover_held = false;
static KcfPlan handover_plan;

static void
read_plan(KcfPlan *plan)
{
	bool		isnull;

	plan->times = kcf_get_datum(0, 1, &isnull);
	plan->dates = kcf_get_datum(0, 2, &isnull);
	plan->local_times = kcf_get_datum(0, 3, &isnull);
	plan->starts = kcf_get_datum(0, 4, &isnull);
	plan->ends = kcf_get_datum(0, 5, &isnull);
	plan->sessions = kcf_get_int64(0, 6, &isnull);
}

/* The plan of purchase purchase_id (no sessions when it has none). */
void
kcf_plan_of_purchase(Datum purchase_id, KcfPlan *plan)
{
	static SPIPlanPtr stmt = NULL;
	Oid			types[1] = {UUIDOID};
	Datum		values[1] = {purchase_id};

	kcf_plan(&stmt, PLAN_COLUMNS " FROM kc_flow.purchase_plan($1) pl", 1, types);
	kcf_exec(stmt, values, NULL, 1);
	read_plan(plan);
}

/*
 * The plan of allocation allocation_id's purchase: the one handed over for it
 * if any, else computed.  Valid until the next hand-over.
 */
void
kcf_plan_of_allocation(Datum allocation_id, KcfPlan *plan)
{
	static SPIPlanPtr stmt = NULL;
	Oid			types[1] = {UUIDOID};
	Datum		values[1] = {allocation_id};

	if (handover_held &&
		memcmp(&handover_allocation, DatumGetUUIDP(allocation_id), sizeof(pg_uuid_t)) == 0)
	{
		*plan = handover_plan;
		return;
	}
	kcf_plan(&stmt,
			 PLAN_COLUMNS
			 " FROM kc_flow.trainer_allocations a, kc_flow.purchase_plan(a.purchase_id) pl"
			 " WHERE a.id = $1",
			 1, types);
	kcf_exec(stmt, values, NULL, 1);
	read_plan(plan);
}

/* Keeps plan as allocation allocation_id's for the sessions stage. */
void
kcf_plan_hand_over(Datum allocation_id, const KcfPlan *plan)
{
	MemoryContext old;

	if (handover_context == NULL)
		handover_context = AllocSetContextCreate(TopMemoryContext, "kc_flow plan hand-over",
												 ALLOCSET_SMALL_SIZES);
	MemoryContextReset(handover_context);
	handover_held = false;
	old = MemoryContextSwitchTo(handover_context);
	handover_plan.times = datumCopy(plan->times, false, -1);
	handover_plan.dates = datumCopy(plan->dates, false, -1);
	handover_plan.local_times = datumCopy(plan->local_times, false, -1);
	handover_plan.starts = datumCopy(plan->starts, false, -1);
	handover_plan.ends = datumCopy(plan->ends, false, -1);
	handover_plan.sessions = plan->sessions;
	MemoryContextSwitchTo(old);
	memcpy(&handover_allocation, DatumGetUUIDP(allocation_id), sizeof(pg_uuid_t));
	handover_held = true;
}
