/*
 * dispatch.c
 *      Runs queued events through their stages: the heart of the pipeline.
 *
 * A batch claims due rows of kc_flow.event_queue with FOR UPDATE SKIP LOCKED,
 * so workers never wait for each other.  Each event is handled in its own
 * subtransaction: the stage's effect, the processed_events row and the
 * removal from the queue commit together or not at all, and a failing event
 * is rolled back alone and either moved to kc_flow.dead_letters at once,
 * when its error cannot succeed on retry (is_permanent()), or rescheduled
 * with exponential backoff until kc_flow.max_attempts is used up.  An event a stage
 * emits is handled in the same batch (its queue row is ours until commit), so
 * a payment usually goes from confirmation to sessions in one worker
 * transaction.  Two stages run for the whole batch at once, each as one
 * subtransaction: the purchase stage of the claimed confirmations first, the
 * sessions stage of the allocations approved in the batch last, which also
 * writes the events the allocation stage deferred; a set that fails is rolled
 * back and its events run one at a time as above.
 */
#include "kc_flow.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/itemptr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(kcf_run_pending);

typedef KcfOutcome (*KcfStageFn) (const KcfEvent *event, KcfStageResult *result);

/* The stages, by the consumer names of the table of event types (event_types.c). */
typedef struct KcfStage
{
	const char *consumer;
	KcfStageFn	run;
} KcfStage;

static const KcfStage stages[] = {
	{"purchase", kcf_stage_purchase},
	{"allocation", kcf_stage_allocation},
	{"sessions", kcf_stage_sessions},
	{"refund", kcf_stage_refund},
};

typedef struct KcfJob
{
	int64		event_id;
	const char *event_type;
	const char *consumer;
	int			attempts;
	int			deferrals;
} KcfJob;

static KcfStageFn
stage_for(const char *consumer)
{
	for (int i = 0; i < lengthof(stages); i++)
		if (strcmp(stages[i].consumer, consumer) == 0)
			return stages[i].run;
	ereport(ERROR,
			(errcode(ERRCODE_DATA_EXCEPTION),
			 errmsg("kc_flow has no stage named \"%s\"", consumer)));
	return NULL;				/* keep compiler quiet */
}

/*
 * A worker's claims leave out the queue's drained tables (queue_ring.c), but
 * every CLAIM_SWEEP_MS at least one claim scans the whole queue: a row that
 * reached a table after it was found drained (an insert that chose its table
 * just before a rotation and wrote it only after the check) then waits that
 * long at most.
 */
#define CLAIM_SWEEP_MS 1000

/*
 * The claim's statement: up to max due rows of the slots in mask (a bit per
 * slot; all of them when it is 0), in the order they are due.  With a mask,
 * it also checks, after its snapshot was taken, that the ring is still at
 * generation: a rotation since the drained tables were noted could have
 * made one of them current.
 */
static char *
claim_sql(int max, uint32 mask, int64 generation)
{
	StringInfoData sql;

	initStringInfo(&sql);
	appendStringInfoString(&sql,
						   "SELECT q.event_id, e.event_type, q.consumer, q.attempts, q.deferrals, q.tableoid, q.ctid"
						   "  FROM kc_flow.event_queue q JOIN kc_flow.events e ON e.id = q.event_id"
						   " WHERE q.run_after <= clock_timestamp()");
	if (mask != 0)
	{
		const char *sep = "";

		appendStringInfoString(&sql, " AND q.slot IN (");
		for (int slot = 0; slot < KCF_RING_SLOTS; slot++)
			if (mask & (1u << slot))
			{
				appendStringInfo(&sql, "%s%d", sep, slot);
				sep = ", ";
			}
		appendStringInfo(&sql, ") AND (SELECT last_value FROM kc_flow.event_queue_generation) = " INT64_FORMAT,
						 generation);
	}
	appendStringInfo(&sql, " ORDER BY q.run_after, q.event_id LIMIT %d FOR UPDATE OF q SKIP LOCKED", max);
	return sql.data;
}

