/*
 * spi_util.c
 *      Helpers for the prepared SPI plans every stage keeps across calls, for
 *      running a piece of work in a subtransaction of its own, and for the
 *      isolation the callers need.
 */
#include "kc_flow.h"

#include "access/xact.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

/*
 * Refuses a transaction whose snapshot is taken once (REPEATABLE READ,
 * SERIALIZABLE): what names the caller, why says what an old snapshot breaks.
 */
void
kcf_require_read_committed(const char *what, const char *why)
{
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s requires READ COMMITTED isolation", what),
				 errdetail("%s", why),
				 errhint("Call it in its own READ COMMITTED transaction.")));
}

/* Prepares sql with the plan cache's cursor options and keeps it in *cache, once. */
static SPIPlanPtr
prepare_kept(SPIPlanPtr *cache, const char *sql, int nargs, const Oid *argtypes, int options)
{
	SPIPlanPtr	plan;

	if (*cache != NULL)
		return *cache;
	plan = SPI_prepare_cursor(sql, nargs, (Oid *) argtypes, options);
	if (plan == NULL)
		elog(ERROR, "kc_flow: could not prepare statement: %s", SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "kc_flow: could not keep prepared statement");
	*cache = plan;
	return plan;
}

/* Prepares and keeps a plan the first time; later calls return the cached one. */
SPIPlanPtr
kcf_plan(SPIPlanPtr *cache, const char *sql, int nargs, const Oid *argtypes)
{
	return prepare_kept(cache, sql, nargs, argtypes, 0);
}

/*
 * The same for a statement over a set of rows given as arrays, written so
 * that each row costs index probes whatever the set's size: planned once.
 * The plan cache would otherwise plan it anew on every call, since a generic
 * plan's guess of the arrays' size makes it look dearer than the custom
 * plans (a fifth of the workers' time at 300 purchases/s).
 */
SPIPlanPtr
kcf_plan_generic(SPIPlanPtr *cache, const char *sql, int nargs, const Oid *argtypes)
{
	return prepare_kept(cache, sql, nargs, argtypes, CURSOR_OPT_GENERIC_PLAN);
}

/* Runs a read-write plan with a fresh snapshot; returns SPI_processed. */
int
kcf_exec(SPIPlanPtr plan, Datum *values, const char *nulls, long count)
{
	int			rc = SPI_execute_plan(plan, values, nulls, false, count);

	if (rc < 0)
		elog(ERROR, "kc_flow: statement failed: %s", SPI_result_code_string(rc));
	return (int) SPI_processed;
}

Datum
kcf_get_datum(int row, int col, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, isnull);
}

bool
kcf_get_bool(int row, int col, bool *isnull)
{
	Datum		d = kcf_get_datum(row, col, isnull);

	return *isnull ? false : DatumGetBool(d);
}

int64
kcf_get_int64(int row, int col, bool *isnull)
{
	Datum		d = kcf_get_datum(row, col, isnull);

	return *isnull ? 0 : DatumGetInt64(d);
}

/* The column as text in the caller's memory context, NULL for SQL NULL. */
char *
kcf_get_text(int row, int col)
{
	return SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col);
}

/*
 * Runs work(arg) in an internal subtransaction, kept when it returns true and
 * rolled back when it returns false.  An error rolls the subtransaction back
 * and is returned (in the caller's memory context, for FreeErrorData), so
 * that the caller decides whether it is its own; NULL when there was none.
 */
ErrorData *
kcf_in_subtransaction(bool (*work) (void *arg), void *arg)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	ErrorData  *volatile edata = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcontext);
	PG_TRY();
	{
		if (work(arg))
			ReleaseCurrentSubTransaction();
		else
			RollbackAndReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcontext);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcontext);
	CurrentResourceOwner = oldowner;
	return edata;
}
