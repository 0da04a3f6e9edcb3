/*
 * stage_sessions.c
 *      TRAINER_ALLOCATED -> the tutoring sessions, then SESSIONS_GENERATED.
 *
 * Sessions are materialised from the purchase's plan (kc_flow.purchase_plan,
 * the times the allocation booked; session_plan.c hands over the one the
 * allocation stage computed) once the allocation holds its booking: in
 * full mode all of them at once, in rolling mode only enough to keep
 * kc_flow.rolling_window upcoming sessions scheduled.  The same statements
 * serve the 0.1.0 schema's booking rows (one per session) until ALTER
 * EXTENSION kc_flow UPDATE.
 * kcf_top_up_rolling_sessions() adds the next ones as sessions pass; it runs
 * in the first worker's loop and in kc_flow.run_pending().
 *
 * Every scheduled session must lie inside its allocation's booking
 * (extension/schema/15_session_bookings.sql checks each insert): the
 * statements lock the booking they generate from, so a refund that deleted
 * it meanwhile leaves nothing to generate rather than failing the check,
 * and a refund that comes after waits and then cancels what was made.
 *
 * kcf_stage_sessions_set() is the same stage for all the allocations a batch
 * approved, with the plans their allocation stage handed over: their marks,
 * their sessions and what SESSIONS_GENERATED says of each in one statement
 * (dispatch.c runs it, and each event on its own when it fails).  Every
 * lookup in it is a scalar subquery or a LATERAL ... LIMIT 1, one index probe
 * per row: written as joins or EXISTS, the planner hashed all of
 * tutoring_sessions or trainer_allocations for a batch of one or two.  Nor
 * does any part of it read the batch's rows once per allocation: the plan's
 * rows meet their allocation in one join, which hands its columns on to the
 * insert, and each plan's length comes with its event.  Whether a planned
 * session exists already (a retry, a rolling allocation's earlier sessions)
 * is probed per session only for an allocation that has any session: one
 * probe per allocation says so first, in the statement's one snapshot, and an
 * allocation approved in this batch, the common case, has none.
 */
#include "kc_flow.h"

#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/uuid.h"

/*
 * Generates the sessions an allocation is due; emits SESSIONS_GENERATED when
 * any were added.  Returns that event's id, 0 if nothing was added.  The plan
 * is the one the allocation stage handed over in this batch, else computed;
 * its sessions are inserted in one statement from its arrays.
 */
