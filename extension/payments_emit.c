/*
 * payments_emit.c
 *      The AFTER INSERT trigger of kc_flow.payment_outcomes: a payment that
 *      becomes succeeded emits PURCHASE_CONFIRMED, a refund PURCHASE_REFUNDED,
 *      in the transaction that inserts the outcome (the outbox's guarantee).
 *
 * The trigger's WHEN clause (20_payment_rules.sql) fires it for those two
 * outcomes only.  The payment's order is the row the view's trigger locked
 * and handed over for the outcome it inserts (kcf_payments_emit_hand_over(),
 * payments_write.c), else one statement, prepared once per backend, reads it;
 * the payload 0.1.0's trigger built (jsonb_build_object of the order's
 * columns) is written here as JSON text and the event appended with
 * kcf_emit(), as kc_flow.emit_event() appends it, without running that
 * function in a statement of its own.  No order (it was deleted in the same
 * statement), no event, as before.  The function is SECURITY DEFINER (the
 * tables the event goes into are not granted to PUBLIC); its statement names
 * every object with its schema, so it needs no SET search_path.
 */
#include "kc_flow.h"

#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/rel.h"

PG_FUNCTION_INFO_V1(kcf_payments_emit);

/* the columns of an order row, handed over or read: as order_plan returns them */
#define ORDER_ID 1
#define ORDER_STUDENT 2
#define ORDER_COURSE 3
#define ORDER_AMOUNT 4
#define ORDER_CURRENCY 5
#define ORDER_TIER 6

static void append_member(StringInfo json, const char *key, HeapTuple order, TupleDesc desc,
						  int col, bool quoted);

static SPIPlanPtr order_plan;

/* the order handed over for the outcome being inserted, if any */
static Datum handed_payment;
static HeapTuple handed_order;
static TupleDesc handed_desc;

/*
 * The view's trigger is about to insert an outcome of payment, whose order
 * row it holds locked: order (desc), whose first six columns are those of
 * order_plan.  Called again with a NULL order once that insert is over, or
 * has failed.
 */
void
kcf_payments_emit_hand_over(Datum payment, HeapTuple order, TupleDesc desc)
{
	handed_payment = payment;
	handed_order = order;
	handed_desc = desc;
}

/*
 * Appends "key": the order's column col as JSON (a string when quoted, else
 * a number as its output function writes it; null when NULL), as
 * jsonb_build_object() would give it.
 */
static void
append_member(StringInfo json, const char *key, HeapTuple order, TupleDesc desc, int col, bool quoted)
{
	char	   *value = SPI_getvalue(order, desc, col);

	appendStringInfoString(json, json->len > 1 ? ", " : "");
	escape_json(json, key);
	appendStringInfoString(json, ": ");
	if (value == NULL)
		appendStringInfoString(json, "null");
	else if (quoted)
		escape_json(json, value);
	else
		appendStringInfoString(json, value);
}

Datum
kcf_payments_emit(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	bool		isnull;
	Datum		payment;
	Datum		student;
	bool		confirmed;
	HeapTuple	order;
	TupleDesc	order_desc;
	StringInfoData payload;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(td->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(td->tg_event) || !TRIGGER_FIRED_FOR_ROW(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("kc_flow.payments_emit() must be called as an AFTER INSERT row trigger"),
				 errdetail("It emits the event of a payment's outcome."),
				 errhint("It is the trigger payments_emit of kc_flow.payment_outcomes; do not call it otherwise.")));

	desc = td->tg_relation->rd_att;
	payment = heap_getattr(td->tg_trigtuple, SPI_fnumber(desc, "payment_id"), desc, &isnull);
	confirmed = strcmp(TextDatumGetCString(heap_getattr(td->tg_trigtuple, SPI_fnumber(desc, "outcome"),
														desc, &isnull)), "succeeded") == 0;

	SPI_connect();
	if (handed_order != NULL && DatumGetBool(DirectFunctionCall2(uuid_eq, handed_payment, payment)))
	{
		order = handed_order;
		order_desc = handed_desc;
	}
	else
	{
		kcf_plan(&order_plan,
				 "SELECT o.id, o.student_id, o.course_id, o.amount_cents, o.currency, o.purchase_tier"
				 "  FROM kc_flow.payment_orders o WHERE o.id OPERATOR(pg_catalog.=) $1",
				 1, (Oid[]) {UUIDOID});
		if (kcf_exec(order_plan, &payment, NULL, 1) == 0)
		{
			SPI_finish();
			return PointerGetDatum(NULL);
		}
		order = SPI_tuptable->vals[0];
		order_desc = SPI_tuptable->tupdesc;
	}
	student = SPI_getbinval(order, order_desc, ORDER_STUDENT, &isnull);
	initStringInfo(&payload);
	appendStringInfoChar(&payload, '{');
	append_member(&payload, "payment_id", order, order_desc, ORDER_ID, true);
	append_member(&payload, "course_id", order, order_desc, ORDER_COURSE, true);
	if (confirmed)
	{
		append_member(&payload, "purchase_tier", order, order_desc, ORDER_TIER, false);
		append_member(&payload, "amount_cents", order, order_desc, ORDER_AMOUNT, false);
		append_member(&payload, "currency", order, order_desc, ORDER_CURRENCY, true);
	}
	appendStringInfoChar(&payload, '}');
	kcf_emit(confirmed ? "PURCHASE_CONFIRMED" : "PURCHASE_REFUNDED", payment, student, payload.data);
	SPI_finish();
	return PointerGetDatum(NULL);
}