/*
 * Runs the claim's statement sql, kept prepared in *plan while its text is
 * *text: the limit (and for a worker's claim the slots and the generation) is
 * written into the statement, which then has no parameter and is planned
 * once.  With LIMIT $1 the plan cache never trusted a generic plan (it
 * guesses a tenth of the queue for an unknown limit) and planned the claim
 * anew for every batch: 2.4% of the workers' time at 300 purchases/s, where
 * batches are small.  A new text (a batch size changed by a reload,
 * run_pending()'s smaller last batch, a rotation) prepares it again.
 */
static int
claim_exec(SPIPlanPtr *plan, char **text, char *sql)
{
	if (*plan != NULL && strcmp(*text, sql) != 0)
	{
		SPI_freeplan(*plan);
		*plan = NULL;
		pfree(*text);
	}
	if (*plan == NULL)
	{
		kcf_plan(plan, sql, 0, NULL);
		*text = MemoryContextStrdup(TopMemoryContext, sql);
	}
	pfree(sql);
	return kcf_exec(*plan, NULL, NULL, 0);
}

/*
 * Deletes a claimed row by its table and tid: a TID scan of that table alone
 * (on the parent, every slot was scanned and locked, the drained ones too),
 * one plan kept per table.
 */
static void
delete_claimed(Oid table, ItemPointer tid)
{
	static struct
	{
		Oid			table;
		SPIPlanPtr	plan;
	}			kept[KCF_RING_SLOTS + 1];
	static int	next = 0;
	Oid			types[1] = {TIDOID};
	Datum		args[1] = {PointerGetDatum(tid)};
	int			i;

	for (i = 0; i < lengthof(kept); i++)
		if (kept[i].table == table && kept[i].plan != NULL)
			break;
	if (i == lengthof(kept))
	{
		/* a table not seen yet (or the extension made anew): replaces the oldest kept */
		i = next;
		next = (next + 1) % lengthof(kept);
		if (kept[i].plan != NULL)
			SPI_freeplan(kept[i].plan);
		kept[i].plan = NULL;
		kept[i].table = table;
		kcf_plan(&kept[i].plan,
				 psprintf("DELETE FROM %s WHERE ctid = $1",
						  quote_qualified_identifier(get_namespace_name(get_rel_namespace(table)),
													 get_rel_name(table))),
				 1, types);
	}
	kcf_exec(kept[i].plan, args, NULL, 0);
}

/*
 * Claims up to max due jobs and deletes their queue rows, in the batch's own
 * transaction: until it commits they stay locked (other workers skip them),
 * and when it rolls back they come back as they were.  A job whose stage
 * fails puts its row back (record_failure); one that defers queues a new one
 * (defer_job).  Deleted here rather than in the job's subtransaction
 * (record_handled, which still deletes the follow-ups a stage queued in the
 * batch): a row locked by the transaction and deleted by its subtransaction
 * gets a multixact as its xmax, and under a held xmin horizon every claim
 * and every statement that scans the queue walks those dead rows, each
 * visibility check a multixact lookup (docs/extension.md, "Storage under a
 * held horizon").  Each claimed row is deleted by its table and tid, a TID
 * scan whatever the statistics say (one statement for all of them, with
 * the tids in an array, was planned as a scan of every slot).
 *
 * A worker's claim leaves out the queue's drained tables, whose dead index
 * entries it would otherwise walk before the due rows under a held horizon
 * (kcf_queue_claim_slots()).  When the generation has moved on since they
 * were noted, the claim finds nothing and is made again over every slot;
 * a claim that found nothing reads the generation to tell.
 */
