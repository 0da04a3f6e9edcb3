/*
 * payments_status.c
 *      The columns of the kc_flow.payments view that a payment's outcomes
 *      derive: its status, updated_at and succeeded_at.
 *
 * The view (20_payment_rules.sql) shows each payment_orders row with these
 * three columns.  As correlated subqueries they cost every statement that
 * names the view three subqueries to plan (most of the planning of the
 * checkout's `UPDATE kc_flow.payments SET status = ...`, which the simple
 * protocol plans at every call); as these functions they cost a function
 * call to plan.  Each reads the payment's outcomes through
 * payment_outcomes_pkey (payment_id, outcome) in the calling statement's
 * snapshot, as the subqueries did: at most three rows, in outcome order.
 * Like the view's subqueries they check no privilege of their own: whoever
 * may read the view may read what it shows.
 */
#include "kc_flow.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/stratnum.h"
#include "catalog/namespace.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

PG_FUNCTION_INFO_V1(kcf_payment_status);
PG_FUNCTION_INFO_V1(kcf_payment_updated_at);
PG_FUNCTION_INFO_V1(kcf_payment_succeeded_at);

/* What a payment's outcomes say about it. */
typedef struct Outcomes
{
	text	   *first;			/* the first outcome in order, NULL when none */
	bool		any;			/* has an outcome */
	TimestampTz last_at;		/* the latest outcome's time, when any */
	bool		succeeded;		/* has a succeeded outcome */
	TimestampTz succeeded_at;	/* its time */
} Outcomes;

static void read_outcomes(Datum payment, Outcomes *out);

/* Reads the payment's outcome rows in the active snapshot. */
static void
read_outcomes(Datum payment, Outcomes *out)
{
	Oid			schema = get_namespace_oid("kc_flow", false);
	Relation	outcomes = table_open(get_relname_relid("payment_outcomes", schema), AccessShareLock);
	Relation	pkey = index_open(get_relname_relid("payment_outcomes_pkey", schema), AccessShareLock);
	TupleDesc	desc = RelationGetDescr(outcomes);
	AttrNumber	outcome_att = SPI_fnumber(desc, "outcome");
	AttrNumber	occurred_att = SPI_fnumber(desc, "occurred_at");
	TupleTableSlot *slot = table_slot_create(outcomes, NULL);
	IndexScanDesc scan;
	ScanKeyData key;

	memset(out, 0, sizeof(*out));
	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_UUID_EQ, payment);
	scan = index_beginscan(outcomes, pkey, GetActiveSnapshot(), 1, 0);
	index_rescan(scan, &key, 1, NULL, 0);
	while (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;
		text	   *outcome = DatumGetTextPP(slot_getattr(slot, outcome_att, &isnull));
		TimestampTz at = DatumGetTimestampTz(slot_getattr(slot, occurred_att, &isnull));

		if (!out->any)
			out->first = DatumGetTextPCopy(PointerGetDatum(outcome));
		if (!out->any || at > out->last_at)
			out->last_at = at;
		out->any = true;
		if (strcmp(text_to_cstring(outcome), "succeeded") == 0)
		{
			out->succeeded = true;
			out->succeeded_at = at;
		}
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(pkey, AccessShareLock);
	table_close(outcomes, AccessShareLock);
}

/* kc_flow.payment_status(payment): the first outcome in order, or pending. */
Datum
kcf_payment_status(PG_FUNCTION_ARGS)
{
	Outcomes	o;

	read_outcomes(PG_GETARG_DATUM(0), &o);
	if (!o.any)
		PG_RETURN_TEXT_P(cstring_to_text("pending"));
	PG_RETURN_TEXT_P(o.first);
}

/* kc_flow.payment_updated_at(payment, order_updated_at): the later of it and the last outcome. */
Datum
kcf_payment_updated_at(PG_FUNCTION_ARGS)
{
	Outcomes	o;
	TimestampTz order_at = PG_GETARG_TIMESTAMPTZ(1);

	read_outcomes(PG_GETARG_DATUM(0), &o);
	PG_RETURN_TIMESTAMPTZ(o.any && o.last_at > order_at ? o.last_at : order_at);
}

/* kc_flow.payment_succeeded_at(payment): when it became succeeded, NULL if never. */
Datum
kcf_payment_succeeded_at(PG_FUNCTION_ARGS)
{
	Outcomes	o;

	read_outcomes(PG_GETARG_DATUM(0), &o);
	if (!o.succeeded)
		PG_RETURN_NULL();
	PG_RETURN_TIMESTAMPTZ(o.succeeded_at);
}
