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
 */
#include "kc_flow.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"

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
			 "     AND EXISTS (SELECT 1 FROM kc_flow.trainer_bookings b WHERE b.allocation_id = $1)),"
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
