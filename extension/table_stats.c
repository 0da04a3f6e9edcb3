/*
 * table_stats.c
 *      Keeps the planner's statistics of kc_flow's tables from lagging far
 *      behind their contents.
 *
 * The workers keep their statements as prepared SPI plans (spi_util.c), which
 * turn generic after a few executions and stay until something invalidates
 * them.  A VACUUM (or VACUUM ANALYZE, vacuumdb -Z after pg_upgrade) of an
 * empty table records it as known-empty (reltuples 0, since PostgreSQL 14),
 * so plans made then scan such tables sequentially; once traffic fills them,
 * every stage walks thousands of rows per event until autovacuum's first
 * ANALYZE, up to a naptime and more later, invalidates the plans.  Worker 0
 * calls kcf_analyze_grown_tables() once a second (worker.c): it ANALYZEs a
 * kc_flow table whose live rows have outgrown its statistics tenfold, which
 * replans every session's statements that read it.  Each ANALYZE needs the
 * table to have grown tenfold since its statistics, so it happens a few
 * times in a table's life; at steady state the tick is one small catalog
 * query.
 */
#include "kc_flow.h"

#include "catalog/pg_type.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

/* a table is analyzed once it holds at least this many live rows ... */
#define ANALYZE_MIN_LIVE_ROWS 500
/* ... and this many times the rows its statistics say */
#define ANALYZE_GROWTH_FACTOR 10

/*
 * The tables of kc_flow whose statistics are known (reltuples >= 0: vacuumed
 * or analyzed once) and far below their live rows as the cumulative
 * statistics count them.  A table never vacuumed nor analyzed is left to
 * autovacuum: the planner then assumes at least ten pages and takes its
 * current size.
 */
#define GROWN_TABLES \
	"SELECT c.oid, c.reltuples::float8, pg_stat_get_live_tuples(c.oid)::float8" \
	"  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace" \
	" WHERE n.nspname = 'kc_flow' AND c.relkind = 'r' AND c.reltuples >= 0" \
	"   AND pg_stat_get_live_tuples(c.oid) >= $1" \
	"   AND pg_stat_get_live_tuples(c.oid) > $2 * c.reltuples"

/*
 * ANALYZEs each kc_flow table whose statistics lag far behind its contents
 * and logs it (SPI connected).  A table whose lock another session holds
 * (autovacuum, a manual VACUUM) is skipped without waiting and tried at the
 * next call.  Its lock is held until the transaction ends: call it in a short
 * transaction of its own.
 */
void
kcf_analyze_grown_tables(void)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[2] = {INT4OID, FLOAT8OID};
	Datum		values[2] = {Int32GetDatum(ANALYZE_MIN_LIVE_ROWS), Float8GetDatum(ANALYZE_GROWTH_FACTOR)};
	int			n;
	Oid		   *relids;
	double	   *reltuples;
	double	   *live;

	kcf_plan(&plan, GROWN_TABLES, 2, types);
	n = kcf_exec(plan, values, NULL, 0);
	if (n == 0)
		return;
	/* the ANALYZE statements below replace SPI_tuptable: keep the rows */
	relids = palloc(n * sizeof(Oid));
	reltuples = palloc(n * sizeof(double));
	live = palloc(n * sizeof(double));
	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		relids[i] = DatumGetObjectId(kcf_get_datum(i, 1, &isnull));
		reltuples[i] = DatumGetFloat8(kcf_get_datum(i, 2, &isnull));
		live[i] = DatumGetFloat8(kcf_get_datum(i, 3, &isnull));
	}
	for (int i = 0; i < n; i++)
	{
		char	   *nspname;
		char	   *relname;
		int			rc;

		/* ANALYZE takes this lock too; taken first, it never waits for it */
		if (!ConditionalLockRelationOid(relids[i], ShareUpdateExclusiveLock))
			continue;
		nspname = get_namespace_name(get_rel_namespace(relids[i]));
		relname = get_rel_name(relids[i]);
		if (nspname == NULL || relname == NULL)
			continue;			/* dropped meanwhile */
		rc = SPI_execute(psprintf("ANALYZE %s", quote_qualified_identifier(nspname, relname)), false, 0);
		if (rc < 0)
			elog(ERROR, "kc_flow: ANALYZE failed: %s", SPI_result_code_string(rc));
		ereport(LOG,
				(errmsg("kc_flow: analyzed table \"%s.%s\", whose statistics lagged behind its contents",
						nspname, relname),
				 errdetail("It held about %.0f live rows where its statistics said %.0f; statements planned"
						   " for the old statistics are planned anew.", live[i], reltuples[i])));
	}
}
