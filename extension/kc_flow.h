/*
 * kc_flow.h
 *      Declarations shared by the files of the kc_flow extension, by file.
 *
 * The flow: a payment trigger emits PURCHASE_CONFIRMED (emit.c); at commit the
 * workers are woken (shared_state.c); a worker (worker.c) or run_pending()
 * hands each queued event to the stage its type names (event_types.c)
 * through the dispatcher (dispatch.c); each stage (stage_*.c) reads what it
 * needs from the event's payload (payload.c), applies its effect and emits
 * the next event.
 */
#ifndef KC_FLOW_H
#define KC_FLOW_H

#include "postgres.h"
#include "executor/spi.h"
#include "storage/latch.h"
#include "utils/timestamp.h"
#include "utils/jsonb.h"

/* kc_flow.c: module init and the GUCs */
#define KCF_MAX_WORKERS 32

extern char *kcf_database;
extern int	kcf_workers;
extern int	kcf_max_attempts;
extern int	kcf_retry_base_ms;
extern int	kcf_poll_interval_ms;
extern int	kcf_batch_size;
extern int	kcf_session_generation;
extern int	kcf_rolling_window;
extern int	kcf_event_retention_s;
extern bool kcf_sequence_in_batch;
extern int	kcf_queue_rotation_size;
extern int	kcf_rotation_lock_timeout_ms;
extern int	kcf_version_rotation_rows;

/* values of kcf_session_generation (kc_flow.session_generation) */
enum
{
	KCF_SESSIONS_FULL,
	KCF_SESSIONS_ROLLING
};

/* shared_state.c: shared memory, present only when preloaded */
extern bool kcf_preloaded;
extern void kcf_shmem_install_hooks(void);
extern bool kcf_shared_ready(void);
extern void kcf_register_worker_latch(int worker, Latch *latch);
extern void kcf_unregister_worker_latch(int worker);
extern void kcf_wake_workers(void);
extern void kcf_count_commit(void);
extern uint64 kcf_commit_count(void);
extern void kcf_set_in_batch(int worker, bool in_batch);
extern void kcf_set_busy(int worker, bool busy);
extern bool kcf_other_in_batch(int worker);
extern void kcf_held_reset(int worker);
extern void kcf_held_note(Datum trainer_id);
extern int	kcf_held_by_others(Datum **ids);
extern int	kcf_worker_pid(int worker);
extern void kcf_inflight_begin(void);
extern void kcf_inflight_note(int64 id);
extern void kcf_inflight_end(void);
extern int64 kcf_inflight_horizon(void);
extern void kcf_note_writing(TimestampTz since);
extern TimestampTz kcf_oldest_writer(void);
extern void kcf_queue_drained_note(Oid relid, int64 generation, uint32 drained);
extern uint32 kcf_queue_drained(Oid relid, int64 *generation);

/* trainer_load.c: a trainer's load without updating its row */
extern void kcf_trainer_load_shmem_request(void);
extern void kcf_trainer_load_shmem_startup(void);
extern void kcf_trainer_load_install_callbacks(void);
extern bool kcf_trainer_load_hinted(void);
extern Oid	kcf_trainer_load_relid(void);
extern int32 kcf_trainer_load_exact(Oid relid, Datum trainer_id, bool seed);
extern void kcf_trainer_loads(Oid relid, Datum *ids, int n, int32 *loads);
extern void kcf_roster_version(uint64 *committed, uint64 *own);

/* the advisory lock keys of kc_flow: (KCF_LOCK_KEY1, one of the second keys) */
#define KCF_LOCK_KEY1 0x6b63666c	/* "kcfl" */
#define KCF_LOCK_WRITER 1		/* shared: an open transaction emitted events (no preload) */
#define KCF_LOCK_SEQUENCER 2	/* exclusive: the log head, one sequencer at a time */
#define KCF_LOCK_ROTATOR 3		/* exclusive: one rotation of the queue's ring at a time */
#define KCF_LOCK_LOG_ROTATOR 4	/* exclusive: one rotation of the log's ring at a time */
#define KCF_LOCK_VERSION_ROTATOR 5	/* exclusive: one rotation of the versions' ring at a time */
/* a lock space of its own: (KCF_LOCK_VERSIONS, uuid_hash(student)), a student's version bumps one at a time */
#define KCF_LOCK_VERSIONS 0x6b637673	/* "kcvs" */

