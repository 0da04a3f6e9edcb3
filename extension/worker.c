/*
 * worker.c
 *      The background workers that run the pipeline.
 *
 * kc_flow.c registers them when the library is preloaded.  Each worker
 * connects to kc_flow.database and loops: handle a batch of due events in
 * one transaction (dispatch.c) and, at its end, give log positions to every
 * event committed since the last round and announce them (log.c); then sleep
 * on its latch until a committing transaction that emitted events wakes it,
 * the next retry is due, or kc_flow.poll_interval_ms passes.  Worker 0 also tops up rolling sessions
 * and refreshes the trending courses every minute, and every second rotates
 * the event queue's ring when its current table has grown (queue_ring.c), the
 * event log's when its current table has aged (log_ring.c), the cache
 * versions' when its current table holds enough rows (version_ring.c), and ANALYZEs the
 * tables that outgrew their statistics (table_stats.c).  An error outside the per-event subtransactions is logged and
 * the loop goes on after a pause; a worker that dies is restarted by the
 * postmaster five seconds later.
 */
#include "kc_flow.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

/* what a worker is waiting for before it can handle events, so each is logged once */
typedef enum KcfWaiting
{
	KCF_WAITING_NONE,
	KCF_WAITING_EXTENSION,		/* CREATE EXTENSION kc_flow */
	KCF_WAITING_READ_ONLY		/* default_transaction_read_only off */
} KcfWaiting;

PG_FUNCTION_INFO_V1(kcf_worker_status);

/* true in a kc_flow background worker */
bool		kcf_am_worker = false;

/* a round skipped because another held the log head is tried again this soon */
#define HEAD_BUSY_RETRY_MS 5

#define HOUSEKEEPING_INTERVAL_MS (60 * 1000)

/* how often worker 0 looks whether a ring must rotate (queue_ring.c, log_ring.c, version_ring.c) */
#define ROTATION_CHECK_MS 1000
#define ROTATION_MAX_BACKOFF_MS (10 * 1000)

/* how often worker 0 looks for tables that outgrew their statistics (table_stats.c) */
#define STATS_CHECK_MS 1000

/*
 * At exit: the latch goes first, so that a commit meanwhile cannot pick this
 * worker as the idle one and wake nobody else.
 */
static void
forget_latch(int code, Datum arg)
{
	kcf_unregister_worker_latch(DatumGetInt32(arg));
	kcf_set_in_batch(DatumGetInt32(arg), false);
	kcf_set_busy(DatumGetInt32(arg), false);
	kcf_held_reset(DatumGetInt32(arg));
}

/*
 * 0.1.0's schema only (the 0.2.0 library before ALTER EXTENSION kc_flow
 * UPDATE): purges handled events older than kc_flow.event_retention; a
 * payment with an unresolved dead letter keeps all its events.  0.2.0 empties
 * the log's ring by TRUNCATE instead (log_ring.c).
 */
static void
trim_event_log_010(void)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(kcf_event_retention_s)};

	if (kcf_event_retention_s <= 0)
		return;
	kcf_plan(&plan,
			 "WITH old AS ("
			 "  DELETE FROM kc_flow.events e"
			 "   WHERE e.created_at < now() - make_interval(secs => $1)"
			 "     AND NOT EXISTS (SELECT 1 FROM kc_flow.event_queue q WHERE q.event_id = e.id)"
			 "     AND e.correlation_id NOT IN (SELECT c.correlation_id FROM kc_flow.dead_letters d"
			 "                                   JOIN kc_flow.events c ON c.id = d.event_id WHERE NOT d.resolved)"
			 "  RETURNING e.id)"
			 " DELETE FROM kc_flow.processed_events p USING old WHERE p.event_id = old.id",
			 1, types);
	if (kcf_exec(plan, values, NULL, 0) > 0)
		ereport(LOG, (errmsg("kc_flow: trimmed the event log of events older than %d s", kcf_event_retention_s)));
}

/* Rebuilds the trending-courses summary the home screens read. */
static void
refresh_trending(void)
{
	static SPIPlanPtr plan = NULL;

	kcf_plan(&plan, "SELECT kc_flow.refresh_trending()", 0, NULL);
	kcf_exec(plan, NULL, NULL, 0);
}

/* when worker 0 looks next whether a ring must rotate, and how long it waits after that */
typedef struct KcfRingCheck
{
	const char *activity;		/* for pg_stat_activity */
	KcfRotation (*rotate) (void);
	TimestampTz last;
	int			wait_ms;
} KcfRingCheck;