static int64
generate_sessions(Datum allocation_id)
{
	static SPIPlanPtr stmt = NULL;
	Oid			types[6] = {UUIDOID, INT4OID, DATEARRAYOID, TIMEARRAYOID, TIMESTAMPTZARRAYOID,
	TIMESTAMPTZARRAYOID};
	Datum		values[6];
	KcfPlan		plan;
	bool		isnull;

	kcf_plan_of_allocation(allocation_id, &plan);
	if (plan.sessions == 0)
		return 0;				/* allocation gone, or a plan without sessions */
	kcf_plan(&stmt,
			 "WITH a AS ("
			 "  SELECT * FROM kc_flow.trainer_allocations"
			 "   WHERE id = $1 AND status IN ('approved', 'active')"
			 "     AND (SELECT 1 FROM kc_flow.trainer_bookings b WHERE b.allocation_id = $1"
			 "           LIMIT 1 FOR NO KEY UPDATE) IS NOT NULL),"
			 " upcoming AS ("
			 "  SELECT count(*) AS n FROM kc_flow.tutoring_sessions"
			 "   WHERE allocation_id = $1 AND status = 'scheduled' AND ends_at > now()),"
			 " plan AS ("
			 "  SELECT pl.seq::int AS seq, pl.local_date, pl.local_time, pl.starts_at, pl.ends_at"
			 "    FROM unnest($3, $4, $5, $6) WITH ORDINALITY AS pl(local_date, local_time, starts_at, ends_at, seq)),"
			 " due AS ("
			 "  SELECT pl.* FROM plan pl"
			 "   WHERE NOT EXISTS (SELECT 1 FROM kc_flow.tutoring_sessions s"
			 "                      WHERE s.allocation_id = $1 AND s.seq = pl.seq)"
			 "   ORDER BY pl.seq"
			 "   LIMIT (SELECT CASE a.session_mode WHEN 'full' THEN 30"
			 "                 ELSE greatest(0, $2 - (SELECT n FROM upcoming)) END FROM a)),"
			 " ins AS ("
			 "  INSERT INTO kc_flow.tutoring_sessions (allocation_id, student_id, course_id, trainer_id,"
			 "         seq, scheduled_date, scheduled_time, starts_at, ends_at)"
			 "  SELECT a.id, a.student_id, a.course_id, a.trainer_id, t.seq, t.local_date, t.local_time,"
			 "         t.starts_at, t.ends_at"
			 "    FROM due t, a"
			 "  RETURNING seq)"
			 " SELECT (SELECT pu.payment_id FROM kc_flow.student_course_purchases pu WHERE pu.id = a.purchase_id),"
			 "        a.student_id,"
			 "        jsonb_build_object('allocation_id', a.id, 'purchase_id', a.purchase_id,"
			 "          'trainer_id', a.trainer_id, 'mode', a.session_mode,"
			 "          'count', (SELECT count(*) FROM ins),"
			 "          'first_seq', (SELECT min(seq) FROM ins), 'last_seq', (SELECT max(seq) FROM ins),"
			 "          'total', cardinality($5)"
			 "        )::text,"
			 "        (SELECT count(*) FROM ins)"
			 "   FROM a",
			 6, types);
	values[0] = allocation_id;
	values[1] = Int32GetDatum(kcf_rolling_window);
	values[2] = plan.dates;
	values[3] = plan.local_times;
	values[4] = plan.starts;
	values[5] = plan.ends;
	if (kcf_exec(stmt, values, NULL, 1) == 0)
		return 0;				/* allocation cancelled or gone, or not booked */
	if (kcf_get_int64(0, 4, &isnull) == 0)
		return 0;
	return kcf_emit("SESSIONS_GENERATED", kcf_get_datum(0, 1, &isnull),
					kcf_get_datum(0, 2, &isnull), kcf_get_text(0, 3));
}

KcfOutcome
kcf_stage_sessions(const KcfEvent *event, KcfStageResult *result)
{
	Datum		allocation_id = kcf_event_uuid(event, "allocation_id");

	generate_sessions(allocation_id);
	return KCF_DONE;
}

/* Copies the n elements of array to elems. */
static void
copy_elements(Datum array, Oid type, Datum *elems, int n)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	Datum	   *items;
	int			found;

	get_typlenbyvalalign(type, &typlen, &typbyval, &typalign);
	deconstruct_array(DatumGetArrayTypeP(array), type, typlen, typbyval, typalign, &items, NULL, &found);
	if (found != n)
		elog(ERROR, "a plan's columns disagree: %d elements where it has %d sessions", found, n);
	memcpy(elems, items, sizeof(Datum) * n);
}

static Datum
make_array(Datum *elems, int n, Oid type)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;

	get_typlenbyvalalign(type, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_array(elems, n, type, typlen, typbyval, typalign));
}

/*
 * The sessions stage for n TRAINER_ALLOCATED events of this batch at once
 * (event_ids, with the allocations they approved and whose plans were handed
 * over in this batch): records each as handled unless it was before, inserts
 * the sessions each is due as generate_sessions() does, and emits one
 * SESSIONS_GENERATED per allocation that got any, in one statement with the
 * events the batch deferred (emit.c), the n TRAINER_ALLOCATED among them
 * without queue rows.  Returns how many SESSIONS_GENERATED were emitted.  An error leaves it to the caller to roll back and to run each
 * event on its own (kcf_stage_sessions).
 */
