/*
 * payments_confirm.c
 *      kc_flow.confirm_payment(payment): marks a pending payment succeeded
 *      (an outcome row, whose trigger emits PURCHASE_CONFIRMED) and returns
 *      that event's id; NULL when the payment was succeeded already.
 *
 * The API's confirmation (40_api.sql), as 0.1.0's PL/pgSQL function did it:
 * the order's row lock (FOR NO KEY UPDATE) serializes the payment's
 * confirmations and writes no version; the status is read after it, in a
 * fresh snapshot, so the second of two confirmations sees the first and
 * returns NULL.  The common case, a pending payment in a READ COMMITTED
 * transaction, inserts the outcome here with a kept plan; any other status,
 * or another isolation level, goes to kc_flow.record_outcome() (20_payment_
 * rules.sql), whose errors and SQLSTATEs (23514 for a refused change, 40001
 * for an outcome a transaction snapshot missed) are the only ones raised for
 * it.  Every statement is prepared once per backend and names its objects
 * and operators with their schema, so the function needs no SET search_path
 * (whose GUC change cost the PL/pgSQL function, and record_outcome() in it,
 * more than their statements).
 */
#include "kc_flow.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(kcf_confirm_payment);

static SPIPlanPtr lock_plan;
static SPIPlanPtr status_plan;
static SPIPlanPtr outcome_plan;
static SPIPlanPtr rules_plan;
static SPIPlanPtr event_plan;

/* kc_flow.confirm_payment(payment uuid) RETURNS bigint */
Datum
kcf_confirm_payment(PG_FUNCTION_ARGS)
{
	Datum		values[2];
	bool		isnull;
	char	   *current;
	int64		event_id;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("payment id must not be null")));
	values[0] = PG_GETARG_DATUM(0);

	SPI_connect();
	kcf_plan(&lock_plan,
			 "SELECT FROM kc_flow.payment_orders o WHERE o.id OPERATOR(pg_catalog.=) $1 FOR NO KEY UPDATE OF o",
			 1, (Oid[]) {UUIDOID});
	if (kcf_exec(lock_plan, values, NULL, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("payment %s does not exist",
						DatumGetCString(DirectFunctionCall1(uuid_out, values[0])))));

	/* as kc_flow.payments derives it, read after the lock */
	kcf_plan(&status_plan,
			 "SELECT coalesce(pg_catalog.min(x.outcome), 'pending') FROM kc_flow.payment_outcomes x"
			 " WHERE x.payment_id OPERATOR(pg_catalog.=) $1",
			 1, (Oid[]) {UUIDOID});
	kcf_exec(status_plan, values, NULL, 1);
	current = kcf_get_text(0, 1);
	if (strcmp(current, "succeeded") == 0)
	{
		SPI_finish();
		PG_RETURN_NULL();		/* confirming twice is harmless: one event only */
	}

	if (strcmp(current, "pending") == 0 && XactIsoLevel == XACT_READ_COMMITTED)
	{
		/* what record_outcome() does for pending -> succeeded in READ COMMITTED */
		values[1] = CStringGetTextDatum("succeeded");
		kcf_plan(&outcome_plan,
				 "INSERT INTO kc_flow.payment_outcomes (payment_id, outcome) VALUES ($1, $2)",
				 2, (Oid[]) {UUIDOID, TEXTOID});
		kcf_exec(outcome_plan, values, NULL, 0);
	}
	else
	{
		values[1] = CStringGetTextDatum(current);
		kcf_plan(&rules_plan, "SELECT kc_flow.record_outcome($1, $2, 'succeeded')",
				 2, (Oid[]) {UUIDOID, TEXTOID});
		kcf_exec(rules_plan, values, NULL, 0);
	}

	kcf_plan(&event_plan,
			 "SELECT pg_catalog.max(e.id) FROM kc_flow.events e"
			 " WHERE e.correlation_id OPERATOR(pg_catalog.=) $1"
			 "   AND e.event_type OPERATOR(pg_catalog.=) 'PURCHASE_CONFIRMED'",
			 1, (Oid[]) {UUIDOID});
	kcf_exec(event_plan, values, NULL, 1);
	event_id = kcf_get_int64(0, 1, &isnull);
	SPI_finish();
	if (isnull)
		PG_RETURN_NULL();
	PG_RETURN_INT64(event_id);
}