static int
claim_jobs(KcfJob *jobs, int max)
{
	static SPIPlanPtr plan = NULL;
	static char *plan_text = NULL;
	static SPIPlanPtr part_plan = NULL;
	static char *part_text = NULL;
	static TimestampTz last_sweep = 0;
	uint32		all = (1u << KCF_RING_SLOTS) - 1;
	uint32		mask = all;
	int64		generation = -1;
	Datum	   *tables;
	ItemPointerData *tids;
	int			n = -1;

	if (kcf_am_worker && kcf_queue_ring_installed() &&
		!TimestampDifferenceExceeds(last_sweep, GetCurrentTimestamp(), CLAIM_SWEEP_MS))
		mask = kcf_queue_claim_slots(&generation);
	if (mask != all)
	{
		n = claim_exec(&part_plan, &part_text, claim_sql(max, mask, generation));
		/* nothing: none due, or the ring moved on and the check failed */
		if (n == 0 && kcf_queue_generation() != generation)
			n = -1;
	}
	if (n < 0)
	{
		n = claim_exec(&plan, &plan_text, claim_sql(max, 0, 0));
		last_sweep = GetCurrentTimestamp();
	}
	tables = palloc(sizeof(Datum) * Max(n, 1));
	tids = palloc(sizeof(ItemPointerData) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		jobs[i].event_id = kcf_get_int64(i, 1, &isnull);
		jobs[i].event_type = kcf_get_text(i, 2);
		jobs[i].consumer = kcf_get_text(i, 3);
		jobs[i].attempts = DatumGetInt32(kcf_get_datum(i, 4, &isnull));
		jobs[i].deferrals = DatumGetInt32(kcf_get_datum(i, 5, &isnull));
		tables[i] = kcf_get_datum(i, 6, &isnull);
		ItemPointerCopy((ItemPointer) DatumGetPointer(kcf_get_datum(i, 7, &isnull)), &tids[i]);
	}
	for (int i = 0; i < n; i++)
		delete_claimed(DatumGetObjectId(tables[i]), &tids[i]);
	pfree(tables);
	pfree(tids);
	return n;
}

/*
 * Records the job as handled: its processed_events row and the removal of its
 * queue row (a follow-up's, queued in this batch; a claimed job's row was
 * deleted by the claim), done before the stage runs so that it commits (or
 * rolls back) with the stage's effect.  False when a row was there already:
 * the event was handled before and the stage must not run again.
 * processed_events is a ring of tables (log_ring.c) whose unique key holds
 * within one table only, so the mark is looked for in all of them first;
 * what makes a stage run once is the queue row, deleted by this batch's
 * transaction and invisible to other workers' claims until it ends.  An
 * event this batch deferred (emit.c) and whose consumer has not run has
 * neither a queue row nor a mark anywhere: nothing is written here, and when
 * its stage is done, its mark is written with the event's row (job_step()).
 */
static bool
record_handled(const KcfJob *job)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[2] = {INT8OID, TEXTOID};
	Datum		values[2];
	bool		isnull;

	if (kcf_emit_deferred_unhandled(job->event_id))
		return true;
	values[0] = Int64GetDatum(job->event_id);
	values[1] = CStringGetTextDatum(job->consumer);
	kcf_plan(&plan,
			 "WITH p AS (INSERT INTO kc_flow.processed_events (event_id, consumer)"
			 "           SELECT $1, $2 WHERE NOT EXISTS (SELECT 1 FROM kc_flow.processed_events x"
			 "                                            WHERE x.event_id = $1 AND x.consumer = $2)"
			 "           ON CONFLICT DO NOTHING RETURNING 1),"
			 " q AS (DELETE FROM kc_flow.event_queue WHERE event_id = $1)"
			 " SELECT count(*) FROM p",
			 2, types);
	kcf_exec(plan, values, NULL, 1);
	return kcf_get_int64(0, 1, &isnull) > 0;
}

/* Undoes record_handled(): the stage could not act yet, the job waits defer_ms. */
static void
defer_job(const KcfJob *job, int defer_ms)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[5] = {INT8OID, TEXTOID, INT4OID, INT4OID, INT4OID};
	Datum		values[5];

	kcf_plan(&plan,
			 "WITH p AS (DELETE FROM kc_flow.processed_events WHERE event_id = $1 AND consumer = $2)"
			 " INSERT INTO kc_flow.event_queue (event_id, consumer, attempts, deferrals, run_after)"
			 " VALUES ($1, $2, $3, $4 + 1, clock_timestamp() + make_interval(secs => $5 / 1000.0))",
			 5, types);
	values[0] = Int64GetDatum(job->event_id);
	values[1] = CStringGetTextDatum(job->consumer);
	values[2] = Int32GetDatum(job->attempts);
	values[3] = Int32GetDatum(job->deferrals);
	values[4] = Int32GetDatum(defer_ms);
	kcf_exec(plan, values, NULL, 0);
}

