/*
 * stage_allocation.c
 *      PURCHASE_CREATED -> a trainer for the purchase, then TRAINER_ALLOCATED.
 *
 * The choice is docs/design.md §4: an active trainer who may teach the course,
 * has a free place, is available at every planned session (checked in the
 * trainer's own zone, one session at a time, so daylight saving is right) and
 * has no booking overlapping any of them; least loaded first, ties by id.
 * A new allocation is inserted with its final state, approved with its
 * booking in one statement, or pending when nobody is free; the plan it booked
 * is handed over to the sessions stage (session_plan.c).
 *
 * Concurrent allocations serialize per trainer on the trainer's row: the
 * candidate is locked (skipping trainers another allocation holds right now,
 * and without a new version of the row), then its load counted and its
 * bookings checked again with a fresh snapshot, then booked.  The ranking
 * reads the loads from trainer_load.c's hint when preloaded, so no
 * allocation updates the trainer's row.  The exclusion constraint on
 * trainer_bookings is the last line of defence.  When nobody
 * is free the allocation stays pending and the event is deferred.
 */
#include "kc_flow.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

PG_FUNCTION_INFO_V1(kcf_auto_assign);

/* how long a deferred allocation waits: nobody free, or candidates busy */
#define KCF_NO_TRAINER_RETRY_MS (30 * 1000)
#define KCF_BUSY_TRAINER_RETRY_MS 20
/* candidates tried per attempt before deferring */
#define MAX_CANDIDATES 16

/*
 * Whether trainer <t> has a booking overlapping plan times $2: one probe of
 * the exclusion constraint's index with the plan as a multirange.  It finds
 * the trainer's bookings whose span meets the plan's, one row per allocation
 * (so at most the trainer's capacity), and compares each exactly.  OFFSET 0
 * keeps it a per-candidate probe, evaluated lazily.
 */
#define BOOKED_SQL(t) \
	"EXISTS (SELECT 1 FROM kc_flow.trainer_bookings b" \
	"         WHERE b.trainer_id = " t " AND b.during && $2 OFFSET 0)"

/*
 * The course's trainers with a free place in the order of the search, least
 * loaded first, then by id; their ids come from trainer_courses' index by
 * course (which only takes inserts) as an array.  Ranked by trainer_load.c's
 * hint when preloaded (best_ranked(), below); else COUNTED_RANKING counts
 * each trainer's approved and active allocations.
 */
#define COURSE_TRAINERS "ARRAY (SELECT tc.trainer_id FROM kc_flow.trainer_courses tc WHERE tc.course_id = $1)"
#define COUNTED_RANKING \
	"SELECT s.id, s.load FROM (" \
	"  SELECT r.id, r.max_active_students," \
	"         (SELECT count(*)::int FROM kc_flow.trainer_allocations a" \
	"           WHERE a.trainer_id = r.id AND a.status IN ('approved', 'active')) AS load" \
	"    FROM unnest(" COURSE_TRAINERS ") u(id)" \
	"    JOIN kc_flow.trainers r ON r.id = u.id" \
	"   WHERE r.is_active AND r.id <> ALL ($5) OFFSET 0) s" \
	" WHERE s.load < s.max_active_students" \
	" ORDER BY s.load, s.id"

/*
 * The best trainer eligible for course $1 with planned times $2 (the same as
 * arrays $3/$4), leaving out the trainers in $5, locked (lock) or not.
 *
 * c ranks the course's free trainers (ranking, above): their rows are read
 * by primary key, or by one hashed scan of the table while it is small (the
 * planner's choice: an array counts as a few rows, so the probes win early
 * as the table grows).  The load is not in the
 * trainer's row, so allocations leave no dead versions of it for a search to
 * read under a held xmin horizon (docs/extension.md, "Allocation").
 *
 * f then checks the ranked trainers lazily, one at a time in that order (a
 * LATERAL subquery with OFFSET 0 is never flattened into a join that would
 * check them all): the row is read again by primary key, its bookings and
 * availability checked, and with the lock it is locked in the same
 * subquery, SKIP LOCKED: a fitting trainer that another transaction holds (a
 * worker's batch that booked it and has not committed) yields no row and
 * the next in the ranking is checked.  Its capacity is checked after the
 * lock, against its exact load (still_fits()).  The outer ORDER BY must
 * stay c's own order, so that no Sort is planned above the join: a Sort would
 * run f, and take its lock, for every fitting trainer before LIMIT 1.
 */