/* log.c: the commit-ordered event log (0.2.0) */
typedef struct KcfRound
{
	int64		first;			/* positions given this round, first..last; 0 if none */
	int64		last;
	bool		announced;		/* a NOTIFY of the unannounced range was sent */
	bool		busy;			/* not run: another round held the log head (no wait asked) */
} KcfRound;

extern bool kcf_log_installed(void);
extern bool kcf_sequence(KcfRound *round, bool wait);

/* ring.c: a ring of three tables emptied by TRUNCATE, shared by the queue and the log */
#define KCF_RING_SLOTS 3

typedef enum KcfRotation
{
	KCF_ROTATE_NOT_DUE,			/* not due yet (or no ring, or a snapshot too old) */
	KCF_ROTATE_DONE,			/* the oldest slot was emptied and is current now */
	KCF_ROTATE_BUSY,			/* another rotator, the oldest slot's lock held by a session, or a backlog come meanwhile */
	KCF_ROTATE_CONTENDED		/* a lock not free in time, held only by the workers' batches or short transactions */
} KcfRotation;

typedef struct KcfRing
{
	const char *name;			/* in messages: "event queue" */
	const char *generation;		/* its generation sequence, schema-qualified */
	const char *const *tables;	/* partitioned by slot into <table>_0.._2; NULL-terminated */
	int			rotator_lock;	/* advisory key: one rotator of this ring at a time */
	int			then_lock;		/* advisory key taken after the tables' locks (0: none) */
	bool		(*due) (int64 generation);	/* whether to rotate now */
	/* tables' oldest slots locked: copies what must stay into current; false gives up */
	bool		(*carry) (int64 generation, int current, int oldest);
} KcfRing;

extern bool kcf_ring_installed(const KcfRing *ring);
extern KcfRotation kcf_ring_rotate(const KcfRing *ring);
extern Datum kcf_ring_rotate_by_hand(const KcfRing *ring, KcfRotation (*rotate) (void), const char *function);
extern void kcf_ring_exec(const char *sql);

/* queue_ring.c: the event queue as a ring of three tables (0.2.0) */
extern bool kcf_queue_ring_installed(void);
extern KcfRotation kcf_rotate_queue(void);
extern uint32 kcf_queue_claim_slots(int64 *generation);
extern int64 kcf_queue_generation(void);

/* log_ring.c: the event log, processed_events and the rounds as a ring (0.2.0) */
extern bool kcf_log_ring_installed(void);
extern KcfRotation kcf_rotate_log(void);

/* version_ring.c: the students' cache versions, insert-only, as a ring (0.2.0) */
extern bool kcf_version_ring_installed(void);
extern int	kcf_version_lock(int n, const Datum *student_ids);
extern char *kcf_version_largest_sql(const char *student, int slot);
extern KcfRotation kcf_rotate_versions(void);

/* table_stats.c: ANALYZE of tables whose statistics lag far behind */
extern void kcf_analyze_grown_tables(void);

/* spi_util.c: small helpers around prepared SPI plans */
extern SPIPlanPtr kcf_plan(SPIPlanPtr *cache, const char *sql, int nargs, const Oid *argtypes);
extern void kcf_require_read_committed(const char *what, const char *why);
extern SPIPlanPtr kcf_plan_generic(SPIPlanPtr *cache, const char *sql, int nargs, const Oid *argtypes);
extern int	kcf_exec(SPIPlanPtr plan, Datum *values, const char *nulls, long count);
extern bool kcf_get_bool(int row, int col, bool *isnull);
extern int64 kcf_get_int64(int row, int col, bool *isnull);
extern Datum kcf_get_datum(int row, int col, bool *isnull);
extern char *kcf_get_text(int row, int col);
extern ErrorData *kcf_in_subtransaction(bool (*work) (void *arg), void *arg);

/* timezone.c: IANA zone names (the SQL function kc_flow.is_iana_timezone) */
extern PGDLLEXPORT Datum kcf_is_iana_timezone(PG_FUNCTION_ARGS);

/* payments_slot.c: a payment's time slot that kc_flow.validate_time_slot() accepts */
extern bool kcf_slot_surely_valid(Datum slot);
/* payments_slot.c: how many keys a slot has at its top; -1 when it is not an object */
extern int	kcf_slot_key_count(Jsonb *slot);

/* payments_emit.c: the order the view's trigger locked, for the event of the outcome it inserts */
extern void kcf_payments_emit_hand_over(Datum payment, HeapTuple order, TupleDesc desc);