int
kcf_stage_sessions_set(int n, const Datum *allocation_ids, const int64 *event_ids)
{
	static SPIPlanPtr stmt = NULL;
	Oid			types[10] = {UUIDARRAYOID, INT8ARRAYOID, INT4ARRAYOID, INT4ARRAYOID, DATEARRAYOID,
	TIMEARRAYOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID, INT4OID, INT4ARRAYOID};
	Datum		values[10];
	Datum	   *events = palloc(sizeof(Datum) * n);
	Datum	   *totals = palloc(sizeof(Datum) * n);
	KcfPlan    *plans = palloc(sizeof(KcfPlan) * n);
	Datum	   *cols[6];
	Oid			col_types[6] = {INT4OID, INT4OID, DATEOID, TIMEOID, TIMESTAMPTZOID, TIMESTAMPTZOID};
	int			rows = 0;
	int			found;
	Datum	   *payments;
	Datum	   *students;
	char	  **payloads;

	/* the plans, flattened: the event's place in the set, seq, and the plan's columns */
	for (int i = 0; i < n; i++)
	{
		events[i] = Int64GetDatum(event_ids[i]);
		if (!kcf_plan_handed_over(allocation_ids[i], &plans[i]))
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("no plan was handed over for the allocation of event " INT64_FORMAT, event_ids[i]),
					 errhint("The event is handled on its own.")));
		totals[i] = Int32GetDatum((int32) plans[i].sessions);
		rows += plans[i].sessions;
	}
	for (int c = 0; c < 6; c++)
		cols[c] = palloc(sizeof(Datum) * Max(rows, 1));
	rows = 0;
	for (int i = 0; i < n; i++)
	{
		int			k = plans[i].sessions;

		if (k == 0)
			continue;
		for (int j = 0; j < k; j++)
		{
			cols[0][rows + j] = Int32GetDatum(i + 1);
			cols[1][rows + j] = Int32GetDatum(j + 1);
		}
		copy_elements(plans[i].dates, DATEOID, cols[2] + rows, k);
		copy_elements(plans[i].local_times, TIMEOID, cols[3] + rows, k);
		copy_elements(plans[i].starts, TIMESTAMPTZOID, cols[4] + rows, k);
		copy_elements(plans[i].ends, TIMESTAMPTZOID, cols[5] + rows, k);
		rows += k;
	}

	kcf_plan_generic(&stmt,
			 "WITH j AS ("
			 "  SELECT u.allocation_id, u.event_id, u.total, u.o"
			 "    FROM unnest($1::uuid[], $2::bigint[], $10::int[]) WITH ORDINALITY AS u(allocation_id, event_id, total, o)),"
			 " p AS ("
			 "  INSERT INTO kc_flow.processed_events (event_id, consumer)"
			 "  SELECT j.event_id, 'sessions' FROM j"
			 "   WHERE (SELECT 1 FROM kc_flow.processed_events x"
			 "           WHERE x.event_id = j.event_id AND x.consumer = 'sessions' LIMIT 1) IS NULL"
			 "  ON CONFLICT DO NOTHING RETURNING event_id),"
			 " q AS (DELETE FROM kc_flow.event_queue WHERE event_id = ANY ($2)),"
			 " a AS ("
			 "  SELECT al.*, j.total, j.o FROM j JOIN p ON p.event_id = j.event_id"
			 "   CROSS JOIN LATERAL (SELECT x.*, (SELECT 1 FROM kc_flow.tutoring_sessions s"
			 "                                     WHERE s.allocation_id = x.id LIMIT 1) IS NOT NULL AS has_sessions"
			 "                         FROM kc_flow.trainer_allocations x"
			 "                        WHERE x.id = j.allocation_id AND x.status IN ('approved', 'active')"
			 "                          AND (SELECT 1 FROM kc_flow.trainer_bookings b"
			 "                                WHERE b.allocation_id = x.id LIMIT 1 FOR NO KEY UPDATE) IS NOT NULL"
			 "                        LIMIT 1) al),"
			 " plan AS ("
			 "  SELECT * FROM unnest($3, $4, $5, $6, $7, $8) AS pl(o, seq, local_date, local_time, starts_at, ends_at)),"
			 " due AS ("
			 "  SELECT pl.*, a.id, a.student_id, a.course_id, a.trainer_id, a.session_mode, a.has_sessions,"
			 "         row_number() OVER (PARTITION BY pl.o ORDER BY pl.seq) AS r"
			 "    FROM plan pl JOIN a ON a.o = pl.o"
			 "   WHERE NOT a.has_sessions"
			 "      OR (SELECT 1 FROM kc_flow.tutoring_sessions s"
			 "           WHERE s.allocation_id = a.id AND s.seq = pl.seq) IS NULL),"
			 " ins AS ("
			 "  INSERT INTO kc_flow.tutoring_sessions (allocation_id, student_id, course_id, trainer_id,"
			 "         seq, scheduled_date, scheduled_time, starts_at, ends_at)"
			 "  SELECT t.id, t.student_id, t.course_id, t.trainer_id, t.seq, t.local_date, t.local_time,"
			 "         t.starts_at, t.ends_at"
			 "    FROM due t"
			 "   WHERE t.r <= CASE t.session_mode WHEN 'full' THEN 30"
			 "                ELSE greatest(0, $9 - CASE WHEN t.has_sessions THEN"
			 "                                        (SELECT count(*) FROM kc_flow.tutoring_sessions s"
			 "                                          WHERE s.allocation_id = t.id AND s.status = 'scheduled'"
			 "                                            AND s.ends_at > now()) ELSE 0 END) END"
			 "  RETURNING allocation_id, seq),"
			 " made AS (SELECT allocation_id, count(*) AS n, min(seq) AS lo, max(seq) AS hi FROM ins GROUP BY allocation_id)"
			 " SELECT (SELECT pu.payment_id FROM kc_flow.student_course_purchases pu WHERE pu.id = a.purchase_id),"
			 "        a.student_id,"
			 "        jsonb_build_object('allocation_id', a.id, 'purchase_id', a.purchase_id,"
			 "          'trainer_id', a.trainer_id, 'mode', a.session_mode,"
			 "          'count', m.n, 'first_seq', m.lo, 'last_seq', m.hi,"
			 "          'total', a.total"
			 "        )::text"
			 "   FROM a JOIN made m ON m.allocation_id = a.id"
			 "  ORDER BY a.o",
			 10, types);
	values[0] = make_array((Datum *) allocation_ids, n, UUIDOID);
	values[1] = make_array(events, n, INT8OID);
	for (int c = 0; c < 6; c++)
		values[c + 2] = make_array(cols[c], rows, col_types[c]);
	values[8] = Int32GetDatum(kcf_rolling_window);
	values[9] = make_array(totals, n, INT4OID);
	found = kcf_exec(stmt, values, NULL, 0);

	/* kcf_emit_set() runs a statement of its own: the rows are copied first */
	payments = palloc(sizeof(Datum) * Max(found, 1));
	students = palloc(sizeof(Datum) * Max(found, 1));
	payloads = palloc(sizeof(char *) * Max(found, 1));
	for (int i = 0; i < found; i++)
	{
		bool		isnull;

		payments[i] = SPI_datumTransfer(kcf_get_datum(i, 1, &isnull), false, sizeof(pg_uuid_t));
		students[i] = SPI_datumTransfer(kcf_get_datum(i, 2, &isnull), false, sizeof(pg_uuid_t));
		payloads[i] = kcf_get_text(i, 3);
	}
	/* with the batch's deferred events: its TRAINER_ALLOCATED, whose queue rows the set took */
	kcf_emit_set_after_deferred("SESSIONS_GENERATED", found, payments, students, payloads, event_ids, n);
	return found;
}