#define ELIGIBLE_TRAINERS_SQL(ranking, lock) \
	"SELECT f.id FROM (" ranking " OFFSET 0) c," \
	"  LATERAL (SELECT t.id FROM kc_flow.trainers t" \
	"   WHERE t.id = c.id AND t.is_active" \
	"     AND NOT " BOOKED_SQL("t.id") \
	"     AND NOT EXISTS (SELECT 1 FROM unnest($3::timestamptz[], $4::timestamptz[]) AS pl(starts_at, ends_at)" \
	"          WHERE NOT EXISTS (" \
	"            SELECT 1 FROM kc_flow.trainer_availability av" \
	"             WHERE av.trainer_id = t.id" \
	"               AND av.weekday = extract(isodow FROM pl.starts_at AT TIME ZONE t.timezone)::int" \
	"               AND av.start_time <= (pl.starts_at AT TIME ZONE t.timezone)::time" \
	"               AND pl.ends_at AT TIME ZONE t.timezone" \
	"                   <= (pl.starts_at AT TIME ZONE t.timezone)::date + av.end_time) OFFSET 0)" \
	"   OFFSET 0" lock ") f" \
	" ORDER BY c.load, c.id LIMIT 1"

/*
 * The ranked search (when ranked by the hint): the course's active trainers
 * and their capacity and zone (ROSTER_SQL, kept between purchases until a
 * change of trainers or trainer_courses, see course_roster()), their loads
 * from trainer_load.c in one call, those with a free place sorted here by load, then id; then
 * each checked in that order by CHECK_SQL, one statement per candidate,
 * until one fits: read again by primary key (with the lock: locked, SKIP
 * LOCKED), not booked over the plan and available at every planned session.
 * The availability is checked on the plan in the trainer's zone, converted
 * here once per zone and plan ($3..$6: each session's ISO weekday, local
 * start time, local date and local end) instead of four conversions per
 * session and trainer; $7 is the zone it was converted to.  The same rule as
 * ELIGIBLE_TRAINERS_SQL, without a statement that ranks every trainer.
 */
#define ROSTER_SQL \
	"SELECT r.id, r.max_active_students, r.timezone" \
	"  FROM unnest(" COURSE_TRAINERS ") u(id)" \
	"  JOIN kc_flow.trainers r ON r.id = u.id" \
	" WHERE r.is_active"
#define CHECK_SQL(lock) \
	"SELECT t.id FROM kc_flow.trainers t" \
	" WHERE t.id = $1 AND t.is_active AND t.timezone = $7" \
	"   AND NOT " BOOKED_SQL("t.id") \
	"   AND NOT EXISTS (SELECT 1 FROM unnest($3::int[], $4::time[], $5::date[], $6::timestamp[])" \
	"                                 AS pl(weekday, start_time, day, ends_at)" \
	"        WHERE NOT EXISTS (" \
	"          SELECT 1 FROM kc_flow.trainer_availability av" \
	"           WHERE av.trainer_id = t.id AND av.weekday = pl.weekday" \
	"             AND av.start_time <= pl.start_time AND pl.ends_at <= pl.day + av.end_time) OFFSET 0)" lock

/*
 * Whether trainer $1 has a booking overlapping $2, and its capacity (run
 * after the lock: fresh snapshot).
 */
#define OVERLAPS_SQL "SELECT " BOOKED_SQL("$1") ", max_active_students FROM kc_flow.trainers WHERE id = $1"

typedef struct Allocation
{
	Datum		id;				/* 0 while the allocation does not exist yet */
	Datum		purchase_id;
	Datum		payment_id;		/* the correlation id of every event */
	Datum		student_id;
	Datum		course_id;
	bool		pending;
	Datum		trainer_id;		/* when not pending */
} Allocation;