/* Backoff before the next attempt: base * 2^(attempts-1), capped at an hour. */
static int64
retry_delay_ms(int attempts)
{
	int64		delay = kcf_retry_base_ms;

	for (int i = 1; i < attempts && delay < 3600 * 1000; i++)
		delay *= 2;
	return Min(delay, 3600 * 1000);
}

/*
 * Whether an error says the event can never succeed, so that a retry would
 * only delay its dead letter: data exceptions (class 22), integrity
 * violations (class 23) and no_data_found (P0002), which our own rules raise
 * when a row an event names does not exist (the rules' other errors are
 * 22023, 23502, 23503, 23505 and 23514).  Everything else is retried with
 * backoff: the transient states (40001, 40P01, 55P03, classes 08, 53, 57P)
 * because a later attempt may succeed, and unknown ones (XX000, P0001, ...)
 * because a retry bounded by kc_flow.max_attempts costs little.  A cancel or
 * shutdown (57014, 57P01) never reaches here: run_job() rethrows it.
 */
static bool
is_permanent(int sqlerrcode)
{
	int			class = ERRCODE_TO_CATEGORY(sqlerrcode);

	return class == ERRCODE_DATA_EXCEPTION ||
		class == ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION ||
		sqlerrcode == ERRCODE_NO_DATA_FOUND;
}

/*
 * Moves the job to dead_letters with its error; also undoes record_handled()
 * for a stage that refused the event, so that retry_dead_letter() runs the
 * stage again.
 */
static void
dead_letter(const KcfJob *job, int attempts, const char *sqlstate,
			const char *message, const char *detail)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[6] = {INT8OID, TEXTOID, INT4OID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[6];
	char		nulls[6] = "      ";

	kcf_plan(&plan,
			 "WITH q AS (DELETE FROM kc_flow.event_queue WHERE event_id = $1 AND consumer = $2),"
			 " p AS (DELETE FROM kc_flow.processed_events WHERE event_id = $1 AND consumer = $2)"
			 " INSERT INTO kc_flow.dead_letters"
			 "   (event_id, consumer, attempts, sqlstate, error_message, error_detail)"
			 " VALUES ($1, $2, $3, $4, $5, $6)",
			 6, types);
	values[0] = Int64GetDatum(job->event_id);
	values[1] = CStringGetTextDatum(job->consumer);
	values[2] = Int32GetDatum(attempts);
	values[3] = CStringGetTextDatum(sqlstate);
	values[4] = CStringGetTextDatum(message ? message : "unknown error");
	if (detail)
		values[5] = CStringGetTextDatum(detail);
	else
		nulls[5] = 'n';
	kcf_exec(plan, values, nulls, 0);
}

/*
 * Records a failed attempt.  A permanent error is dead-lettered at once, any
 * other after kc_flow.max_attempts; until then the job waits its backoff.
 */