/*
 * Worker 0, every ROTATION_CHECK_MS: rotates a ring (the queue's, the
 * log's or the versions') when it is due, in a short transaction of its own (the truncated
 * tables stay locked until it commits).  When it could not (a long
 * transaction holds a lock on an oldest table, and each try makes the claims
 * wait behind it for up to its lock_timeout), the next try waits twice as
 * long, up to 10 s; when only another worker's batch or a short transaction
 * held it, the next try comes sooner.
 */
static void
rotate_ring(KcfRingCheck *check)
{
	if (check->wait_ms == 0)
		check->wait_ms = ROTATION_CHECK_MS;
	if (!TimestampDifferenceExceeds(check->last, GetCurrentTimestamp(), check->wait_ms))
		return;
	pgstat_report_activity(STATE_RUNNING, check->activity);
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_connect();
	switch (check->rotate())
	{
		case KCF_ROTATE_BUSY:
			check->wait_ms = Min(check->wait_ms * 2, ROTATION_MAX_BACKOFF_MS);
			break;
		case KCF_ROTATE_CONTENDED:
			/* a batch or a short transaction was in the way: soon again */
			check->wait_ms = ROTATION_CHECK_MS / 4;
			break;
		default:
			check->wait_ms = ROTATION_CHECK_MS;
			break;
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	check->last = GetCurrentTimestamp();
}

/*
 * Worker 0, every STATS_CHECK_MS: ANALYZEs the kc_flow tables that outgrew
 * their statistics, in a short transaction of its own (an analyzed table
 * stays locked against other ANALYZEs and VACUUMs until it commits).
 */
static void
catch_up_statistics(TimestampTz *last_check)
{
	if (!TimestampDifferenceExceeds(*last_check, GetCurrentTimestamp(), STATS_CHECK_MS))
		return;
	pgstat_report_activity(STATE_RUNNING, "kc_flow: analyzing tables that outgrew their statistics");
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_connect();
	kcf_analyze_grown_tables();
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	*last_check = GetCurrentTimestamp();
}

/*
 * Worker 0, after its batch's commit: tops up rolling sessions every
 * kc_flow.poll_interval_ms and refreshes the trending courses every minute,
 * in a transaction of its own, so that neither delays the commit of the
 * batch's events (a transaction that writes nothing costs no WAL flush).
 * True when the top-up emitted events: they wait for a round, which the
 * worker's next loop, run at once, gives them.
 */
static bool
housekeeping(TimestampTz *last_top_up, TimestampTz *last_housekeeping)
{
	bool		top_up = TimestampDifferenceExceeds(*last_top_up, GetCurrentTimestamp(), kcf_poll_interval_ms);
	bool		trending = TimestampDifferenceExceeds(*last_housekeeping, GetCurrentTimestamp(),
													  HOUSEKEEPING_INTERVAL_MS);

	int			emitted = 0;

	if (!top_up && !trending)
		return false;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_connect();
	if (top_up)
	{
		pgstat_report_activity(STATE_RUNNING, "kc_flow: topping up rolling sessions");
		emitted = kcf_top_up_rolling_sessions();
		*last_top_up = GetCurrentTimestamp();
	}
	if (trending)
	{
		pgstat_report_activity(STATE_RUNNING, "kc_flow: refreshing trending courses");
		if (!kcf_log_ring_installed())
			trim_event_log_010();
		refresh_trending();
		*last_housekeeping = GetCurrentTimestamp();
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	return emitted > 0;
}

/*
 * After a batch that handled events: how long the worker may sleep, at most
 * sleep_ms, until the next queued event due from the batch's start on
 * (kcf_next_due_ms) is due, read in a short read-only transaction.  Read in
 * the batch transaction, the queue's index (full of the entries of rows just
 * handled) delayed that batch's commit by up to 15 ms at 300 purchases/s.
 */
static long
next_due_apart(long sleep_ms, TimestampTz batch_start)
{
	int64		due_ms;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_connect();
	if ((due_ms = kcf_next_due_ms(batch_start)) >= 0 && due_ms < sleep_ms)
		sleep_ms = (long) due_ms;
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	return sleep_ms;
}

/* kcf_sequence for kcf_in_subtransaction: the round and whether to wait for the head. */
typedef struct KcfGuardedRound
{
	KcfRound   *round;
	bool		wait;
} KcfGuardedRound;

static bool
sequence_step(void *arg)
{
	KcfGuardedRound *g = (KcfGuardedRound *) arg;

	(void) kcf_sequence(g->round, g->wait);
	return true;
}

/*
 * The batch's own round in a subtransaction: when it fails (a lock_timeout
 * while another session holds the log head, say) the batch's effects still
 * commit, and false asks for a round of its own after the commit.  A cancel
 * is the whole batch's.
 */
static bool
sequence_guarded(KcfRound *round, bool wait)
{
	KcfGuardedRound g = {round, wait};
	ErrorData  *edata = kcf_in_subtransaction(sequence_step, &g);

	if (edata == NULL)
		return true;
	if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
		ReThrowError(edata);
	ereport(LOG,
			(errcode(edata->sqlerrcode),
			 errmsg("kc_flow: the batch's round of the event log failed, sequencing after its commit instead"),
			 errdetail("%s", edata->message)));
	FreeErrorData(edata);
	memset(round, 0, sizeof(*round));
	return false;
}

/*
 * One round of work in its own transaction.  Returns how long the worker may
 * sleep, in milliseconds (0: more work is waiting).
 */
static long
work_once(int worker, TimestampTz *last_top_up, TimestampTz *last_housekeeping,
		  KcfRingCheck *rings, TimestampTz *last_stats_check, KcfWaiting *waiting)
{
	long		sleep_ms = kcf_poll_interval_ms;
	bool		apart = false;	/* the in-batch round failed: one of its own after the commit */
	int			claimed;
	int			handled;
	int64		due_ms;
	bool		log;
	KcfRound	round;
	TimestampTz batch_start;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	batch_start = GetCurrentTransactionStartTimestamp();

	if (!OidIsValid(get_extension_oid("kc_flow", true)))
	{
		if (*waiting != KCF_WAITING_EXTENSION)
			ereport(LOG,
					(errmsg("kc_flow worker %d: extension kc_flow is not installed in database \"%s\", waiting",
							worker, kcf_database),
					 errhint("Run CREATE EXTENSION kc_flow CASCADE in that database.")));
		*waiting = KCF_WAITING_EXTENSION;
		PopActiveSnapshot();
		CommitTransactionCommand();
		return sleep_ms;
	}
	if (XactReadOnly)
	{
		/*
		 * Every claim would fail: a failover tool keeps a promoted node
		 * read-only for a few seconds (pg_autoctl does), or an operator made
		 * the database read-only.  Wait quietly instead of failing a round a
		 * second.
		 */
		if (*waiting != KCF_WAITING_READ_ONLY)
			ereport(LOG,
					(errmsg("kc_flow worker %d: transactions in database \"%s\" are read-only, waiting",
							worker, kcf_database),
					 errdetail("default_transaction_read_only is on for the worker's session."),
					 errhint("Events are handled again once it is off; nothing is lost meanwhile.")));
		*waiting = KCF_WAITING_READ_ONLY;
		PopActiveSnapshot();
		CommitTransactionCommand();
		return sleep_ms;
	}
	if (*waiting != KCF_WAITING_NONE)
		ereport(LOG,
				(errmsg("kc_flow worker %d: handling events in database \"%s\"", worker, kcf_database)));
	*waiting = KCF_WAITING_NONE;
	log = kcf_log_installed();

	pgstat_report_activity(STATE_RUNNING, "kc_flow: handling events");
	SPI_connect();
	/* flagged while this batch may end with a round of its own (see below) */
	if (log && kcf_sequence_in_batch)
		kcf_set_in_batch(worker, true);
	kcf_held_reset(worker);
	handled = kcf_dispatch_batch(kcf_batch_size, &claimed);
	if (handled == 0)
		kcf_set_in_batch(worker, false);
	if (claimed >= kcf_batch_size)
	{
		/* more is waiting: a commit woke one worker only (shared_state.c), so call in another */
		kcf_wake_workers();
		sleep_ms = 0;
	}
	else if (handled == 0 && (due_ms = kcf_next_due_ms(batch_start)) >= 0 && due_ms < sleep_ms)
		sleep_ms = (long) due_ms;	/* a batch's own: after its commit (next_due_apart) */
	if (log && kcf_sequence_in_batch)
	{
		/*
		 * Last: the log head is held from here to the commit
		 * (docs/extension.md).  A batch that wrote nothing leaves the round to
		 * a worker in a batch, whose round comes after the commits that woke
		 * us or which goes round again (commit count); and it does not wait
		 * for the head: the holder is such a worker, or it is retried shortly.
		 */
		uint64		commits = kcf_commit_count();

		pgstat_report_activity(STATE_RUNNING, "kc_flow: sequencing the event log");
		if (handled > 0 || !kcf_other_in_batch(worker))
		{
			if (!sequence_guarded(&round, handled > 0))
				apart = true;
			else if (round.busy)
				sleep_ms = Min(sleep_ms, HEAD_BUSY_RETRY_MS);
		}
		kcf_set_in_batch(worker, false);
		if (handled > 0 && kcf_commit_count() != commits)
			sleep_ms = 0;
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	kcf_held_reset(worker);		/* the batch's trainer locks are gone */
	if (log && (!kcf_sequence_in_batch || apart))
	{
		pgstat_report_activity(STATE_RUNNING, "kc_flow: sequencing the event log");
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		SPI_connect();
		(void) kcf_sequence(&round, false);
		if (round.busy)
			sleep_ms = Min(sleep_ms, HEAD_BUSY_RETRY_MS);
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	if (handled > 0 && sleep_ms > 0)
		sleep_ms = next_due_apart(sleep_ms, batch_start);
	if (worker == 0)
	{
		if (housekeeping(last_top_up, last_housekeeping))
			sleep_ms = 0;
		rotate_ring(&rings[0]);
		rotate_ring(&rings[1]);
		rotate_ring(&rings[2]);
		catch_up_statistics(last_stats_check);
	}
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	return sleep_ms;
}

void
kcf_worker_main(Datum main_arg)
{
	int			worker = DatumGetInt32(main_arg);
	static TimestampTz last_top_up = 0;
	static TimestampTz last_housekeeping = 0;
	static KcfRingCheck rings[3] = {
		{"kc_flow: rotating the event queue", kcf_rotate_queue},
		{"kc_flow: rotating the event log", kcf_rotate_log},
		{"kc_flow: rotating the cache versions", kcf_rotate_versions},
	};
	static TimestampTz last_stats_check = 0;
	static KcfWaiting waiting = KCF_WAITING_NONE;
	static long sleep_ms = 0;
	sigjmp_buf	local_sigjmp_buf;
	MemoryContext loop_context;

	kcf_am_worker = true;
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(kcf_database, NULL, 0);

	/*
	 * The stages and the sequencer rely on a new snapshot per statement (a
	 * round reads the log head after taking its lock); a server-wide default
	 * of REPEATABLE READ or SERIALIZABLE must not reach the workers, so it is
	 * overridden here as autovacuum does.
	 */
	SetConfigOption("default_transaction_isolation", "read committed", PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * Every statement of a worker touches a few rows, but the planner's
	 * guesses for tables without statistics (a ring's table just truncated,
	 * a fresh database) put some above jit_above_cost: the sequencer's round
	 * was compiled by LLVM for 30 ms at a time while it held the log head.
	 */
	SetConfigOption("jit", "off", PGC_SUSET, PGC_S_OVERRIDE);

	kcf_register_worker_latch(worker, MyLatch);
	kcf_set_busy(worker, true);
	before_shmem_exit(forget_latch, Int32GetDatum(worker));
	ereport(LOG, (errmsg("kc_flow worker %d started on database \"%s\"", worker, kcf_database)));

	loop_context = AllocSetContextCreate(TopMemoryContext, "kc_flow worker loop",
										 ALLOCSET_DEFAULT_SIZES);

	if (sigsetjmp(local_sigjmp_buf, 1) != 0)
	{
		/*
		 * an error escaped a round: report it, clean up, pause, go on.  The
		 * error context stack still names frames of the failed round; left
		 * alone, the next error would walk into them.
		 */
		error_context_stack = NULL;
		HOLD_INTERRUPTS();
		EmitErrorReport();
		AbortCurrentTransaction();
		kcf_set_in_batch(worker, false);
		kcf_held_reset(worker);
		FlushErrorState();
		MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextReset(loop_context);
		RESUME_INTERRUPTS();
		pgstat_report_activity(STATE_IDLE, NULL);
		sleep_ms = kcf_poll_interval_ms;
	}
	PG_exception_stack = &local_sigjmp_buf;

	for (;;)
	{
		if (sleep_ms > 0)
		{
			/*
			 * Idle only while on the latch: a commit wakes an idle worker
			 * rather than one still sequencing, housekeeping or analyzing
			 * after its batch (shared_state.c).
			 */
			kcf_set_busy(worker, false);
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 sleep_ms, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			kcf_set_busy(worker, true);
		}
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		MemoryContextSwitchTo(loop_context);
		sleep_ms = work_once(worker, &last_top_up, &last_housekeeping, rings, &last_stats_check,
							 &waiting);
		MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextReset(loop_context);
	}
}

/* kc_flow.worker_status(): one row per configured worker. */
Datum
kcf_worker_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	if (!kcf_preloaded)
		return (Datum) 0;
	for (int i = 0; i < kcf_workers; i++)
	{
		Datum		values[3];
		bool		nulls[3] = {false, false, false};
		int			pid = kcf_worker_pid(i);

		values[0] = Int32GetDatum(i);
		values[1] = Int32GetDatum(pid);
		values[2] = CStringGetTextDatum(pid != 0 ? "running" : "starting");
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