/*
 * Finds the allocation of a purchase and locks it, or, when there is none yet,
 * reads the active purchase it is to be made for (alloc->id stays 0: it is
 * inserted once its state is known, booked or pending).  False when neither.
 */
static bool
find_allocation(Datum purchase_id, Allocation *alloc)
{
	static SPIPlanPtr find_plan = NULL;
	static SPIPlanPtr purchase_plan = NULL;
	Oid			types[1] = {UUIDOID};
	Datum		values[1] = {purchase_id};
	bool		isnull;

	kcf_plan(&find_plan,
			 "SELECT a.id, a.purchase_id, a.student_id, a.course_id, a.status = 'pending', a.trainer_id,"
			 "       pu.payment_id"
			 "  FROM kc_flow.trainer_allocations a"
			 "  JOIN kc_flow.student_course_purchases pu ON pu.id = a.purchase_id"
			 " WHERE a.purchase_id = $1 FOR UPDATE OF a",
			 1, types);
	kcf_plan(&purchase_plan,
			 "SELECT NULL::uuid, pu.id, pu.student_id, pu.course_id, true, NULL::uuid, pu.payment_id"
			 "  FROM kc_flow.student_course_purchases pu WHERE pu.id = $1 AND pu.is_active",
			 1, types);

	if (kcf_exec(find_plan, values, NULL, 1) == 0 &&
		kcf_exec(purchase_plan, values, NULL, 1) == 0)
		return false;			/* no active purchase: nothing to allocate */
	alloc->id = kcf_get_datum(0, 1, &isnull);
	if (isnull)
		alloc->id = (Datum) 0;
	alloc->purchase_id = kcf_get_datum(0, 2, &isnull);
	alloc->student_id = kcf_get_datum(0, 3, &isnull);
	alloc->course_id = kcf_get_datum(0, 4, &isnull);
	alloc->pending = kcf_get_bool(0, 5, &isnull);
	alloc->trainer_id = kcf_get_datum(0, 6, &isnull);
	alloc->payment_id = kcf_get_datum(0, 7, &isnull);
	return true;
}

/* the session mode of a new allocation */
static Datum
session_mode(void)
{
	return CStringGetTextDatum(kcf_session_generation == KCF_SESSIONS_ROLLING ? "rolling" : "full");
}

/*
 * Inserts the pending allocation of a purchase nobody can take now; false
 * when another transaction made its allocation meanwhile.
 */
static bool
insert_pending(Allocation *alloc)
{
	static SPIPlanPtr stmt = NULL;
	Oid			types[4] = {UUIDOID, UUIDOID, UUIDOID, TEXTOID};
	Datum		values[4] = {alloc->purchase_id, alloc->student_id, alloc->course_id, session_mode()};
	bool		isnull;

	kcf_plan(&stmt,
			 "INSERT INTO kc_flow.trainer_allocations (purchase_id, student_id, course_id, session_mode)"
			 " VALUES ($1, $2, $3, $4)"
			 " ON CONFLICT (purchase_id) DO NOTHING RETURNING id",
			 4, types);
	if (kcf_exec(stmt, values, NULL, 1) == 0)
		return false;
	alloc->id = kcf_get_datum(0, 1, &isnull);
	return true;
}

/*
 * Whether the search ranks by trainer_load.c's hint: when preloaded, on the
 * 0.2.0 schema, whose trigger keeps it (0.1.0's kept trainers.active_students
 * instead, until ALTER EXTENSION kc_flow UPDATE).
 */
static bool
load_hinted(void)
{
	Oid			nsp;

	if (!kcf_trainer_load_hinted())
		return false;
	nsp = get_namespace_oid("kc_flow", true);
	return OidIsValid(nsp) &&
		get_attnum(get_relname_relid("trainers", nsp), "active_students") == InvalidAttrNumber;
}

/* a trainer of the course with a free place, as the ranked search orders them */
typedef struct Candidate
{
	pg_uuid_t	id;
	int32		load;
	char	   *zone;
} Candidate;

static int
candidate_cmp(const void *a, const void *b)
{
	const Candidate *x = a;
	const Candidate *y = b;

	if (x->load != y->load)
		return x->load < y->load ? -1 : 1;
	return memcmp(&x->id, &y->id, sizeof(pg_uuid_t));
}

