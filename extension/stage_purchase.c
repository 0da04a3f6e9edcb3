/*
 * stage_purchase.c
 *      PURCHASE_CONFIRMED -> the purchase, then PURCHASE_CREATED.
 *
 * One purchase per payment (purchases_one_per_payment) makes a replay
 * harmless; a second active purchase of the same course is refused with a
 * clear error, which the dispatcher retries and finally dead-letters, while
 * the payment itself stays recorded.
 */
#include "kc_flow.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"

KcfOutcome
kcf_stage_purchase(const KcfEvent *event, KcfStageResult *result)
{
	static SPIPlanPtr find_plan = NULL;
	static SPIPlanPtr insert_plan = NULL;
	Oid			types[1] = {INT8OID};
	Datum		values[1];
	Datum		payment_id;
	bool		isnull;
	char	   *status;

	kcf_plan(&find_plan,
			 "SELECT p.id, p.status,"
			 "       EXISTS (SELECT 1 FROM kc_flow.student_course_purchases x WHERE x.payment_id = p.id),"
			 "       (SELECT x.id FROM kc_flow.student_course_purchases x"
			 "         WHERE x.student_id = p.student_id AND x.course_id = p.course_id AND x.is_active),"
			 "       p.student_id, p.course_id"
			 "  FROM kc_flow.events e JOIN kc_flow.payments p ON p.id = e.correlation_id"
			 " WHERE e.id = $1",
			 1, types);
	values[0] = Int64GetDatum(event->id);
	if (kcf_exec(find_plan, values, NULL, 1) == 0)
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
		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("student %s already has an active purchase of course %s",
						kcf_get_text(0, 5), kcf_get_text(0, 6)),
				 errdetail("Payment %s is recorded as succeeded, but active purchase %s covers the same course.",
						   kcf_get_text(0, 1), kcf_get_text(0, 4)),
				 errhint("Refund one of the two payments, or end the active purchase and retry this dead letter.")));

	kcf_plan(&insert_plan,
			 "INSERT INTO kc_flow.student_course_purchases (payment_id, student_id, course_id, purchase_tier)"
			 " SELECT p.id, p.student_id, p.course_id, p.purchase_tier FROM kc_flow.payments p WHERE p.id = $1"
			 " RETURNING jsonb_build_object('purchase_id', id, 'payment_id', payment_id,"
			 "   'course_id', course_id, 'purchase_tier', purchase_tier)::text, student_id",
			 1, (Oid[]) {UUIDOID});
	values[0] = payment_id;
	kcf_exec(insert_plan, values, NULL, 1);
	result->next_type = "PURCHASE_CREATED";
	result->next_event = kcf_emit(result->next_type, payment_id,
								  kcf_get_datum(0, 2, &isnull), kcf_get_text(0, 1));
	return KCF_DONE;
}