static void
record_failure(const KcfJob *job, ErrorData *edata)
{
	static SPIPlanPtr retry_plan = NULL;
	Oid			types[7] = {INT8OID, TEXTOID, INT4OID, TEXTOID, TEXTOID, TEXTOID, INT4OID};
	Datum		values[7];
	int			attempts = job->attempts + 1;
	const char *sqlstate = unpack_sql_state(edata->sqlerrcode);
	bool		permanent = is_permanent(edata->sqlerrcode);

	if (!permanent && attempts < kcf_max_attempts)
	{
		int64		delay = retry_delay_ms(attempts);

		/* a claimed job's row was deleted by the claim: it is queued again */
		kcf_plan(&retry_plan,
				 "WITH u AS ("
				 "  UPDATE kc_flow.event_queue"
				 "     SET attempts = $3, last_sqlstate = $4, last_error = $5,"
				 "         run_after = clock_timestamp() + make_interval(secs => $6::bigint / 1000.0)"
				 "   WHERE event_id = $1 AND consumer = $2 RETURNING 1)"
				 " INSERT INTO kc_flow.event_queue"
				 "   (event_id, consumer, attempts, deferrals, last_sqlstate, last_error, run_after)"
				 " SELECT $1, $2, $3, $7, $4, $5, clock_timestamp() + make_interval(secs => $6::bigint / 1000.0)"
				 "  WHERE NOT EXISTS (SELECT 1 FROM u)",
				 7, types);
		values[0] = Int64GetDatum(job->event_id);
		values[1] = CStringGetTextDatum(job->consumer);
		values[2] = Int32GetDatum(attempts);
		values[3] = CStringGetTextDatum(sqlstate);
		values[4] = CStringGetTextDatum(edata->message ? edata->message : "unknown error");
		values[5] = CStringGetTextDatum(psprintf(INT64_FORMAT, delay));
		values[6] = Int32GetDatum(job->deferrals);
		kcf_exec(retry_plan, values, NULL, 0);
		ereport(LOG,
				(errmsg("kc_flow: %s stage failed on event " INT64_FORMAT " (%s), attempt %d of %d, retry in " INT64_FORMAT " ms: %s",
						job->consumer, job->event_id, job->event_type, attempts,
						kcf_max_attempts, delay, edata->message)));
		return;
	}

	dead_letter(job, attempts, sqlstate, edata->message, edata->detail);
	ereport(WARNING,
			(permanent ?
			 errmsg("kc_flow: event " INT64_FORMAT " (%s) dead-lettered at attempt %d in the %s stage, its error cannot succeed on retry",
					job->event_id, job->event_type, attempts, job->consumer) :
			 errmsg("kc_flow: event " INT64_FORMAT " (%s) dead-lettered after %d attempts in the %s stage",
					job->event_id, job->event_type, attempts, job->consumer),
			 errdetail("Last error: SQLSTATE %s: %s", sqlstate, edata->message),
			 errhint("Fix the cause, then call kc_flow.retry_dead_letter() on its dead_letters row.")));
}

/*
 * The stage refused the event for good but keeps its effect (the event that
 * tells the student): the job goes to dead_letters at this attempt, with the
 * stage's reason.
 */
static void
refuse_job(const KcfJob *job, const KcfStageResult *result)
{
	const char *sqlstate = unpack_sql_state(result->refuse_sqlstate);

	dead_letter(job, job->attempts + 1, sqlstate, result->refuse_message, result->refuse_detail);
	ereport(WARNING,
			(errmsg("kc_flow: event " INT64_FORMAT " (%s) dead-lettered at attempt %d in the %s stage, which refused it",
					job->event_id, job->event_type, job->attempts + 1, job->consumer),
			 errdetail("SQLSTATE %s: %s", sqlstate, result->refuse_message),
			 result->refuse_hint ? errhint("%s", result->refuse_hint) : 0));
}

/* One job's work, run in a subtransaction of its own by run_job(). */
typedef struct KcfJobStep
{
	const KcfJob *job;
	KcfStageResult result;
} KcfJobStep;

/* Records the job as handled and runs its stage, unless it was handled before. */
static bool
job_step(void *arg)
{
	KcfJobStep *step = (KcfJobStep *) arg;
	const KcfJob *job = step->job;
	KcfEvent	event = {job->event_id, job->event_type};
	bool		deferred = kcf_emit_deferred_unhandled(job->event_id);

	if (record_handled(job))
	{
		switch (stage_for(job->consumer) (&event, &step->result))
		{
			case KCF_DONE:
				if (deferred)
					kcf_emit_deferred_handled(job->event_id, job->consumer);
				break;
			case KCF_DEFER:
				defer_job(job, step->result.defer_ms);
				break;
			case KCF_REFUSE:
				refuse_job(job, &step->result);
				break;
		}
	}
	return true;
}

/*
 * Handles one job in a subtransaction, with the events it emits deferred
 * (defer: emit.c) or not.  Fills *next with the follow-up job when the stage
 * emitted an event for a later stage, to be handled next in this batch (its
 * queue row, written by us, is invisible to other workers).  Returns whether
 * there is one.
 */