static bool
in_list(const pg_uuid_t *id, const Datum *list, int n)
{
	for (int i = 0; i < n; i++)
		if (memcmp(id, DatumGetUUIDP(list[i]), sizeof(pg_uuid_t)) == 0)
			return true;
	return false;
}

/*
 * A course's roster as ROSTER_SQL read it, kept until the rosters' version
 * moves (trainer_load.c) or another course is searched.
 */
typedef struct Roster
{
	Oid			relid;			/* the allocations table: this installation */
	pg_uuid_t	course;
	uint64		committed;		/* the rosters' version it was read at */
	uint64		own;
	int			n;
	pg_uuid_t  *ids;
	int32	   *capacity;
	char	  **zone;
} Roster;

static MemoryContext roster_context = NULL;
static Roster *roster = NULL;

/* The roster of course_id in installation relid, read again unless the one kept is current. */
static Roster *
course_roster(Oid relid, Datum course_id)
{
	static SPIPlanPtr stmt = NULL;
	Oid			types[1] = {UUIDOID};
	Datum		values[1] = {course_id};
	uint64		committed;
	uint64		own;
	MemoryContext old;
	int			rows;

	kcf_roster_version(&committed, &own);
	if (roster != NULL && roster->relid == relid && roster->committed == committed && roster->own == own &&
		memcmp(&roster->course, DatumGetUUIDP(course_id), sizeof(pg_uuid_t)) == 0)
		return roster;
	if (roster_context == NULL)
		roster_context = AllocSetContextCreate(TopMemoryContext, "kc_flow course roster",
											   ALLOCSET_DEFAULT_SIZES);
	MemoryContextReset(roster_context);
	roster = NULL;
	kcf_plan(&stmt, ROSTER_SQL, 1, types);
	rows = kcf_exec(stmt, values, NULL, 0);
	old = MemoryContextSwitchTo(roster_context);
	roster = palloc(sizeof(Roster));
	roster->relid = relid;
	memcpy(&roster->course, DatumGetUUIDP(course_id), sizeof(pg_uuid_t));
	roster->committed = committed;
	roster->own = own;
	roster->n = rows;
	roster->ids = palloc(sizeof(pg_uuid_t) * Max(rows, 1));
	roster->capacity = palloc(sizeof(int32) * Max(rows, 1));
	roster->zone = palloc(sizeof(char *) * Max(rows, 1));
	for (int i = 0; i < rows; i++)
	{
		bool		isnull;

		memcpy(&roster->ids[i], DatumGetUUIDP(kcf_get_datum(i, 1, &isnull)), sizeof(pg_uuid_t));
		roster->capacity[i] = DatumGetInt32(kcf_get_datum(i, 2, &isnull));
		roster->zone[i] = TextDatumGetCString(kcf_get_datum(i, 3, &isnull));
	}
	MemoryContextSwitchTo(old);
	return roster;
}

/* The course's active trainers with a free place, not in skip, in the search's order. */
static Candidate *
rank_course(Datum course_id, const Datum *skip, int nskip, int *ncand)
{
	Oid			relid = kcf_trainer_load_relid();
	Roster	   *r = course_roster(relid, course_id);
	Candidate  *cand = palloc(sizeof(Candidate) * Max(r->n, 1));
	Datum	   *ids = palloc(sizeof(Datum) * Max(r->n, 1));
	int32	   *loads = palloc(sizeof(int32) * Max(r->n, 1));
	int			n = 0;

	for (int i = 0; i < r->n; i++)
		ids[i] = UUIDPGetDatum(&r->ids[i]);
	kcf_trainer_loads(relid, ids, r->n, loads);
	for (int i = 0; i < r->n; i++)
		if (loads[i] < r->capacity[i] && !in_list(&r->ids[i], skip, nskip))
		{
			cand[n].id = r->ids[i];
			cand[n].load = loads[i];
			cand[n].zone = r->zone[i];
			n++;
		}
	qsort(cand, n, sizeof(Candidate), candidate_cmp);
	*ncand = n;
	return cand;
}