/* event_types.c: the table of event types */
extern const char *kcf_consumer_for(const char *event_type);

/* emit.c: the outbox */
extern int64 kcf_emit(const char *event_type, Datum correlation_id,
					  Datum student_id, const char *payload_json);
extern void kcf_emit_set(const char *event_type, int n, const Datum *correlation_ids,
						 const Datum *student_ids, char *const *payloads, int64 *event_ids);
extern void kcf_emit_set_after_deferred(const char *event_type, int n, const Datum *correlation_ids,
										const Datum *student_ids, char *const *payloads,
										const int64 *consumed, int n_consumed);
extern void kcf_emit_batch_begin(void);
extern void kcf_emit_defer(bool on);
extern int	kcf_emit_deferred_count(void);
extern void kcf_emit_deferred_truncate(int n);
extern void kcf_emit_deferred_forget(void);
extern void kcf_emit_flush(void);
extern const char *kcf_emit_deferred_payload(int64 id);
extern bool kcf_emit_deferred_note(int64 id, bool consumed);
extern bool kcf_emit_deferred_unhandled(int64 id);
extern void kcf_emit_deferred_handled(int64 id, const char *consumer);
extern void kcf_emit_install_callbacks(void);

/* dispatch.c: what the dispatcher hands a stage and what the stage answers */
typedef enum KcfOutcome
{
	KCF_DONE,					/* effect applied (or nothing to do): mark processed */
	KCF_DEFER,					/* not possible yet (no trainer free): keep queued */
	KCF_REFUSE					/* never possible: keep the follow-up event, dead-letter the job */
} KcfOutcome;

typedef struct KcfEvent
{
	int64		id;
	const char *type;
} KcfEvent;

typedef struct KcfStageResult
{
	int64		next_event;		/* event emitted for a later stage, 0 if none */
	const char *next_type;		/* its type */
	int			defer_ms;		/* with KCF_DEFER: how long to wait */
	int			refuse_sqlstate;	/* with KCF_REFUSE: why, as an error says it */
	char	   *refuse_message;
	char	   *refuse_detail;
	char	   *refuse_hint;
} KcfStageResult;

extern int	kcf_dispatch_batch(int max_jobs, int *claimed);
extern int64 kcf_next_due_ms(TimestampTz batch_start);

/* payload.c: reading an event's payload */
extern Datum kcf_event_uuid(const KcfEvent *event, const char *key);

/* session_plan.c: a purchase's planned sessions, handed from allocation to sessions */
typedef struct KcfPlan
{
	Datum		times;			/* tstzmultirange of every planned session */
	Datum		dates;			/* date[]: local dates, in session order */
	Datum		local_times;	/* time[]: local start times */
	Datum		starts;			/* timestamptz[] */
	Datum		ends;			/* timestamptz[] */
	int64		sessions;		/* 0: no sessions (the other fields are then undefined) */
} KcfPlan;

extern void kcf_plan_of_purchase(Datum purchase_id, KcfPlan *plan);
extern void kcf_plan_of_allocation(Datum allocation_id, KcfPlan *plan);
extern void kcf_plan_hand_over(Datum allocation_id, const KcfPlan *plan);
extern bool kcf_plan_handed_over(Datum allocation_id, KcfPlan *plan);
extern void kcf_plan_hand_over_reset(void);
extern bool kcf_plan_handed_over_since(Datum *allocation_id);

/* stage_*.c: one stage each, called by the dispatcher */
extern KcfOutcome kcf_stage_purchase(const KcfEvent *event, KcfStageResult *result);
extern bool kcf_stage_purchase_set(int n, const int64 *event_ids, int64 *next_events);
extern KcfOutcome kcf_stage_allocation(const KcfEvent *event, KcfStageResult *result);
extern bool kcf_bookings_per_allocation(void);
extern KcfOutcome kcf_stage_sessions(const KcfEvent *event, KcfStageResult *result);
extern int	kcf_stage_sessions_set(int n, const Datum *allocation_ids, const int64 *event_ids);
extern KcfOutcome kcf_stage_refund(const KcfEvent *event, KcfStageResult *result);
extern int	kcf_top_up_rolling_sessions(void);

/* worker.c: the background workers' entry point, registered by kc_flow.c */
extern bool kcf_am_worker;
PGDLLEXPORT void kcf_worker_main(Datum main_arg);

#endif							/* KC_FLOW_H */
