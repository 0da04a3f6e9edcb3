/*
 * session_plan.c
 *      The planned sessions of a purchase, computed once per purchase in a batch.
 *
 * The allocation stage needs the plan to search and book; the sessions
 * stage, run next in the same batch for the allocation it approved, needs the
 * same rows to insert.  A plan never changes for a purchase (it is anchored
 * at the payment's success time), so the allocation stage hands its plan over
 * and the sessions stage takes it instead of computing it again.  The plans
 * handed over in a batch are held until the next batch starts (the
 * dispatcher runs the sessions stage of the whole batch at its end,
 * dispatch.c), in a memory context of their own that outlives the
 * subtransactions of a batch; when the sessions stage finds none for its
 * allocation (a retried or rolling top-up), it computes the plan again.
 *
 * The plan is kc_flow.purchase_plan() (30_planning.sql), the rule.  For a
 * slot of the shape validate_time_slot() accepts it is computed here instead,
 * from the slot, tier, session length and reference time read by primary
 * key: the same dates (each weekday's first date from the first day on, then
 * every 7 days, the first ones in date order) and the same instants (the same
 * PostgreSQL functions as the SQL's casts and AT TIME ZONE, called directly).
 * Any other slot goes to purchase_plan().  test/pgtap/plan_in_c.sql compares
 * the two.
 */
#include "kc_flow.h"

#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/datum.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/multirangetypes.h"
#include "utils/numeric.h"
#include "utils/rangetypes.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"
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

/* What the plan is computed from, read by primary key: slot, tier, minutes, reference. */
#define PLAN_INPUTS \
	"SELECT p.time_slot, pu.purchase_tier, c.session_minutes, coalesce(p.succeeded_at, p.created_at)" \
	"  FROM kc_flow.student_course_purchases pu" \
	"  JOIN kc_flow.payments p ON p.id = pu.payment_id" \
	"  JOIN kc_flow.courses c ON c.id = pu.course_id"

/* A slot's parts the plan needs; false when it is not of the shape planned here. */
static bool
slot_parts(Jsonb *slot, bool *weekday, text **zone, Datum *start, bool *has_starts_on, Datum *starts_on)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken token;
	JsonbValue *days,
			   *st,
			   *tz,
			   *on;
	int			keys = kcf_slot_key_count(slot);

	if (keys < 0)
		return false;
	days = getKeyJsonValueFromContainer(&slot->root, "weekdays", 8, NULL);
	st = getKeyJsonValueFromContainer(&slot->root, "start", 5, NULL);
	tz = getKeyJsonValueFromContainer(&slot->root, "timezone", 8, NULL);
	on = getKeyJsonValueFromContainer(&slot->root, "starts_on", 9, NULL);
	if (keys != 3 + (on != NULL) || days == NULL || st == NULL || tz == NULL ||
		days->type != jbvBinary || !JsonContainerIsArray(days->val.binary.data) ||
		JsonContainerIsScalar(days->val.binary.data) ||
		st->type != jbvString || tz->type != jbvString || (on != NULL && on->type != jbvString))
		return false;

	/* the weekdays: ISO days written as one digit (others: the SQL decides) */
	memset(weekday, 0, sizeof(bool) * 8);
	it = JsonbIteratorInit(days->val.binary.data);
	while ((token = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *digits;

		if (token != WJB_ELEM)
			continue;
		if (v.type != jbvNumeric)
			return false;
		digits = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v.val.numeric)));
		if (strlen(digits) != 1 || digits[0] < '1' || digits[0] > '7')
			return false;
		weekday[digits[0] - '0'] = true;
	}

	/* (slot->>'start')::time, slot->>'timezone', (slot->>'starts_on')::date */
	*start = DirectFunctionCall3(time_in, CStringGetDatum(pnstrdup(st->val.string.val, st->val.string.len)),
								 ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
	*zone = cstring_to_text_with_len(tz->val.string.val, tz->val.string.len);
	*has_starts_on = on != NULL;
	if (on != NULL)
		*starts_on = DirectFunctionCall1(date_in, CStringGetDatum(pnstrdup(on->val.string.val, on->val.string.len)));
	return true;
}

/* ISO day of the week of a date, 1 (Monday) to 7 */
static int
iso_weekday(DateADT d)
{
	int			dow = j2day(d + POSTGRES_EPOCH_JDATE);

	return dow == 0 ? 7 : dow;
}

/*
 * plan_sessions() of 30_planning.sql for a slot of the shape slot_parts()
 * takes; false (nothing computed) for any other.
 */
