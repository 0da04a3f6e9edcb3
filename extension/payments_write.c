/*
 * payments_write.c
 *      The INSTEAD OF trigger of the kc_flow.payments view: the checkout's
 *      change of status in C, every other write in PL/pgSQL.
 *
 * The platform's checkout inserts a payment into kc_flow.payments and confirms
 * it with `UPDATE kc_flow.payments SET status = 'succeeded'`.  An INSERT that
 * passes every check of the rules (checked here without raising: the slot by
 * payments_slot.c) is written with one statement, which inserts the order
 * only when the student exists and the course exists and is published (and
 * one for its outcome when it is not pending).  A
 * status-only UPDATE (no column but status differs from the row the statement
 * read) in a READ COMMITTED transaction locks the payment's order, reads its
 * outcomes after the lock, inserts the new outcome when the change is one the
 * rules allow (pending->succeeded|failed, succeeded->refunded) and returns the
 * row as the view then shows it.  The statements are prepared once per
 * backend.  Every other write (an INSERT a check would refuse, a DELETE, a
 * change of terms or metadata, a change the rules refuse, any UPDATE under a
 * transaction snapshot) is handed to kc_flow.payments_write_rules()
 * (20_payment_rules.sql) with the same trigger call, so that its checks,
 * errors, SQLSTATEs and constraint names are the only ones the platform sees.
 * The outcome's AFTER trigger (payments_emit) writes the event in the same
 * transaction either way.
 *
 * The statements name every object and operator with its schema, so the
 * caller's search_path cannot change them, and the function needs no SET
 * clause (whose GUC change would cost each call more than the statements).
 */
#include "kc_flow.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/rel.h"

PG_FUNCTION_INFO_V1(kcf_payments_write);

static bool insert_payment(TriggerData *td, HeapTuple *result);
static bool sets_status_alone(TriggerData *td);
static bool change_status(TriggerData *td, HeapTuple *result);
static bool allowed(const char *current, const char *target);
static SPIPlanPtr outcome_plan(void);
static void insert_outcome(Datum *values, SPITupleTable *order);
static Datum column(TriggerData *td, HeapTuple row, const char *name, bool *isnull);
static bool is_currency(Datum value);
static Datum write_by_rules(FunctionCallInfo fcinfo);

static SPIPlanPtr order_plan;
static SPIPlanPtr lock_plan;
static SPIPlanPtr state_plan;
static SPIPlanPtr outcome_insert;

/* The order's columns, in the order lock_plan returns them; the view has the same names. */
static const char *const order_columns[] = {
	"id", "student_id", "course_id", "amount_cents", "currency",
	"purchase_tier", "time_slot", "metadata", "created_at", "updated_at"
};

#define ORDER_UPDATED_AT 10		/* lock_plan's column of the order's updated_at */

Datum
kcf_payments_write(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	HeapTuple	result;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_INSTEAD(td->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("kc_flow.payments_write() must be called as an INSTEAD OF row trigger"),
				 errdetail("It writes the kc_flow.payments view."),
				 errhint("It is the view's trigger payments_write; do not call it otherwise.")));

	if (TRIGGER_FIRED_BY_INSERT(td->tg_event) && insert_payment(td, &result))
		return PointerGetDatum(result);
	if (TRIGGER_FIRED_BY_UPDATE(td->tg_event) && !IsolationUsesXactSnapshot() &&
		sets_status_alone(td) && change_status(td, &result))
		return PointerGetDatum(result);
	return write_by_rules(fcinfo);
}

/* The view's column of that name in the row, *isnull set. */
static Datum
column(TriggerData *td, HeapTuple row, const char *name, bool *isnull)
{
	TupleDesc	view = td->tg_relation->rd_att;

	return heap_getattr(row, SPI_fnumber(view, name), view, isnull);
}

