/*
 * kc_flow.c
 *      Module entry point: configuration (GUCs), shared memory hooks and the
 *      registration of the background workers.
 *
 * Loaded through shared_preload_libraries the module starts kc_flow.workers
 * workers on kc_flow.database.  Loaded on first use instead (no preload),
 * every SQL function still works and kc_flow.run_pending() drives the
 * pipeline by hand.
 */
#include "kc_flow.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "utils/guc.h"

PG_MODULE_MAGIC;

char	   *kcf_database = NULL;
int			kcf_workers = 2;
int			kcf_max_attempts = 3;
int			kcf_retry_base_ms = 100;
int			kcf_poll_interval_ms = 1000;
int			kcf_batch_size = 32;
int			kcf_session_generation = KCF_SESSIONS_FULL;
int			kcf_rolling_window = 7;
int			kcf_event_retention_s = 7 * 24 * 3600;
bool		kcf_sequence_in_batch = true;
int			kcf_queue_rotation_size = 128;
int			kcf_rotation_lock_timeout_ms = 200;
int			kcf_version_rotation_rows = 20000;

static const struct config_enum_entry session_mode_options[] = {
	{"full", KCF_SESSIONS_FULL, false},
	{"rolling", KCF_SESSIONS_ROLLING, false},
	{NULL, 0, false}
};

void		_PG_init(void);

/* Settings that size the postmaster's workers: only when preloaded. */
static void
define_worker_gucs(void)
{
	DefineCustomStringVariable("kc_flow.database",
							   "Database in which the kc_flow background workers run.",
							   "The kc_flow extension must be created in that database.",
							   &kcf_database, "postgres",
							   PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("kc_flow.workers",
							"Number of kc_flow background workers.",
							"0 disables the workers; kc_flow.run_pending() still works.",
							&kcf_workers, 2, 0, KCF_MAX_WORKERS,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
}

static void
define_gucs(void)
{
	DefineCustomIntVariable("kc_flow.max_attempts",
							"Failed attempts after which an event is dead-lettered.",
							NULL,
							&kcf_max_attempts, 3, 1, 1000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("kc_flow.retry_base_ms",
							"First retry delay after a failure; it doubles with every attempt.",
							NULL,
							&kcf_retry_base_ms, 100, 0, 3600 * 1000,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("kc_flow.poll_interval_ms",
							"Longest time a worker sleeps when nothing wakes it.",
							"Commits that emit events wake the workers at once; polling is the safety net.",
							&kcf_poll_interval_ms, 1000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("kc_flow.batch_size",
							"Events a worker claims per transaction.",
							NULL,
							&kcf_batch_size, 32, 1, 10000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomEnumVariable("kc_flow.session_generation",
							 "How sessions are generated: all at once (full) or a rolling window.",
							 NULL,
							 &kcf_session_generation, KCF_SESSIONS_FULL, session_mode_options,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("kc_flow.rolling_window",
							"Upcoming sessions kept scheduled in rolling mode.",
							NULL,
							&kcf_rolling_window, 7, 1, 30,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("kc_flow.event_retention",
							"How long handled events are kept in the event log; 0 keeps them forever.",
							"The log's ring rotates every half of it; see docs/extension.md, \"Storage under a held horizon\".",
							&kcf_event_retention_s, 7 * 24 * 3600, 0, INT_MAX,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomBoolVariable("kc_flow.sequence_in_batch",
							 "Whether a worker gives log positions in its batch transaction (on) or in a transaction of its own after it (off).",
							 "On saves a commit per batch; see docs/extension.md, \"Gap-free event log\".",
							 &kcf_sequence_in_batch, true,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("kc_flow.queue_rotation_size",
							"Size of the event queue's current table above which the ring rotates.",
							"Rotation truncates the oldest of the three tables; see docs/extension.md, \"Storage under a held horizon\".",
							&kcf_queue_rotation_size, 128, 8, 1024 * 1024,
							PGC_SUSET, GUC_UNIT_KB, NULL, NULL, NULL);
	DefineCustomIntVariable("kc_flow.version_rotation_rows",
							"Rows of the cache versions' current table from which the ring rotates.",
							"It rotates once the current table also holds twice the rows the last rotation carried into it; "
							"see docs/extension.md, \"Cache versions\".",
							&kcf_version_rotation_rows, 20000, 0, INT_MAX / 2,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("kc_flow.rotation_lock_timeout",
							"How long a rotation of a ring waits for its oldest tables' locks.",
							"The workers' claims queue behind the request meanwhile; a rotation not granted in time is "
							"tried again later.",
							&kcf_rotation_lock_timeout_ms, 200, 10, 60 * 1000,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);
	MarkGUCPrefixReserved("kc_flow");
}

/* Registers kc_flow.workers workers; their entry point is kcf_worker_main (worker.c). */
static void
register_workers(void)
{
	for (int i = 0; i < kcf_workers; i++)
	{
		BackgroundWorker worker;

		memset(&worker, 0, sizeof(worker));
		worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
		worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
		worker.bgw_restart_time = 5;
		snprintf(worker.bgw_library_name, BGW_MAXLEN, "kc_flow");
		snprintf(worker.bgw_function_name, BGW_MAXLEN, "kcf_worker_main");
		snprintf(worker.bgw_name, BGW_MAXLEN, "kc_flow worker %d", i);
		snprintf(worker.bgw_type, BGW_MAXLEN, "kc_flow worker");
		worker.bgw_main_arg = Int32GetDatum(i);
		RegisterBackgroundWorker(&worker);
	}
}

void
_PG_init(void)
{
	/* the workers' settings first: MarkGUCPrefixReserved() in define_gucs() ends the prefix */
	if (process_shared_preload_libraries_in_progress)
		define_worker_gucs();
	define_gucs();
	kcf_emit_install_callbacks();
	kcf_trainer_load_install_callbacks();

	if (!process_shared_preload_libraries_in_progress)
		return;

	kcf_preloaded = true;
	kcf_shmem_install_hooks();
	register_workers();
}
