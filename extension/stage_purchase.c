/*
 * stage_purchase.c
 *      PURCHASE_CONFIRMED -> the purchase, then PURCHASE_CREATED.
 *
 * One purchase per payment (purchases_one_per_payment) makes a replay
 * harmless.  A payment for a course the student already holds (create_payment
 * refuses one, but two can be confirmed concurrently, or a payment inserted
 * directly) cannot become a purchase: the stage emits
 * PURCHASE_ALREADY_ACTIVE, which the student's home shows, and refuses the
 * event, which the dispatcher dead-letters at once while the payment stays
 * recorded as succeeded.
 *
 * kcf_stage_purchase_set() is the stage for the PURCHASE_CONFIRMED events a
 * batch claimed, in one statement, when each of them is the plain case (a
 * succeeded payment, no purchase of it, none active for the course); any
 * other case sends the whole set back to be handled one event at a time.
 */
#include "kc_flow.h"

#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/uuid.h"

/*
 * Reads the event's payment into SPI_tuptable; false when it does not exist.
 * Whether it has a purchase is a scalar subquery (one probe of the unique
 * index), not EXISTS, which the planner may turn into a hash of every
 * purchase built per call when it guesses several events for the id (one per
 * table of the log's ring).
 */
static bool
find_payment(const KcfEvent *event)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(event->id)};

	kcf_plan(&plan,
			 "SELECT p.id, p.status,"
			 "       (SELECT x.id FROM kc_flow.student_course_purchases x WHERE x.payment_id = p.id) IS NOT NULL,"
			 "       (SELECT x.id FROM kc_flow.student_course_purchases x"
			 "         WHERE x.student_id = p.student_id AND x.course_id = p.course_id AND x.is_active),"
			 "       p.student_id, p.course_id"
			 "  FROM kc_flow.events e JOIN kc_flow.payments p ON p.id = e.correlation_id"
			 " WHERE e.id = $1",
			 1, types);
	return kcf_exec(plan, values, NULL, 1) > 0;
}

/*
 * True unless the installed schema is still 0.1.0's: between the library's
 * upgrade and ALTER EXTENSION kc_flow UPDATE, the events_type_known check of
 * 0.1.0 lists its types itself and refuses PURCHASE_ALREADY_ACTIVE.  Asked on
 * this rare path only, so no cache is needed.
 */
static bool
schema_knows_notices(void)
{
	static SPIPlanPtr plan = NULL;

	kcf_plan(&plan, "SELECT extversion <> '0.1.0' FROM pg_catalog.pg_extension WHERE extname = 'kc_flow'",
			 0, NULL);
	if (SPI_execute_plan(plan, NULL, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		return true;
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &(bool){false}));
}

/*
 * The payment's course is active for the student already (find_payment()'s
 * row names the active purchase): tells the student's screen and refuses the
 * event.  After the other purchase ends, retry_dead_letter() makes this
 * payment a purchase.
 */
static KcfOutcome
refuse_already_active(KcfStageResult *result)
{
	char	   *payment = kcf_get_text(0, 1);
	char	   *active = kcf_get_text(0, 4);
	char	   *student = kcf_get_text(0, 5);
	char	   *course = kcf_get_text(0, 6);

	result->refuse_sqlstate = ERRCODE_UNIQUE_VIOLATION;
	result->refuse_message = psprintf("student %s already has an active purchase of course %s",
									  student, course);
	result->refuse_detail = psprintf("Payment %s is recorded as succeeded, but active purchase %s covers the same course.",
									 payment, active);
	result->refuse_hint = pstrdup("Refund one of the two payments, or end the active purchase and retry this dead letter.");
	/* (the ids are copied above: this query replaces find_payment()'s row) */
	if (!schema_knows_notices())
		return KCF_REFUSE;		/* the 0.1.0 schema refuses the event type: 0.1.0's answer */
	result->next_type = "PURCHASE_ALREADY_ACTIVE";
	result->next_event = kcf_emit(result->next_type,
								  DirectFunctionCall1(uuid_in, CStringGetDatum(payment)),
								  DirectFunctionCall1(uuid_in, CStringGetDatum(student)),
								  psprintf("{\"payment_id\":\"%s\",\"course_id\":\"%s\",\"active_purchase_id\":\"%s\"}",
										   payment, course, active));
	return KCF_REFUSE;
}