/* Three capital letters A-Z, as payments_currency_is_iso4217 wants. */
static bool
is_currency(Datum value)
{
	char	   *code = TextDatumGetCString(value);

	return strlen(code) == 3 && strspn(code, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") == 3;
}

/*
 * The INSERT of a payment that passes every check of the rules: false
 * (nothing written) when one might refuse it, for write_by_rules() to judge;
 * otherwise the order (and its outcome) is written and *result is the row to
 * return, with updated_at and succeeded_at as the rules set them.
 */
static bool
insert_payment(TriggerData *td, HeapTuple *result)
{
	HeapTuple	row = td->tg_trigtuple;
	TupleDesc	view = td->tg_relation->rd_att;
	bool		isnull;
	Datum		tier = column(td, row, "purchase_tier", &isnull);
	Datum		status;
	char	   *status_text;
	Datum		values[10];
	char		nulls[10];
	Oid			types[10];
	int			cols[2] = {SPI_fnumber(view, "updated_at"), SPI_fnumber(view, "succeeded_at")};
	Datum		stamps[2];
	char		stamp_nulls[2] = {' ', 'n'};
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	int			i;

	if (isnull || (DatumGetInt32(tier) != 10 && DatumGetInt32(tier) != 20 && DatumGetInt32(tier) != 30))
		return false;
	values[0] = column(td, row, "amount_cents", &isnull);
	if (isnull || DatumGetInt64(values[0]) < 0)
		return false;
	values[0] = column(td, row, "currency", &isnull);
	if (isnull || !is_currency(values[0]))
		return false;
	status = column(td, row, "status", &isnull);
	if (isnull)
		return false;
	status_text = TextDatumGetCString(status);
	if (strcmp(status_text, "pending") != 0 && strcmp(status_text, "succeeded") != 0 &&
		strcmp(status_text, "failed") != 0)
		return false;
	column(td, row, "succeeded_at", &isnull);
	if (!isnull && strcmp(status_text, "succeeded") != 0)
		return false;
	values[0] = column(td, row, "time_slot", &isnull);
	if (isnull || !kcf_slot_surely_valid(values[0]))
		return false;
	column(td, row, "student_id", &isnull);
	if (isnull)
		return false;
	column(td, row, "course_id", &isnull);
	if (isnull)
		return false;

	SPI_connect();
	for (i = 0; i < lengthof(order_columns); i++)
	{
		int			att = SPI_fnumber(view, order_columns[i]);

		values[i] = heap_getattr(row, att, view, &isnull);
		nulls[i] = isnull ? 'n' : ' ';
		types[i] = TupleDescAttr(view, att - 1)->atttypid;
	}
	/* written only when the student exists and the course exists and is published */
	kcf_plan(&order_plan,
			 "INSERT INTO kc_flow.payment_orders (id, student_id, course_id, amount_cents, currency,"
			 "       purchase_tier, time_slot, metadata, created_at, updated_at)"
			 " SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10"
			 "  WHERE EXISTS (SELECT FROM kc_flow.students s WHERE s.id OPERATOR(pg_catalog.=) $2)"
			 "    AND coalesce((SELECT c.is_published FROM kc_flow.courses c"
			 "                   WHERE c.id OPERATOR(pg_catalog.=) $3), false)",
			 lengthof(order_columns), types);
	if (kcf_exec(order_plan, values, nulls, 0) == 0)
	{
		SPI_finish();
		return false;
	}

	stamps[0] = values[ORDER_UPDATED_AT - 1];
	stamp_nulls[0] = nulls[ORDER_UPDATED_AT - 1];
	if (strcmp(status_text, "pending") != 0)
	{
		values[1] = status;
		kcf_exec(outcome_plan(), values, NULL, 0);
		if (stamp_nulls[0] == 'n' || DatumGetTimestampTz(stamps[0]) < now)
			stamps[0] = TimestampTzGetDatum(now);
		stamp_nulls[0] = ' ';
	}
	if (strcmp(status_text, "succeeded") == 0)
	{
		stamps[1] = TimestampTzGetDatum(now);
		stamp_nulls[1] = ' ';
	}
	*result = SPI_modifytuple(td->tg_relation, row, 2, cols, stamps, stamp_nulls);
	SPI_finish();
	return true;
}

/*
 * True when the new row differs from the old one at most in status and
 * updated_at (which the trigger sets itself), compared as stored values: an
 * equal value stored differently takes the rules' path, which compares
 * values, and gets the same result.
 */
static bool
sets_status_alone(TriggerData *td)
{
	TupleDesc	desc = td->tg_relation->rd_att;
	int			i;

	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		const char *name = NameStr(att->attname);
		bool		old_null,
					new_null;
		Datum		old_value,
					new_value;

		if (att->attisdropped || strcmp(name, "status") == 0 || strcmp(name, "updated_at") == 0)
			continue;
		old_value = heap_getattr(td->tg_trigtuple, i + 1, desc, &old_null);
		new_value = heap_getattr(td->tg_newtuple, i + 1, desc, &new_null);
		if (old_null != new_null)
			return false;
		if (!old_null && !datumIsEqual(old_value, new_value, att->attbyval, att->attlen))
			return false;
	}
	return true;
}

