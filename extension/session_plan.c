/*
 * session_plan.c
 *      The planned sessions of a purchase, computed once per purchase in a batch.
 *
 * The allocation stage needs the plan (kc_flow.purchase_plan) to search and
 * book; the sessions stage, run next in the same batch for the allocation it
 * approved, needs the same rows to insert.  A plan never changes for a
 * purchase (it is anchored at the payment's success time), so the allocation
 * stage hands its plan over and the sessions stage takes it instead of
 * computing it again.  The plans handed over in a batch are held until the
 * next batch starts (the dispatcher runs the sessions stage of the whole
 * batch at its end, dispatch.c), in a memory context of their own that
 * outlives the subtransactions of a batch; when the sessions stage finds none
 * for its allocation (a retried or rolling top-up), it loads the plan from
 * SQL.
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

/* the plans handed over since the batch began, and the last one's allocation */
typedef struct HandedOver
{
	pg_uuid_t	allocation;
	KcfPlan		plan;
} HandedOver;

static MemoryContext handover_context = NULL;
static List *handed_over = NIL;
static bool handed_over_since_mark = false;

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

/* The plan handed over for allocation allocation_id in this batch, if any. */
bool
kcf_plan_handed_over(Datum allocation_id, KcfPlan *plan)
{
	ListCell   *lc;

	foreach(lc, handed_over)
	{
		HandedOver *h = (HandedOver *) lfirst(lc);

		if (memcmp(&h->allocation, DatumGetUUIDP(allocation_id), sizeof(pg_uuid_t)) == 0)
		{
			*plan = h->plan;
			return true;
		}
	}
	return false;
}

/*
 * The plan of allocation allocation_id's purchase: the one handed over for it
 * in this batch if any, else computed.  Valid until the next batch begins.
 */
void
kcf_plan_of_allocation(Datum allocation_id, KcfPlan *plan)
{
	static SPIPlanPtr stmt = NULL;
	Oid			types[1] = {UUIDOID};
	Datum		values[1] = {allocation_id};

	if (kcf_plan_handed_over(allocation_id, plan))
		return;
	kcf_plan(&stmt,
			 PLAN_COLUMNS
			 " FROM kc_flow.trainer_allocations a, kc_flow.purchase_plan(a.purchase_id) pl"
			 " WHERE a.id = $1",
			 1, types);
	kcf_exec(stmt, values, NULL, 1);
	read_plan(plan);
}

/* Keeps plan as allocation allocation_id's for the sessions stage of this batch. */
void
kcf_plan_hand_over(Datum allocation_id, const KcfPlan *plan)
{
	MemoryContext old;
	HandedOver *h;

	if (handover_context == NULL)
		handover_context = AllocSetContextCreate(TopMemoryContext, "kc_flow plan hand-over",
												 ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(handover_context);
	h = palloc(sizeof(HandedOver));
	memcpy(&h->allocation, DatumGetUUIDP(allocation_id), sizeof(pg_uuid_t));
	h->plan.times = datumCopy(plan->times, false, -1);
	h->plan.dates = datumCopy(plan->dates, false, -1);
	h->plan.local_times = datumCopy(plan->local_times, false, -1);
	h->plan.starts = datumCopy(plan->starts, false, -1);
	h->plan.ends = datumCopy(plan->ends, false, -1);
	h->plan.sessions = plan->sessions;
	handed_over = lcons(h, handed_over);
	MemoryContextSwitchTo(old);
	handed_over_since_mark = true;
}

/* Forgets every plan handed over: a new batch begins. */
void
kcf_plan_hand_over_reset(void)
{
	if (handover_context != NULL)
		MemoryContextReset(handover_context);
	handed_over = NIL;
	handed_over_since_mark = false;
}

/*
 * Whether a plan was handed over since the last call, and for which
 * allocation: the dispatcher asks after each job, so that a
 * TRAINER_ALLOCATED event is matched with the plan its own stage booked.
 */
bool
kcf_plan_handed_over_since(Datum *allocation_id)
{
	bool		was = handed_over_since_mark;

	handed_over_since_mark = false;
	if (was)
		*allocation_id = UUIDPGetDatum(&((HandedOver *) linitial(handed_over))->allocation);
	return was;
}
