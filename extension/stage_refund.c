/*
 * stage_refund.c
 *      PURCHASE_REFUNDED -> the purchase ended, its trainer freed, its future
 *      sessions cancelled, then PURCHASE_CANCELLED.
 *
 * A refund that arrives before the purchase exists needs nothing: the
 * purchase stage only creates purchases of succeeded payments.
 */
#include "kc_flow.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"

KcfOutcome
kcf_stage_refund(const KcfEvent *event, KcfStageResult *result pg_attribute_unused())
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(event->id)};
	bool		isnull;

	kcf_plan(&plan,
			 "WITH pu AS ("
			 "  UPDATE kc_flow.student_course_purchases pu SET is_active = false, ended_at = now()"
			 "    FROM kc_flow.events e"
			 "   WHERE e.id = $1 AND pu.payment_id = e.correlation_id AND pu.is_active"
			 "  RETURNING pu.id, pu.payment_id, pu.student_id),"
			 " al AS ("
			 "  UPDATE kc_flow.trainer_allocations a SET status = 'cancelled', updated_at = now()"
			 "    FROM pu WHERE a.purchase_id = pu.id AND a.status IN ('pending', 'approved', 'active')"
			 "  RETURNING a.id),"
			 " bk AS (DELETE FROM kc_flow.trainer_bookings b USING al WHERE b.allocation_id = al.id),"
			 " se AS ("
			 "  UPDATE kc_flow.tutoring_sessions s SET status = 'cancelled'"
			 "    FROM al WHERE s.allocation_id = al.id AND s.status = 'scheduled' AND s.starts_at > now()"
			 "  RETURNING s.id),"
			 " wake AS ("
			 "  UPDATE kc_flow.event_queue SET run_after = now()"
			 "   WHERE consumer = 'allocation' AND deferrals > 0 AND EXISTS (SELECT 1 FROM al))"
			 " SELECT pu.payment_id, pu.student_id,"
			 "        jsonb_build_object('purchase_id', pu.id, 'payment_id', pu.payment_id,"
			 "          'cancelled_sessions', (SELECT count(*) FROM se))::text"
			 "   FROM pu",
			 1, types);
	if (kcf_exec(plan, values, NULL, 1) > 0)
		(void) kcf_emit("PURCHASE_CANCELLED", kcf_get_datum(0, 1, &isnull),
									  kcf_get_datum(0, 2, &isnull), kcf_get_text(0, 3));
	return KCF_DONE;
}