/* The insert of an outcome ($1 payment, $2 outcome), prepared once. */
static SPIPlanPtr
outcome_plan(void)
{
	return kcf_plan(&outcome_insert,
					"INSERT INTO kc_flow.payment_outcomes (payment_id, outcome) VALUES ($1, $2)",
					2, (Oid[]) {UUIDOID, TEXTOID});
}

/*
 * Inserts the outcome values[1] of payment values[0], whose order row (the
 * first of order, locked) is handed over to payments_emit for the event:
 * lock_plan's first six columns are those it reads.
 */
static void
insert_outcome(Datum *values, SPITupleTable *order)
{
	kcf_payments_emit_hand_over(values[0], order->vals[0], order->tupdesc);
	PG_TRY();
	{
		kcf_exec(outcome_plan(), values, NULL, 0);
	}
	PG_FINALLY();
	{
		kcf_payments_emit_hand_over((Datum) 0, NULL, NULL);
	}
	PG_END_TRY();
}

/* pending->succeeded|failed and succeeded->refunded, as record_outcome() allows. */
static bool
allowed(const char *current, const char *target)
{
	if (strcmp(current, "pending") == 0)
		return strcmp(target, "succeeded") == 0 || strcmp(target, "failed") == 0;
	return strcmp(current, "succeeded") == 0 && strcmp(target, "refunded") == 0;
}

/*
 * The status-only UPDATE: false (nothing written) when it is a change the
 * rules refuse, for write_by_rules() to report; otherwise *result is the row
 * to return (NULL when the order no longer exists, as the rules return).
 */