KcfOutcome
kcf_stage_purchase(const KcfEvent *event, KcfStageResult *result)
{
	static SPIPlanPtr insert_plan = NULL;
	Datum		values[1];
	Datum		payment_id;
	bool		isnull;
	char	   *status;

	if (!find_payment(event))
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("payment of event " INT64_FORMAT " does not exist", event->id)));

	payment_id = kcf_get_datum(0, 1, &isnull);
	status = kcf_get_text(0, 2);
	if (kcf_get_bool(0, 3, &isnull))
		return KCF_DONE;		/* this payment's purchase exists already */
	if (strcmp(status, "succeeded") != 0)
	{
		ereport(LOG,
				(errmsg("kc_flow: payment %s is %s, no purchase created for event " INT64_FORMAT,
						kcf_get_text(0, 1), status, event->id)));
		return KCF_DONE;
	}
	(void) kcf_get_datum(0, 4, &isnull);
	if (!isnull)
		return refuse_already_active(result);

	/* a concurrent purchase of the same course wins the index: no row, no error */
	kcf_plan(&insert_plan,
			 "INSERT INTO kc_flow.student_course_purchases (payment_id, student_id, course_id, purchase_tier)"
			 " SELECT p.id, p.student_id, p.course_id, p.purchase_tier FROM kc_flow.payments p WHERE p.id = $1"
			 " ON CONFLICT (student_id, course_id) WHERE is_active DO NOTHING"
			 " RETURNING jsonb_build_object('purchase_id', id, 'payment_id', payment_id,"
			 "   'course_id', course_id, 'purchase_tier', purchase_tier)::text, student_id",
			 1, (Oid[]) {UUIDOID});
	values[0] = payment_id;
	if (kcf_exec(insert_plan, values, NULL, 1) == 0)
	{
		isnull = true;
		if (find_payment(event))
			(void) kcf_get_datum(0, 4, &isnull);
		if (isnull)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("a concurrent purchase of the same course came and went while event " INT64_FORMAT " was handled",
							event->id),
					 errhint("The event is retried.")));
		return refuse_already_active(result);
	}
	result->next_type = "PURCHASE_CREATED";
	result->next_event = kcf_emit(result->next_type, payment_id,
								  kcf_get_datum(0, 2, &isnull), kcf_get_text(0, 1));
	return KCF_DONE;
}

/*
 * The purchase stage for n PURCHASE_CONFIRMED events at once, claimed by the
 * batch (whose claim deleted their queue rows, dispatch.c): records each as
 * handled unless it was before, and makes each one's purchase, emitting their
 * PURCHASE_CREATED events in one statement; next_events[i] is event i's, 0
 * when it was handled before.  False when any event is not the plain case:
 * the caller rolls the set back and runs each event on its own
 * (kcf_stage_purchase), which knows what to do with it.  Its lookups are
 * scalar subqueries and LATERAL ... LIMIT 1, one index probe per event, so
 * that no plan hashes the events or the payments for a small batch.
 */