/* The plan in one zone, as CHECK_SQL's $3..$6 take it. */
typedef struct ZonePlan
{
	char	   *zone;
	Datum		args[4];
} ZonePlan;

/* The plan's sessions in zone: ISO weekday, local start time, local date, local end. */
static void
plan_in_zone(const KcfPlan *plan, const char *zone, ZonePlan *zp)
{
	Datum		tz = CStringGetTextDatum(zone);
	Datum	   *starts;
	Datum	   *ends;
	int			n;
	int			nends;
	Datum	   *weekday;
	Datum	   *start_time;
	Datum	   *day;
	Datum	   *ends_at;

	deconstruct_array(DatumGetArrayTypeP(plan->starts), TIMESTAMPTZOID, sizeof(TimestampTz), FLOAT8PASSBYVAL,
					  TYPALIGN_DOUBLE, &starts, NULL, &n);
	deconstruct_array(DatumGetArrayTypeP(plan->ends), TIMESTAMPTZOID, sizeof(TimestampTz), FLOAT8PASSBYVAL,
					  TYPALIGN_DOUBLE, &ends, NULL, &nends);
	Assert(n == nends);
	weekday = palloc(sizeof(Datum) * n);
	start_time = palloc(sizeof(Datum) * n);
	day = palloc(sizeof(Datum) * n);
	ends_at = palloc(sizeof(Datum) * n);
	for (int i = 0; i < n; i++)
	{
		/* pl.starts_at AT TIME ZONE t.timezone, its isodow, ::time and ::date */
		Datum		local = DirectFunctionCall2(timestamptz_zone, tz, starts[i]);
		DateADT		d = DatumGetDateADT(DirectFunctionCall1(timestamp_date, local));
		int			dow = j2day(d + POSTGRES_EPOCH_JDATE);

		weekday[i] = Int32GetDatum(dow == 0 ? 7 : dow);
		start_time[i] = DirectFunctionCall1(timestamp_time, local);
		day[i] = DateADTGetDatum(d);
		ends_at[i] = DirectFunctionCall2(timestamptz_zone, tz, ends[i]);
	}
	zp->zone = pstrdup(zone);
	zp->args[0] = PointerGetDatum(construct_array(weekday, n, INT4OID, sizeof(int32), true, TYPALIGN_INT));
	zp->args[1] = PointerGetDatum(construct_array(start_time, n, TIMEOID, sizeof(TimeADT), FLOAT8PASSBYVAL,
												  TYPALIGN_DOUBLE));
	zp->args[2] = PointerGetDatum(construct_array(day, n, DATEOID, sizeof(DateADT), true, TYPALIGN_INT));
	zp->args[3] = PointerGetDatum(construct_array(ends_at, n, TIMESTAMPOID, sizeof(Timestamp), FLOAT8PASSBYVAL,
												  TYPALIGN_DOUBLE));
}

/*
 * The ranked search: the best trainer for the plan right now, other than
 * those in skip, locked (lock) or not; 0 if none.
 */
static Datum
best_ranked(const Allocation *alloc, const KcfPlan *plan, Datum *skip, int nskip, bool lock)
{
	static SPIPlanPtr stmts[2];
	static const char *const sql[2] = {CHECK_SQL(""), CHECK_SQL(" FOR NO KEY UPDATE SKIP LOCKED")};
	Oid			types[7] = {UUIDOID, TSTZMULTIRANGEOID, INT4ARRAYOID, TIMEARRAYOID, DATEARRAYOID,
	TIMESTAMPARRAYOID, TEXTOID};
	Datum		values[7];
	int			ncand;
	Candidate  *cand = rank_course(alloc->course_id, skip, nskip, &ncand);
	ZonePlan   *zones = palloc(sizeof(ZonePlan) * Max(ncand, 1));
	int			nzones = 0;

	kcf_plan(&stmts[lock], sql[lock], 7, types);
	values[1] = plan->times;
	for (int i = 0; i < ncand; i++)
	{
		ZonePlan   *zp = NULL;

		for (int z = 0; z < nzones && zp == NULL; z++)
			if (strcmp(zones[z].zone, cand[i].zone) == 0)
				zp = &zones[z];
		if (zp == NULL)
		{
			zp = &zones[nzones++];
			plan_in_zone(plan, cand[i].zone, zp);
		}
		values[0] = UUIDPGetDatum(&cand[i].id);
		memcpy(&values[2], zp->args, sizeof(zp->args));
		values[6] = CStringGetTextDatum(zp->zone);
		if (kcf_exec(stmts[lock], values, NULL, 1) > 0)
		{
			pg_uuid_t  *id = palloc(sizeof(pg_uuid_t));

			*id = cand[i].id;
			return UUIDPGetDatum(id);
		}
	}
	return (Datum) 0;
}