static bool
run_job(const KcfJob *job, KcfJob *next, bool defer)
{
	KcfJobStep	step = {job, {0}};
	int			mark = kcf_emit_deferred_count();
	ErrorData  *edata;
	KcfStageResult result;

	kcf_emit_defer(defer);
	edata = kcf_in_subtransaction(job_step, &step);
	kcf_emit_defer(false);
	if (edata != NULL)
	{
		/* what the rolled-back job deferred is gone with it */
		kcf_emit_deferred_truncate(mark);
		/* a cancel or shutdown request is not the event's fault */
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED ||
			edata->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN)
			ReThrowError(edata);
		/* a deferred event's failure is recorded on its queue row: written first */
		if (kcf_emit_deferred_note(job->event_id, false))
			kcf_emit_flush();
		record_failure(job, edata);
		FreeErrorData(edata);
		return false;
	}
	/* done, deferred or refused: the job took care of its queue row */
	(void) kcf_emit_deferred_note(job->event_id, true);
	result = step.result;

	if (result.next_event == 0)
		return false;
	next->consumer = kcf_consumer_for(result.next_type);
	if (next->consumer == NULL)
		return false;
	next->event_id = result.next_event;
	next->event_type = result.next_type;
	next->attempts = 0;
	next->deferrals = 0;
	return true;
}

/* The sessions stage of a batch's allocations, run at once (kcf_stage_sessions_set). */
typedef struct KcfSessionsSet
{
	int			n;
	const KcfJob *jobs;
	const Datum *allocations;
} KcfSessionsSet;

/* The sessions stage of the set, for kcf_in_subtransaction. */
static bool
sessions_set_step(void *arg)
{
	KcfSessionsSet *set = (KcfSessionsSet *) arg;
	int64	   *events = palloc(sizeof(int64) * set->n);

	for (int i = 0; i < set->n; i++)
		events[i] = set->jobs[i].event_id;
	(void) kcf_stage_sessions_set(set->n, set->allocations, events);
	return true;
}

/* Runs job and the follow-ups it emits, one subtransaction each; returns how many ran. */
static int
run_chain(KcfJob job)
{
	KcfJob		next;
	int			handled = 1;

	while (run_job(&job, &next, false))
	{
		CHECK_FOR_INTERRUPTS();
		job = next;
		handled++;
	}
	return handled;
}

/*
 * The TRAINER_ALLOCATED jobs of the batch, whose allocation stage ran in it
 * and handed over its plan: their sessions stage in one subtransaction and
 * one statement, and the events the batch deferred (these TRAINER_ALLOCATED
 * among them) written with its SESSIONS_GENERATED in one more.  When that
 * fails, it is rolled back, the deferred events are written on their own,
 * with their queue rows, and each job runs on its own, so that only a
 * failing event is retried or dead-lettered.  Returns how many jobs were
 * handled.
 */
static int
run_sessions_set(const KcfJob *jobs, const Datum *allocations, int n)
{
	KcfSessionsSet set = {n, jobs, allocations};
	ErrorData  *edata = kcf_in_subtransaction(sessions_set_step, &set);
	int			handled = 0;

	if (edata == NULL)
	{
		kcf_emit_deferred_forget();
		return n;
	}
	if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED ||
		edata->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN)
		ReThrowError(edata);
	ereport(LOG,
			(errcode(edata->sqlerrcode),
			 errmsg("kc_flow: the sessions stage of %d events failed as a set, each is handled on its own", n),
			 errdetail("SQLSTATE %s: %s", unpack_sql_state(edata->sqlerrcode), edata->message)));
	FreeErrorData(edata);
	kcf_emit_flush();
	for (int i = 0; i < n; i++)
		handled += run_chain(jobs[i]);
	return handled;
}

/* The purchase stage of a batch's claimed PURCHASE_CONFIRMED jobs (kcf_stage_purchase_set). */
typedef struct KcfPurchaseSet
{
	int			n;
	const int64 *events;
	int64	   *next_events;
	bool		plain;			/* every event was the plain case: the set was kept */
} KcfPurchaseSet;

/* The purchase stage of the set, for kcf_in_subtransaction; set->plain says whether it was kept. */
static bool
purchase_set_step(void *arg)
{
	KcfPurchaseSet *set = (KcfPurchaseSet *) arg;

	set->plain = kcf_stage_purchase_set(set->n, set->events, set->next_events);
	return set->plain;
}