static bool
compute_plan(Datum slot_datum, int32 sessions, int32 minutes, Datum reference, KcfPlan *plan)
{
	bool		weekday[8];
	text	   *zone;
	Datum		start;
	Datum		starts_on;
	bool		has_starts_on;
	DateADT		first_day;
	DateADT		first[7];
	int			nfirst = 0;
	Datum	   *dates,
			   *times,
			   *starts,
			   *ends;
	RangeType **ranges;
	TypeCacheEntry *range_type;
	int			n = 0;

	if (!slot_parts(DatumGetJsonbP(slot_datum), weekday, &zone, &start, &has_starts_on, &starts_on))
		return false;
	if (has_starts_on)
		first_day = DatumGetDateADT(starts_on);
	else
		first_day = DatumGetDateADT(DirectFunctionCall1(timestamp_date,
														DirectFunctionCall2(timestamptz_zone, PointerGetDatum(zone),
																			reference))) + 1;
	/* each weekday's first date from first_day on: in date order, then every 7 days */
	for (int i = 0; i < 7; i++)
		if (weekday[iso_weekday(first_day + i)])
			first[nfirst++] = first_day + i;

	dates = palloc(sizeof(Datum) * Max(sessions, 1));
	times = palloc(sizeof(Datum) * Max(sessions, 1));
	starts = palloc(sizeof(Datum) * Max(sessions, 1));
	ends = palloc(sizeof(Datum) * Max(sessions, 1));
	ranges = palloc(sizeof(RangeType *) * Max(sessions, 1));
	range_type = lookup_type_cache(TSTZRANGEOID, TYPECACHE_RANGE_INFO);
	for (int week = 0; nfirst > 0 && n < sessions; week++)
		for (int i = 0; i < nfirst && n < sessions; i++, n++)
		{
			DateADT		d = first[i] + 7 * week;
			Datum		local = DirectFunctionCall2(datetime_timestamp, DateADTGetDatum(d), start);
			Timestamp	s = DatumGetTimestampTz(DirectFunctionCall2(timestamp_zone, PointerGetDatum(zone), local));
			RangeBound	lower = {.val = TimestampTzGetDatum(s), .infinite = false, .inclusive = true, .lower = true};
			RangeBound	upper = {.infinite = false, .inclusive = false, .lower = false};

			dates[n] = DateADTGetDatum(d);
			times[n] = start;
			starts[n] = TimestampTzGetDatum(s);
			/* + make_interval(mins => minutes): an interval of time only */
			ends[n] = TimestampTzGetDatum(s + (TimestampTz) minutes * USECS_PER_MINUTE);
			upper.val = ends[n];
			ranges[n] = make_range(range_type, &lower, &upper, false);
		}
	plan->sessions = n;
	if (n == 0)
		return true;
	plan->times = MultirangeTypePGetDatum(make_multirange(TSTZMULTIRANGEOID, range_type, n, ranges));
	plan->dates = PointerGetDatum(construct_array(dates, n, DATEOID, sizeof(DateADT), true, TYPALIGN_INT));
	plan->local_times = PointerGetDatum(construct_array(times, n, TIMEOID, sizeof(TimeADT), FLOAT8PASSBYVAL,
														TYPALIGN_DOUBLE));
	plan->starts = PointerGetDatum(construct_array(starts, n, TIMESTAMPTZOID, sizeof(TimestampTz),
												   FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	plan->ends = PointerGetDatum(construct_array(ends, n, TIMESTAMPTZOID, sizeof(TimestampTz),
												 FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	return true;
}

/*
 * The plan of the purchase inputs selects ($1 its key), computed here when
 * the slot allows, else by sql (purchase_plan()'s columns, $1 the same key).
 */
static void
plan_by(SPIPlanPtr *inputs_stmt, const char *inputs, SPIPlanPtr *sql_stmt, const char *sql,
		Datum key, KcfPlan *plan)
{
	Oid			types[1] = {UUIDOID};
	Datum		values[1] = {key};
	bool		isnull;

	kcf_plan(inputs_stmt, inputs, 1, types);
	if (kcf_exec(*inputs_stmt, values, NULL, 1) == 0)
	{
		plan->sessions = 0;		/* no such purchase: no sessions */
		return;
	}
	if (compute_plan(kcf_get_datum(0, 1, &isnull), DatumGetInt32(kcf_get_datum(0, 2, &isnull)),
					 DatumGetInt32(kcf_get_datum(0, 3, &isnull)), kcf_get_datum(0, 4, &isnull), plan))
		return;
	kcf_plan(sql_stmt, sql, 1, types);
	kcf_exec(*sql_stmt, values, NULL, 1);
	read_plan(plan);
}

/* The plan of purchase purchase_id (no sessions when it has none). */
void
kcf_plan_of_purchase(Datum purchase_id, KcfPlan *plan)
{
	static SPIPlanPtr inputs = NULL;
	static SPIPlanPtr stmt = NULL;

	plan_by(&inputs, PLAN_INPUTS " WHERE pu.id = $1",
			&stmt, PLAN_COLUMNS " FROM kc_flow.purchase_plan($1) pl", purchase_id, plan);
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
	static SPIPlanPtr inputs = NULL;
	static SPIPlanPtr stmt = NULL;

	if (kcf_plan_handed_over(allocation_id, plan))
		return;
	plan_by(&inputs, PLAN_INPUTS " JOIN kc_flow.trainer_allocations a ON a.purchase_id = pu.id WHERE a.id = $1",
			&stmt,
			PLAN_COLUMNS
			" FROM kc_flow.trainer_allocations a, kc_flow.purchase_plan(a.purchase_id) pl"
			" WHERE a.id = $1",
			allocation_id, plan);
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