static bool
change_status(TriggerData *td, HeapTuple *result)
{
	TupleDesc	view = td->tg_relation->rd_att;
	int			status_att = SPI_fnumber(view, "status");
	bool		isnull;
	Datum		id = heap_getattr(td->tg_trigtuple, SPI_fnumber(view, "id"), view, &isnull);
	Datum		old_status,
				new_status;
	bool		old_null,
				new_null;
	char	   *current;
	char	   *target;
	bool		settles;
	Datum		values[2];
	SPITupleTable *order;
	Datum	   *row;
	bool	   *row_nulls;
	Datum		succeeded_at,
				changed_at,
				order_updated_at;
	bool		succeeded_null,
				changed_null;
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	int			i;

	new_status = heap_getattr(td->tg_newtuple, status_att, view, &new_null);
	old_status = heap_getattr(td->tg_trigtuple, status_att, view, &old_null);
	if (isnull || new_null)
		return false;			/* a null status is the rules' error */

	SPI_connect();
	/* the order's row lock stands for the lock an UPDATE of 0.1.0's row took */
	kcf_plan(&lock_plan,
			 "SELECT o.id, o.student_id, o.course_id, o.amount_cents, o.currency, o.purchase_tier,"
			 "       o.time_slot, o.metadata, o.created_at, o.updated_at"
			 "  FROM kc_flow.payment_orders o WHERE o.id OPERATOR(pg_catalog.=) $1"
			 "   FOR NO KEY UPDATE OF o",
			 1, (Oid[]) {UUIDOID});
	values[0] = id;
	if (kcf_exec(lock_plan, values, NULL, 1) == 0)
	{
		SPI_finish();
		*result = NULL;
		return true;
	}
	order = SPI_tuptable;
	row = palloc(sizeof(Datum) * view->natts);
	row_nulls = palloc0(sizeof(bool) * view->natts);
	for (i = 0; i < lengthof(order_columns); i++)
	{
		int			att = SPI_fnumber(view, order_columns[i]);

		row[att - 1] = kcf_get_datum(0, i + 1, &row_nulls[att - 1]);
	}
	order_updated_at = kcf_get_datum(0, ORDER_UPDATED_AT, &isnull);

	/* read after the lock: a confirmation that waited for another sees its outcome */
	kcf_plan(&state_plan,
			 "SELECT coalesce(pg_catalog.min(x.outcome), 'pending'),"
			 "       pg_catalog.max(x.occurred_at) FILTER (WHERE x.outcome OPERATOR(pg_catalog.=) 'succeeded'),"
			 "       pg_catalog.max(x.occurred_at)"
			 "  FROM kc_flow.payment_outcomes x WHERE x.payment_id OPERATOR(pg_catalog.=) $1",
			 1, (Oid[]) {UUIDOID});
	kcf_exec(state_plan, values, NULL, 1);
	current = TextDatumGetCString(kcf_get_datum(0, 1, &isnull));
	succeeded_at = kcf_get_datum(0, 2, &succeeded_null);
	changed_at = kcf_get_datum(0, 3, &changed_null);

	target = TextDatumGetCString(new_status);
	/* NEW.status IS DISTINCT FROM OLD.status AND NEW.status IS DISTINCT FROM the current */
	settles = (old_null || strcmp(TextDatumGetCString(old_status), target) != 0) &&
		strcmp(current, target) != 0;
	if (settles && !allowed(current, target))
	{
		SPI_finish();
		return false;
	}
	if (settles)
	{
		values[1] = new_status;
		insert_outcome(values, order);
	}

	row[status_att - 1] = settles ? new_status : CStringGetTextDatum(current);
	i = SPI_fnumber(view, "updated_at") - 1;
	row_nulls[i] = false;
	if (settles)
		row[i] = TimestampTzGetDatum(now);
	else
		row[i] = (!changed_null && DatumGetTimestampTz(changed_at) > DatumGetTimestampTz(order_updated_at))
			? changed_at : order_updated_at;
	i = SPI_fnumber(view, "succeeded_at") - 1;
	if (settles && strcmp(target, "succeeded") == 0)
	{
		row[i] = TimestampTzGetDatum(now);
		row_nulls[i] = false;
	}
	else
	{
		row[i] = succeeded_at;
		row_nulls[i] = succeeded_null;
	}
	*result = SPI_copytuple(heap_form_tuple(view, row, row_nulls));
	SPI_finish();
	return true;
}

/* The same trigger call, made to kc_flow.payments_write_rules(). */
static Datum
write_by_rules(FunctionCallInfo fcinfo)
{
	LOCAL_FCINFO(call, 0);
	FmgrInfo	rules;
	Oid			oid;
	Datum		result;

	oid = LookupFuncName(list_make2(makeString("kc_flow"), makeString("payments_write_rules")),
						 0, NULL, false);
	fmgr_info(oid, &rules);
	InitFunctionCallInfoData(*call, &rules, 0, InvalidOid, fcinfo->context, NULL);
	result = FunctionCallInvoke(call);
	fcinfo->isnull = call->isnull;
	return result;
}