/*
 * Runs the purchase stage of the claimed jobs of that stage as a set, in one
 * subtransaction.  When it succeeds, each such job becomes its PURCHASE_CREATED
 * follow-up, or is dropped (done) when it was handled before, and the number
 * of jobs handled is returned; when it fails or a job is not the plain case,
 * the set is rolled back, the jobs are left as claimed, to run one at a time,
 * and 0 is returned.  *jobs is compacted to the jobs left to run, *n updated.
 */
static int
run_purchase_set(KcfJob *jobs, int *n)
{
	int64	   *events = palloc(sizeof(int64) * *n);
	int64	   *next_events = palloc(sizeof(int64) * *n);
	int		   *at = palloc(sizeof(int) * *n);
	KcfPurchaseSet set = {0, events, next_events, false};
	ErrorData  *edata;
	int			kept = 0;
	int			mark = kcf_emit_deferred_count();

	for (int i = 0; i < *n; i++)
		if (strcmp(jobs[i].consumer, "purchase") == 0)
		{
			at[set.n] = i;
			events[set.n++] = jobs[i].event_id;
		}
	if (set.n == 0)
		return 0;
	/* its PURCHASE_CREATED are deferred: the allocation stage runs next, in this batch */
	kcf_emit_defer(true);
	edata = kcf_in_subtransaction(purchase_set_step, &set);
	kcf_emit_defer(false);
	if (edata != NULL || !set.plain)
		kcf_emit_deferred_truncate(mark);
	if (edata != NULL)
	{
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED ||
			edata->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN)
			ReThrowError(edata);
		ereport(LOG,
				(errcode(edata->sqlerrcode),
				 errmsg("kc_flow: the purchase stage of %d events failed as a set, each is handled on its own", set.n),
				 errdetail("SQLSTATE %s: %s", unpack_sql_state(edata->sqlerrcode), edata->message)));
		FreeErrorData(edata);
		return 0;
	}
	if (!set.plain)
		return 0;				/* rolled back: the jobs run one at a time */
	for (int k = 0; k < set.n; k++)
	{
		KcfJob	   *job = &jobs[at[k]];

		job->consumer = NULL;	/* handled: dropped below unless it has a follow-up */
		if (next_events[k] != 0)
		{
			job->consumer = kcf_consumer_for("PURCHASE_CREATED");
			job->event_id = next_events[k];
			job->event_type = "PURCHASE_CREATED";
			job->attempts = 0;
			job->deferrals = 0;
		}
	}
	for (int i = 0; i < *n; i++)
		if (jobs[i].consumer != NULL)
			jobs[kept++] = jobs[i];
	*n = kept;
	return set.n;
}

/*
 * Claims up to max_jobs due events and handles them in the current
 * transaction (SPI connected): first the purchase stage of the claimed
 * PURCHASE_CONFIRMED events as a set (run_purchase_set), then each job with
 * the follow-ups it emits, except the sessions stage of the allocations
 * approved here, which runs for all of them at the end (run_sessions_set).
 * The allocation stage's events are deferred (emit.c) and written with the
 * sessions set's SESSIONS_GENERATED, so that a student's cache version is
 * bumped once for both; they are written before any other job runs, so that
 * a student's events keep their versions in the order of their ids.
 * Returns how many were handled, follow-up events included; *claimed tells
 * how many were claimed from the queue.
 */
int
kcf_dispatch_batch(int max_jobs, int *claimed)
{
	KcfJob	   *jobs = palloc0(sizeof(KcfJob) * max_jobs);
	KcfJob	   *sessions = palloc0(sizeof(KcfJob) * max_jobs);
	Datum	   *allocations = palloc0(sizeof(Datum) * max_jobs);
	int			n_sessions = 0;
	int			n;
	int			handled = 0;

	kcf_plan_hand_over_reset();
	kcf_emit_batch_begin();
	n = claim_jobs(jobs, max_jobs);
	*claimed = n;
	handled += run_purchase_set(jobs, &n);

	for (int i = 0; i < n; i++)
	{
		KcfJob		job = jobs[i];
		KcfJob		next;
		Datum		allocation_id;

		for (;;)
		{
			bool		allocation = strcmp(job.consumer, "allocation") == 0;

			CHECK_FOR_INTERRUPTS();
			handled++;
			if (!allocation)
				kcf_emit_flush();
			(void) kcf_plan_handed_over_since(&allocation_id);
			if (!run_job(&job, &next, allocation))
				break;
			if (strcmp(next.consumer, "sessions") == 0 &&
				kcf_plan_handed_over_since(&allocation_id))
			{
				sessions[n_sessions] = next;
				allocations[n_sessions++] = allocation_id;
				break;
			}
			job = next;
		}
	}
	if (n_sessions > 0)
		handled += run_sessions_set(sessions, allocations, n_sessions);
	kcf_emit_flush();
	pfree(jobs);
	pfree(sessions);
	pfree(allocations);
	return handled;
}