/*
 * The best trainer eligible for the plan right now, other than those in skip,
 * locked by this transaction (lock) or not; 0 if none.
 */
static Datum
best_trainer(const Allocation *alloc, const KcfPlan *plan, Datum *skip, int nskip, bool lock, bool hinted)
{
	static SPIPlanPtr stmts[2];
	static const char *const sql[2] = {
		ELIGIBLE_TRAINERS_SQL(COUNTED_RANKING, ""), ELIGIBLE_TRAINERS_SQL(COUNTED_RANKING, " FOR NO KEY UPDATE SKIP LOCKED"),
	};
	Oid			types[5] = {UUIDOID, TSTZMULTIRANGEOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID,
	UUIDARRAYOID};
	Datum		values[5];
	bool		isnull;

	if (hinted)
		return best_ranked(alloc, plan, skip, nskip, lock);
	kcf_plan(&stmts[lock], sql[lock], 5, types);
	values[0] = alloc->course_id;
	values[1] = plan->times;
	values[2] = plan->starts;
	values[3] = plan->ends;
	values[4] = PointerGetDatum(construct_array(skip, nskip, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
	if (kcf_exec(stmts[lock], values, NULL, 1) == 0)
		return (Datum) 0;
	return kcf_get_datum(0, 1, &isnull);
}

/*
 * Whether locked trainer trainer_id still fits, with a fresh snapshot: not
 * booked over the plan since the search's snapshot, and its exact load below
 * its capacity (the hint, when ranked by it, is set from that load).  Every
 * allocator of the trainer holds its lock, so the load cannot grow until this
 * transaction ends.
 */
static bool
still_fits(Datum trainer_id, const KcfPlan *plan, bool hinted)
{
	static SPIPlanPtr stmt = NULL;
	Oid			types[2] = {UUIDOID, TSTZMULTIRANGEOID};
	Datum		values[2] = {trainer_id, plan->times};
	bool		isnull;
	int32		capacity;

	kcf_plan(&stmt, OVERLAPS_SQL, 2, types);
	kcf_exec(stmt, values, NULL, 1);
	if (kcf_get_bool(0, 1, &isnull))
		return false;
	capacity = DatumGetInt32(kcf_get_datum(0, 2, &isnull));
	return kcf_trainer_load_exact(kcf_trainer_load_relid(), trainer_id, hinted) < capacity;
}

/*
 * Whether trainer_bookings holds one row per allocation (0.2.0) rather than
 * one per planned session (0.1.0's, until ALTER EXTENSION kc_flow UPDATE).
 */
bool
kcf_bookings_per_allocation(void)
{
	Oid			nsp = get_namespace_oid("kc_flow", true);
	Oid			rel = OidIsValid(nsp) ? get_relname_relid("trainer_bookings", nsp) : InvalidOid;

	return OidIsValid(rel) && get_attnum(rel, "seq") == InvalidAttrNumber;
}

/*
 * The allocation, approved with the trainer: inserted with its final state
 * (a new allocation, $1 its purchase) or updated from pending ($1 its id).
 * $2..$4: student, course, session mode; $5 the trainer.
 */
#define INSERT_APPROVED_SQL \
	"INSERT INTO kc_flow.trainer_allocations" \
	"   (purchase_id, student_id, course_id, session_mode, trainer_id, status, allocated_at)" \
	" VALUES ($1, $2, $3, $4, $5, 'approved', now())" \
	" ON CONFLICT (purchase_id) DO NOTHING" \
	" RETURNING id, purchase_id, trainer_id, course_id"
#define UPDATE_APPROVED_SQL \
	"UPDATE kc_flow.trainer_allocations" \
	"   SET trainer_id = $5, status = 'approved', allocated_at = now(), updated_at = now()" \
	" WHERE id = $1" \
	" RETURNING id, purchase_id, trainer_id, course_id"

/* The booking of allocation a: one row with the plan $6, or 0.1.0's row per session ($7..$10). */
#define BOOK_ALLOCATION_SQL \
	"INSERT INTO kc_flow.trainer_bookings (allocation_id, trainer_id, during)" \
	" SELECT a.id, a.trainer_id, $6 FROM a"
#define BOOK_SESSIONS_SQL \
	"INSERT INTO kc_flow.trainer_bookings (allocation_id, seq, trainer_id, local_date, local_time, during)" \
	" SELECT a.id, pl.seq, a.trainer_id, pl.local_date, pl.local_time, tstzrange(pl.starts_at, pl.ends_at)" \
	"   FROM a, unnest($7, $8, $9, $10) WITH ORDINALITY AS pl(local_date, local_time, starts_at, ends_at, seq)"

#define BOOK_SQL(approve, book) \
	"WITH a AS (" approve "), b AS (" book ")" \
	" SELECT a.id FROM a"

static char *
uuid_text(Datum uuid)
{
	return DatumGetCString(DirectFunctionCall1(uuid_out, uuid));
}

/*
 * Books the plan on the trainer and approves the allocation, in one statement
 * with the allocation's insert or update; emits TRAINER_ALLOCATED, its payload
 * made here from what the stage knows.  False
 * when a new allocation was made by another transaction meanwhile.
 */
static bool
book_trainer(Allocation *alloc, Datum trainer_id, const KcfPlan *plan, int64 *next_event)
{
	static SPIPlanPtr stmts[2][2];
	static const char *const sql[2][2] = {
		{BOOK_SQL(UPDATE_APPROVED_SQL, BOOK_SESSIONS_SQL), BOOK_SQL(UPDATE_APPROVED_SQL, BOOK_ALLOCATION_SQL)},
		{BOOK_SQL(INSERT_APPROVED_SQL, BOOK_SESSIONS_SQL), BOOK_SQL(INSERT_APPROVED_SQL, BOOK_ALLOCATION_SQL)},
	};
	Oid			types[10] = {UUIDOID, UUIDOID, UUIDOID, TEXTOID, UUIDOID, TSTZMULTIRANGEOID,
		DATEARRAYOID, TIMEARRAYOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID};
	Datum		values[10];
	bool		is_new = alloc->id == (Datum) 0;
	bool		per_allocation = kcf_bookings_per_allocation();
	bool		isnull;

	kcf_plan(&stmts[is_new][per_allocation], sql[is_new][per_allocation], 10, types);
	values[0] = is_new ? alloc->purchase_id : alloc->id;
	values[1] = alloc->student_id;
	values[2] = alloc->course_id;
	values[3] = session_mode();
	values[4] = trainer_id;
	values[5] = plan->times;
	values[6] = plan->dates;
	values[7] = plan->local_times;
	values[8] = plan->starts;
	values[9] = plan->ends;
	if (kcf_exec(stmts[is_new][per_allocation], values, NULL, 1) == 0)
		return false;
	alloc->id = kcf_get_datum(0, 1, &isnull);
	kcf_plan_hand_over(alloc->id, plan);
	*next_event = kcf_emit("TRAINER_ALLOCATED", alloc->payment_id, alloc->student_id,
						   psprintf("{\"allocation_id\":\"%s\",\"purchase_id\":\"%s\",\"trainer_id\":\"%s\",\"course_id\":\"%s\"}",
									uuid_text(alloc->id), uuid_text(alloc->purchase_id),
									uuid_text(trainer_id), uuid_text(alloc->course_id)));
	return true;
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
	ALLOC_BUSY,					/* candidates are being booked by others right now */
	ALLOC_RACED					/* another transaction made the allocation meanwhile */
} AllocResult;

/*
 * One attempt at allocate(); ALLOC_RACED when another transaction made the
 * purchase's allocation between our look and our insert.
 */
static AllocResult
try_allocate(Datum purchase_id, Datum *trainer, int64 *next_event)
{
	Allocation	alloc;
	KcfPlan		plan;
	Datum	   *held;
	Datum	   *skip;			/* held, then tried */
	Datum	   *tried;
	int			nheld;
	int			ntried;
	bool		busy;
	bool		hinted = load_hinted();

	if (!find_allocation(purchase_id, &alloc))
		return ALLOC_NO_PURCHASE;
	if (!alloc.pending)
	{
		*trainer = alloc.trainer_id;
		return ALLOC_ASSIGNED;
	}

	kcf_plan_of_purchase(alloc.purchase_id, &plan);
	if (plan.sessions == 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("purchase %s has no session times",
						DatumGetCString(DirectFunctionCall1(uuid_out, purchase_id)))));
	/*
	 * The trainers other workers' batches hold are passed over before they
	 * are checked (the lock would skip them anyway); candidates booked since
	 * the search's snapshot are passed over too, a few at most.
	 */
	nheld = kcf_held_by_others(&held);
	skip = palloc(sizeof(Datum) * (nheld + MAX_CANDIDATES));
	memcpy(skip, held, sizeof(Datum) * nheld);
	tried = skip + nheld;
	for (ntried = 0; ntried < MAX_CANDIDATES; ntried++)
	{
		Datum		candidate = best_trainer(&alloc, &plan, skip, nheld + ntried, true, hinted);

		if (candidate == (Datum) 0 && nheld > 0)
		{
			/* the others' list may be a moment old (a batch that ended): the locks decide */
			skip = tried;
			nheld = 0;
			candidate = best_trainer(&alloc, &plan, skip, ntried, true, hinted);
		}
		if (candidate == (Datum) 0)
			break;				/* nobody else qualifies, or the rest are held */
		tried[ntried] = candidate;
		kcf_held_note(candidate);
		if (!still_fits(candidate, &plan, hinted))
			continue;
		if (!book_trainer(&alloc, candidate, &plan, next_event))
			return ALLOC_RACED;
		*trainer = candidate;
		return ALLOC_ASSIGNED;
	}
	/* busy: a trainer would fit but another transaction holds it, or too many changed */
	busy = ntried == MAX_CANDIDATES || best_trainer(&alloc, &plan, tried, ntried, false, hinted) != (Datum) 0;
	/* a new allocation not booked now is made pending (the student told, unless others are booking) */
	if (alloc.id == (Datum) 0)
	{
		if (!insert_pending(&alloc))
			return ALLOC_RACED;
		if (!busy)
			emit_pending(&alloc, "no_trainer_available");
	}
	return busy ? ALLOC_BUSY : ALLOC_PENDING;	/* busy: others are booking, try again soon */
}

/*
 * Allocates a trainer to a purchase if one is free; *trainer is the trainer,
 * *next_event the TRAINER_ALLOCATED event emitted (0 if none).  A race for a
 * new allocation (kc_flow.auto_assign() beside a worker) is lost once: the
 * other transaction has committed by then, and a second look finds its row.
 */
static AllocResult
allocate(Datum purchase_id, Datum *trainer, int64 *next_event)
{
	AllocResult res;

	*next_event = 0;
	res = try_allocate(purchase_id, trainer, next_event);
	if (res == ALLOC_RACED)
		res = try_allocate(purchase_id, trainer, next_event);
	return res == ALLOC_RACED ? ALLOC_BUSY : res;
}

KcfOutcome
kcf_stage_allocation(const KcfEvent *event, KcfStageResult *result)
{
	Datum		purchase_id = kcf_event_uuid(event, "purchase_id");
	Datum		trainer;

	result->next_type = "TRAINER_ALLOCATED";
	switch (allocate(purchase_id, &trainer, &result->next_event))
	{
		case ALLOC_ASSIGNED:
		case ALLOC_NO_PURCHASE:
			return KCF_DONE;
		case ALLOC_BUSY:
		case ALLOC_RACED:
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
		case ALLOC_RACED:
			break;				/* allocate() never returns it */
	}
	PG_RETURN_NULL();
}
