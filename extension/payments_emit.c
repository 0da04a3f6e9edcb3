/*
 * payments_emit.c
 *      The AFTER INSERT trigger of kc_flow.payment_outcomes: a payment that
 *      becomes succeeded emits PURCHASE_CONFIRMED, a refund PURCHASE_REFUNDED,
 *      in the transaction that inserts the outcome (the outbox's guarantee).
 *
 * The trigger's WHEN clause (20_payment_rules.sql) fires it for those two
 * outcomes only.  One statement per kind, prepared once per backend, reads
 * the payment's order and calls kc_flow.emit_event() with the payload 0.1.0's
 * trigger built.  The function is SECURITY DEFINER (emit_event is not
 * granted to PUBLIC); its statements name every object with its schema, so
 * it needs no SET search_path.
 */
#include "kc_flow.h"

#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/rel.h"

PG_FUNCTION_INFO_V1(kcf_payments_emit);

static SPIPlanPtr confirmed_plan;
static SPIPlanPtr refunded_plan;

Datum
kcf_payments_emit(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	bool		isnull;
	Datum		payment;
	char	   *outcome;
	SPIPlanPtr	plan;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(td->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(td->tg_event) || !TRIGGER_FIRED_FOR_ROW(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("kc_flow.payments_emit() must be called as an AFTER INSERT row trigger"),
				 errdetail("It emits the event of a payment's outcome."),
				 errhint("It is the trigger payments_emit of kc_flow.payment_outcomes; do not call it otherwise.")));

	desc = td->tg_relation->rd_att;
	payment = heap_getattr(td->tg_trigtuple, SPI_fnumber(desc, "payment_id"), desc, &isnull);
	outcome = TextDatumGetCString(heap_getattr(td->tg_trigtuple, SPI_fnumber(desc, "outcome"), desc, &isnull));

	SPI_connect();
	if (strcmp(outcome, "succeeded") == 0)
		plan = kcf_plan(&confirmed_plan,
						"SELECT kc_flow.emit_event('PURCHASE_CONFIRMED', o.id, o.student_id,"
						"       pg_catalog.jsonb_build_object('payment_id', o.id, 'course_id', o.course_id,"
						"           'purchase_tier', o.purchase_tier, 'amount_cents', o.amount_cents,"
						"           'currency', o.currency))"
						"  FROM kc_flow.payment_orders o WHERE o.id OPERATOR(pg_catalog.=) $1",
						1, (Oid[]) {UUIDOID});
	else
		plan = kcf_plan(&refunded_plan,
						"SELECT kc_flow.emit_event('PURCHASE_REFUNDED', o.id, o.student_id,"
						"       pg_catalog.jsonb_build_object('payment_id', o.id, 'course_id', o.course_id))"
						"  FROM kc_flow.payment_orders o WHERE o.id OPERATOR(pg_catalog.=) $1",
						1, (Oid[]) {UUIDOID});
	kcf_exec(plan, &payment, NULL, 0);
	SPI_finish();
	return PointerGetDatum(NULL);
}