/*
 * Milliseconds until the next queued event is due, for a worker after a
 * batch that claimed less than it could; -1 when nothing is due later.
 *
 * Only rows due from the start of that batch's transaction on (batch_start)
 * are read: a row due before it that is still there was not claimable by
 * the batch's claim, which took every visible, unlocked due row.  It is held
 * by the other worker, which handles it and reads its own retries and
 * deferrals (due after its batch began) in its own next-due read; or it
 * committed after the claim, and such a commit sets a waiting worker's latch
 * (emit.c), so the sleep ends at once.  Rows the batch queued, deferred or
 * rescheduled are due at its start or later and count.  The bound keeps the
 * read off the front of event_queue's index on run_after, where the handled
 * rows' dead entries are: under a held xmin horizon nothing removes them
 * until the ring truncates their table, and reading min(run_after) from the
 * front walked them all after every batch, each a heap visit and a
 * multixact lookup (20% of the workers' samples in the soak's held phase,
 * docs/benchmarks.md).
 */
int64
kcf_next_due_ms(TimestampTz batch_start)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {TIMESTAMPTZOID};
	Datum		values[1];
	bool		isnull;
	int64		ms;

	kcf_plan(&plan,
			 "SELECT CASE WHEN min(run_after) IS NOT NULL THEN"
			 "         greatest(0, ceil(extract(epoch FROM min(run_after) - clock_timestamp()) * 1000))::bigint"
			 "       END"
			 "  FROM kc_flow.event_queue WHERE run_after >= $1",
			 1, types);
	values[0] = TimestampTzGetDatum(batch_start);
	kcf_exec(plan, values, NULL, 1);
	ms = kcf_get_int64(0, 1, &isnull);
	return isnull ? -1 : ms;
}

/* kc_flow.run_pending(max_jobs): the pipeline by hand, in the caller's transaction. */
Datum
kcf_run_pending(PG_FUNCTION_ARGS)
{
	int32		max_jobs = PG_GETARG_INT32(0);
	int			handled = 0;

	if (max_jobs < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_jobs must be at least 1"),
				 errdetail("Got %d.", max_jobs)));

	if (kcf_log_installed())
		kcf_require_read_committed("kc_flow.run_pending()",
								   "It ends with a round of the log sequencer, which must read the log head "
								   "with a snapshot taken after it holds the head's lock.");
	SPI_connect();
	for (;;)
	{
		int			want = Min(max_jobs - handled, 1000);
		int			claimed;

		handled += kcf_dispatch_batch(want, &claimed);
		/* a short batch means nothing else is due (failures wait for their retry) */
		if (claimed < want || handled >= max_jobs)
			break;
	}
	handled += kcf_top_up_rolling_sessions();
	/*
	 * As worker 0 does: the queue's ring rotates once its current table has
	 * grown, the log's once it has aged, the versions' once its current
	 * table holds enough rows
	 */
	(void) kcf_rotate_queue();
	(void) kcf_rotate_log();
	(void) kcf_rotate_versions();
	/*
	 * As the workers do: positions for what committed, and for what this
	 * transaction wrote.  Not waiting for the log head: its holder keeps it
	 * to its commit, so concurrent callers waiting for it ran one at a time,
	 * each with its commit's WAL flush; a skipped round's events get their
	 * positions in the next round (the workers', woken by this commit, or
	 * the next caller's).
	 */
	if (kcf_log_installed())
	{
		KcfRound	round;

		(void) kcf_sequence(&round, false);
	}
	SPI_finish();
	PG_RETURN_INT32(handled);
}