bool
kcf_stage_purchase_set(int n, const int64 *event_ids, int64 *next_events)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {INT8ARRAYOID};
	Datum		values[1];
	Datum	   *ids = palloc(sizeof(Datum) * n);
	Datum	   *payments = palloc(sizeof(Datum) * n);
	Datum	   *students = palloc(sizeof(Datum) * n);
	char	  **payloads = palloc(sizeof(char *) * n);
	int		   *made_for = palloc(sizeof(int) * n);
	int64	   *made_events = palloc(sizeof(int64) * n);
	int			made = 0;

	for (int i = 0; i < n; i++)
		ids[i] = Int64GetDatum(event_ids[i]);
	values[0] = PointerGetDatum(construct_array(ids, n, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	kcf_plan_generic(&plan,
			 "WITH j AS (SELECT u.event_id, u.o FROM unnest($1::bigint[]) WITH ORDINALITY AS u(event_id, o)),"
			 " m AS ("
			 "  INSERT INTO kc_flow.processed_events (event_id, consumer)"
			 "  SELECT j.event_id, 'purchase' FROM j"
			 "   WHERE (SELECT 1 FROM kc_flow.processed_events x"
			 "           WHERE x.event_id = j.event_id AND x.consumer = 'purchase' LIMIT 1) IS NULL"
			 "  ON CONFLICT DO NOTHING RETURNING event_id),"
			 " pay AS ("
			 "  SELECT j.o, p.id, p.student_id, p.course_id, p.purchase_tier"
			 "    FROM j JOIN m ON m.event_id = j.event_id"
			 "   CROSS JOIN LATERAL (SELECT x.* FROM kc_flow.payments x"
			 "                        WHERE x.id = (SELECT e.correlation_id FROM kc_flow.events e"
			 "                                       WHERE e.id = j.event_id LIMIT 1)"
			 "                        LIMIT 1) p"
			 "   WHERE p.status = 'succeeded'"
			 "     AND (SELECT x.id FROM kc_flow.student_course_purchases x WHERE x.payment_id = p.id) IS NULL"
			 "     AND (SELECT x.id FROM kc_flow.student_course_purchases x"
			 "           WHERE x.student_id = p.student_id AND x.course_id = p.course_id AND x.is_active) IS NULL),"
			 " ins AS ("
			 "  INSERT INTO kc_flow.student_course_purchases (payment_id, student_id, course_id, purchase_tier)"
			 "  SELECT id, student_id, course_id, purchase_tier FROM pay"
			 "  ON CONFLICT (student_id, course_id) WHERE is_active DO NOTHING"
			 "  RETURNING id, payment_id, student_id, course_id, purchase_tier)"
			 " SELECT j.o, m.event_id IS NOT NULL, ins.payment_id, ins.student_id,"
			 "        jsonb_build_object('purchase_id', ins.id, 'payment_id', ins.payment_id,"
			 "          'course_id', ins.course_id, 'purchase_tier', ins.purchase_tier)::text"
			 "   FROM j LEFT JOIN m ON m.event_id = j.event_id"
			 "          LEFT JOIN pay ON pay.o = j.o LEFT JOIN ins ON ins.payment_id = pay.id"
			 "  ORDER BY j.o",
			 1, types);
	if (kcf_exec(plan, values, NULL, 0) != n)
		return false;
	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		next_events[i] = 0;
		if (!kcf_get_bool(i, 2, &isnull))
			continue;			/* handled before */
		payments[made] = kcf_get_datum(i, 3, &isnull);
		if (isnull)
			return false;		/* not the plain case */
		for (int k = 0; k < made; k++)
			if (memcmp(DatumGetUUIDP(payments[k]), DatumGetUUIDP(payments[made]), UUID_LEN) == 0)
				return false;	/* two events of one payment: one purchase, one event */
		payments[made] = SPI_datumTransfer(payments[made], false, UUID_LEN);
		students[made] = SPI_datumTransfer(kcf_get_datum(i, 4, &isnull), false, UUID_LEN);
		payloads[made] = kcf_get_text(i, 5);
		made_for[made++] = i;
	}
	kcf_emit_set("PURCHASE_CREATED", made, payments, students, payloads, made_events);
	for (int k = 0; k < made; k++)
		next_events[made_for[k]] = made_events[k];
	return true;
}