/* Tops up rolling allocations whose upcoming sessions ran low; returns how many grew. */
int
kcf_top_up_rolling_sessions(void)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(kcf_rolling_window)};
	int			n;
	int			grown = 0;
	Datum	   *ids;

	kcf_plan(&plan,
			 "SELECT a.id FROM kc_flow.trainer_allocations a"
			 "  JOIN kc_flow.student_course_purchases pu ON pu.id = a.purchase_id"
			 " WHERE a.session_mode = 'rolling' AND a.status IN ('approved', 'active')"
			 "   AND (SELECT count(*) FROM kc_flow.tutoring_sessions s WHERE s.allocation_id = a.id)"
			 "       < pu.purchase_tier"
			 "   AND (SELECT count(*) FROM kc_flow.tutoring_sessions s WHERE s.allocation_id = a.id"
			 "         AND s.status = 'scheduled' AND s.ends_at > now()) < $1"
			 " FOR UPDATE OF a SKIP LOCKED",
			 1, types);
	n = kcf_exec(plan, values, NULL, 0);
	ids = palloc(sizeof(Datum) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		ids[i] = kcf_get_datum(i, 1, &isnull);
	}
	for (int i = 0; i < n; i++)
		if (generate_sessions(ids[i]) != 0)
			grown++;
	return grown;
}
