/*
 * emit.c
 *      The outbox: appending an event in the current transaction.
 *
 * kcf_emit() is the only writer of new kc_flow.events (the rotation of the
 * log's ring only copies rows forward, log_ring.c).  In one statement it bumps
 * the student's cache version (a new row of the versions' ring, taken after
 * the student's lock: version_ring.c), inserts the event (with the writing
 * transaction's id, the txid column's default) and, when a stage consumes
 * that type (the table of event types, event_types.c), queues it.  A
 * transaction callback wakes the workers right after such a commit: they
 * give the event its log position and announce it (log.c).  Nothing else
 * happens at the application's commit: no NOTIFY, no lock another
 * transaction waits for.
 *
 * kcf_emit_set() appends a set of events, of one type or several, in one
 * statement: each student's cache version is bumped once for all of its
 * events in the set.  While the dispatcher runs an allocation job, kcf_emit()
 * defers its event instead (kcf_emit_defer()): the id is taken at once, so
 * the order of ids is the order of the calls, and the row is written with
 * the batch's SESSIONS_GENERATED set at the batch's end, or by
 * kcf_emit_flush() before anything else emits (so that a student's versions
 * keep the order of its ids).  A deferred event whose consumer ran in the
 * same batch gets no queue row, and gets that consumer's processed mark in
 * the same statement when the dispatcher says so (kcf_emit_deferred_handled).
 *
 * On a 0.1.0 schema (the library is upgraded before ALTER EXTENSION), the
 * 0.1.0 behaviour instead: the id is noted for the event horizon
 * (shared_state.c), NOTIFY kc_flow_events is sent per event and the version
 * is the student's row of the table cache_versions, updated.
 */
#include "kc_flow.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/sequence.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/uuid.h"

/* advisory lock taken instead of the shared horizon (0.1.0) or the writing note (0.2.0) when not preloaded */
#define KCF_EVENT_LOCK_KEY1 KCF_LOCK_KEY1
#define KCF_EVENT_LOCK_KEY2 KCF_LOCK_WRITER

static bool wake_at_commit = false;
static bool emitted_in_xact = false;

/* an event kcf_emit() deferred: its id is taken, its row not written yet */
typedef struct KcfDeferred
{
	int64		id;
	const char *event_type;
	pg_uuid_t	correlation_id;
	pg_uuid_t	student_id;
	char	   *payload;
	bool		consumed;		/* its consumer handled it in this batch: no queue row */
	char	   *handled_by;		/* the consumer whose processed mark it gets with its row */
} KcfDeferred;

static bool deferring = false;
static int	batch_nest_level = 0;	/* the transaction nesting level the batch runs at */
static MemoryContext deferred_context = NULL;
static KcfDeferred *deferred = NULL;
static int	n_deferred = 0;
static int	max_deferred = 0;

static int64 defer_event(const char *event_type, Datum correlation_id, Datum student_id,
						 const char *payload_json);

PG_FUNCTION_INFO_V1(kcf_emit_event_sql);
PG_FUNCTION_INFO_V1(kcf_event_horizon);
PG_FUNCTION_INFO_V1(kcf_wake_workers_sql);

static Oid
events_sequence(void)
{
	Oid			nsp = get_namespace_oid("kc_flow", false);
	Oid			seq = get_relname_relid("events_id_seq", nsp);

	if (!OidIsValid(seq))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("sequence kc_flow.events_id_seq does not exist"),
				 errhint("Reinstall the extension: DROP EXTENSION kc_flow; CREATE EXTENSION kc_flow CASCADE.")));
	return seq;
}

/* Takes the next event id; on a 0.1.0 schema, keeping its event horizon correct. */
static int64
take_event_id(bool legacy)
{
	Oid			seq = events_sequence();
	int64		id;

	if (!legacy)
		return nextval_internal(seq, false);
	if (kcf_shared_ready())
	{
		kcf_inflight_begin();
		id = nextval_internal(seq, false);
		kcf_inflight_note(id);
	}
	else
	{
		DirectFunctionCall2(pg_advisory_xact_lock_shared_int4,
							Int32GetDatum(KCF_EVENT_LOCK_KEY1),
							Int32GetDatum(KCF_EVENT_LOCK_KEY2));
		id = nextval_internal(seq, false);
	}
	return id;
}

static void
send_notify(int64 id, const char *event_type, Datum correlation_id,
			Datum student_id, int64 version)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"id\":" INT64_FORMAT ",\"type\":\"%s\",\"student_id\":\"%s\","
					 "\"correlation_id\":\"%s\",\"version\":" INT64_FORMAT "}",
					 id, event_type,
					 DatumGetCString(DirectFunctionCall1(uuid_out, student_id)),
					 DatumGetCString(DirectFunctionCall1(uuid_out, correlation_id)),
					 version);
	Async_Notify("kc_flow_events", buf.data);
	pfree(buf.data);
}

/*
 * Appends one event; the caller must be connected to SPI.  Returns its id.
 * A type missing from the table of event types is an error.
 */
/*
 * The shared advisory lock by which kc_flow.health() sees, without preload,
 * a transaction that emitted events. Held by the top transaction rather than
 * by a subtransaction that may roll back, since emitted_in_xact stays set
 * until the transaction ends.
 */
static void
lock_as_writer(void)
{
	ResourceOwner owner = CurrentResourceOwner;

	CurrentResourceOwner = TopTransactionResourceOwner;
	PG_TRY();
	{
		DirectFunctionCall2(pg_advisory_xact_lock_shared_int4,
							Int32GetDatum(KCF_EVENT_LOCK_KEY1),
							Int32GetDatum(KCF_EVENT_LOCK_KEY2));
	}
	PG_FINALLY();
	{
		CurrentResourceOwner = owner;
	}
	PG_END_TRY();
}

/* What a transaction that emitted events on the 0.2.0 schema owes at its commit, noted once. */
static void
noted_as_emitted(void)
{
	/*
	 * The workers give every committed event its position, consumed or not.
	 * A worker's own events get theirs in its own round, and their follow-up
	 * stages run in its batch: no other worker needs waking.
	 */
	if (!kcf_am_worker)
		wake_at_commit = true;
	if (!emitted_in_xact)
	{
		/* kc_flow.health() reports the oldest transaction whose events are still to come */
		if (kcf_shared_ready())
			kcf_note_writing(GetCurrentTransactionStartTimestamp());
		else
			lock_as_writer();
	}
	emitted_in_xact = true;
}

/*
 * Runs a statement that bumps cache versions, the students' locks taken
 * (kcf_version_lock()).  In READ COMMITTED its snapshot is taken now, after
 * the locks; a transaction snapshot may be older than the last bump of a
 * student, so in REPEATABLE READ and SERIALIZABLE it reads with the latest
 * snapshot instead, as the foreign key checks do: two transactions never
 * give one version twice.
 */
static void
exec_bump(SPIPlanPtr plan, Datum *values, const char *nulls)
{
	int			rc;

	if (!IsolationUsesXactSnapshot())
	{
		kcf_exec(plan, values, nulls, 1);
		return;
	}
	CommandCounterIncrement();
	rc = SPI_execute_snapshot(plan, values, nulls, GetLatestSnapshot(), InvalidSnapshot,
							  false, true, 1);
	if (rc < 0)
		elog(ERROR, "kc_flow: statement failed: %s", SPI_result_code_string(rc));
}

/* what follows the version bump in kcf_emit()'s statement: the event and its queue row */
#define EMIT_EVENT_AND_QUEUE_ROW \
	" e AS (" \
	"  INSERT INTO kc_flow.events (id, event_type, correlation_id, student_id, payload, version)" \
	"  SELECT $1, $2, $3, $4, $5::jsonb, v.version FROM v RETURNING version)," \
	" q AS (" \
	"  INSERT INTO kc_flow.event_queue (event_id, consumer)" \
	"  SELECT $1, $6 WHERE $6 IS NOT NULL)" \
	" SELECT version FROM e"

/*
 * The statement of kcf_emit(): version, event, queue row; the new version is
 * its result.  On the ring, one statement per current slot (the table the
 * version goes into and the order of its probes, version_ring.c).
 */
static SPIPlanPtr
emit_plan(bool version_ring, int slot)
{
	static SPIPlanPtr ring_plans[KCF_RING_SLOTS];
	static SPIPlanPtr table_plan = NULL;
	Oid			types[6] = {INT8OID, TEXTOID, UUIDOID, UUIDOID, TEXTOID, TEXTOID};

	if (version_ring)
	{
		if (ring_plans[slot] != NULL)
			return ring_plans[slot];
		return kcf_plan(&ring_plans[slot],
						psprintf("WITH v AS ("
								 "  INSERT INTO kc_flow.student_versions_%d (student_id, version, slot)"
								 "  SELECT $4, %s + 1, %d"
								 "  RETURNING version),"
								 EMIT_EVENT_AND_QUEUE_ROW,
								 slot, kcf_version_largest_sql("$4", slot), slot),
						6, types);
	}
	/* 0.1.0's table, one row per student */
	return kcf_plan(&table_plan,
					"WITH v AS ("
					"  INSERT INTO kc_flow.cache_versions AS c (student_id, version) VALUES ($4, 1)"
					"  ON CONFLICT (student_id) DO UPDATE SET version = c.version + 1, updated_at = now()"
					"  RETURNING version),"
					EMIT_EVENT_AND_QUEUE_ROW,
					6, types);
}

int64
kcf_emit(const char *event_type, Datum correlation_id, Datum student_id,
		 const char *payload_json)
{
	Datum		values[6];
	char		nulls[6] = "      ";
	const char *consumer = kcf_consumer_for(event_type);
	bool		legacy = !kcf_log_installed();
	bool		version_ring;
	SPIPlanPtr	plan;
	int64		id;
	int64		version;
	bool		isnull;

	if (deferring && !legacy)
		return defer_event(event_type, correlation_id, student_id, payload_json);
	version_ring = kcf_version_ring_installed();

	id = take_event_id(legacy);
	values[0] = Int64GetDatum(id);
	values[1] = CStringGetTextDatum(event_type);
	values[2] = correlation_id;
	values[3] = student_id;
	values[4] = CStringGetTextDatum(payload_json ? payload_json : "{}");
	values[5] = consumer ? CStringGetTextDatum(consumer) : (Datum) 0;
	if (consumer == NULL)
		nulls[5] = 'n';

	if (version_ring)
	{
		plan = emit_plan(true, kcf_version_lock(1, &student_id));
		exec_bump(plan, values, nulls);
	}
	else
	{
		plan = emit_plan(false, 0);
		kcf_exec(plan, values, nulls, 1);
	}
	version = kcf_get_int64(0, 1, &isnull);

	if (legacy)
	{
		send_notify(id, event_type, correlation_id, student_id, version);
		if (consumer != NULL)
			wake_at_commit = true;
		emitted_in_xact = true;
	}
	else
		noted_as_emitted();
	return id;
}

/*
 * Defers an event of kcf_emit() (see the header): takes its id now and keeps
 * the rest, in a context that outlives the job's subtransaction, for the set
 * that writes it.
 */
static int64
defer_event(const char *event_type, Datum correlation_id, Datum student_id,
			const char *payload_json)
{
	MemoryContext old;
	KcfDeferred *d;

	if (deferred_context == NULL)
		deferred_context = AllocSetContextCreate(TopMemoryContext, "kc_flow deferred events",
												 ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(deferred_context);
	if (n_deferred == max_deferred)
	{
		max_deferred = Max(16, max_deferred * 2);
		deferred = deferred == NULL ? palloc(sizeof(KcfDeferred) * max_deferred)
			: repalloc(deferred, sizeof(KcfDeferred) * max_deferred);
	}
	d = &deferred[n_deferred];
	d->id = take_event_id(false);
	d->event_type = pstrdup(event_type);
	memcpy(&d->correlation_id, DatumGetUUIDP(correlation_id), UUID_LEN);
	memcpy(&d->student_id, DatumGetUUIDP(student_id), UUID_LEN);
	d->payload = pstrdup(payload_json ? payload_json : "{}");
	d->consumed = false;
	d->handled_by = NULL;
	MemoryContextSwitchTo(old);
	n_deferred++;
	noted_as_emitted();
	return d->id;
}

/*
 * Appends n events in one statement, as n calls of kcf_emit() would (the
 * same ids, versions and queue rows; a student's events get consecutive
 * versions in the order given, its cache version one new row): ids[i] is the
 * event's id when taken already, else 0 and it is taken here, in order;
 * consumers[i] the consumer whose queue row it gets, NULL for none; marks[i]
 * the consumer whose processed mark it gets (it handled the event already),
 * NULL for none.  Only on the 0.2.0 schema, whose versions are the ring.
 */
static void
emit_rows(int n, const char **types, const Datum *correlation_ids, const Datum *student_ids,
		  const char *const *payloads, const char **consumers, const char **marks, int64 *ids)
{
	static SPIPlanPtr plans[KCF_RING_SLOTS];
	SPIPlanPtr	plan;
	int			slot;
	Oid			argtypes[7] = {INT8ARRAYOID, TEXTARRAYOID, UUIDARRAYOID, UUIDARRAYOID, TEXTARRAYOID,
	TEXTARRAYOID, TEXTARRAYOID};
	Datum		values[7];
	Datum	   *id_datums = palloc(sizeof(Datum) * n);
	Datum	   *type_texts = palloc(sizeof(Datum) * n);
	Datum	   *payload_texts = palloc(sizeof(Datum) * n);
	Datum	   *consumer_texts = palloc(sizeof(Datum) * n);
	bool	   *consumer_nulls = palloc(sizeof(bool) * n);
	Datum	   *mark_texts = palloc(sizeof(Datum) * n);
	bool	   *mark_nulls = palloc(sizeof(bool) * n);
	int			dims[1] = {n};
	int			lbs[1] = {1};

	for (int i = 0; i < n; i++)
	{
		if (ids[i] == 0)
			ids[i] = take_event_id(false);
		id_datums[i] = Int64GetDatum(ids[i]);
		type_texts[i] = CStringGetTextDatum(types[i]);
		payload_texts[i] = CStringGetTextDatum(payloads[i] ? payloads[i] : "{}");
		consumer_nulls[i] = consumers[i] == NULL;
		consumer_texts[i] = consumers[i] ? CStringGetTextDatum(consumers[i]) : (Datum) 0;
		mark_nulls[i] = marks[i] == NULL;
		mark_texts[i] = marks[i] ? CStringGetTextDatum(marks[i]) : (Datum) 0;
	}
	values[0] = PointerGetDatum(construct_array(id_datums, n, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[1] = PointerGetDatum(construct_array(type_texts, n, TEXTOID, -1, false, TYPALIGN_INT));
	values[2] = PointerGetDatum(construct_array((Datum *) correlation_ids, n, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
	values[3] = PointerGetDatum(construct_array((Datum *) student_ids, n, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
	values[4] = PointerGetDatum(construct_array(payload_texts, n, TEXTOID, -1, false, TYPALIGN_INT));
	values[5] = PointerGetDatum(construct_md_array(consumer_texts, consumer_nulls, 1, dims, lbs,
												   TEXTOID, -1, false, TYPALIGN_INT));
	values[6] = PointerGetDatum(construct_md_array(mark_texts, mark_nulls, 1, dims, lbs,
												   TEXTOID, -1, false, TYPALIGN_INT));
	slot = kcf_version_lock(n, student_ids);
	plan = plans[slot];
	if (plan == NULL)
		plan = kcf_plan_generic(&plans[slot],
								psprintf("WITH i AS ("
										 "  SELECT * FROM unnest($1::bigint[], $2::text[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[])"
										 "    WITH ORDINALITY AS u(id, event_type, correlation_id, student_id, payload, consumer, mark, o)),"
										 " v AS ("
										 "  INSERT INTO kc_flow.student_versions_%d (student_id, version, slot)"
										 "  SELECT s.student_id, %s + s.n, %d"
										 "    FROM (SELECT student_id, count(*) AS n FROM i GROUP BY student_id) s"
										 "  RETURNING student_id, version),"
										 " e AS ("
										 "  INSERT INTO kc_flow.events (id, event_type, correlation_id, student_id, payload, version)"
										 "  SELECT i.id, i.event_type, i.correlation_id, i.student_id, i.payload::jsonb,"
										 "         v.version - count(*) OVER (PARTITION BY i.student_id)"
										 "                   + row_number() OVER (PARTITION BY i.student_id ORDER BY i.o)"
										 "    FROM i JOIN v ON v.student_id = i.student_id),"
										 " q AS ("
										 "  INSERT INTO kc_flow.event_queue (event_id, consumer)"
										 "  SELECT i.id, i.consumer FROM i WHERE i.consumer IS NOT NULL),"
										 " m AS ("
										 "  INSERT INTO kc_flow.processed_events (event_id, consumer)"
										 "  SELECT i.id, i.mark FROM i WHERE i.mark IS NOT NULL)"
										 " SELECT 1",
										 slot, kcf_version_largest_sql("s.student_id", slot), slot),
								7, argtypes);
	exec_bump(plan, values, NULL);
	noted_as_emitted();
}

/* Whether id is one of the n in ids. */
static bool
listed(int64 id, const int64 *ids, int n)
{
	for (int i = 0; i < n; i++)
		if (ids[i] == id)
			return true;
	return false;
}

/*
 * Appends the deferred events, then n events of type event_type, in one
 * statement (emit_rows()); a deferred event whose id is one of the n_consumed
 * in consumed gets no queue row: its consumer ran in this transaction.  The
 * new events' ids go to event_ids when not NULL.  The deferred events stay
 * listed: the caller forgets them (kcf_emit_deferred_forget()) once the
 * statement's subtransaction is kept.
 */
static void
emit_with_deferred(const char *event_type, int n, const Datum *correlation_ids,
				   const Datum *student_ids, char *const *payloads, int64 *event_ids,
				   const int64 *consumed, int n_consumed)
{
	int			total = n_deferred + n;
	const char *consumer = n > 0 ? kcf_consumer_for(event_type) : NULL;
	const char **types;
	Datum	   *corrs;
	Datum	   *students;
	const char **texts;
	const char **consumers;
	const char **marks;
	int64	   *ids;

	if (total == 0)
		return;
	if (!kcf_log_installed())
	{
		/* 0.1.0: nothing was deferred (kcf_emit() does not defer there) */
		for (int i = 0; i < n; i++)
		{
			int64		id = kcf_emit(event_type, correlation_ids[i], student_ids[i], payloads[i]);

			if (event_ids)
				event_ids[i] = id;
		}
		return;
	}
	types = palloc(sizeof(char *) * total);
	corrs = palloc(sizeof(Datum) * total);
	students = palloc(sizeof(Datum) * total);
	texts = palloc(sizeof(char *) * total);
	consumers = palloc(sizeof(char *) * total);
	marks = palloc0(sizeof(char *) * total);
	ids = palloc0(sizeof(int64) * total);
	for (int i = 0; i < n_deferred; i++)
	{
		KcfDeferred *d = &deferred[i];

		ids[i] = d->id;
		types[i] = d->event_type;
		corrs[i] = UUIDPGetDatum(&d->correlation_id);
		students[i] = UUIDPGetDatum(&d->student_id);
		texts[i] = d->payload;
		consumers[i] = d->consumed || listed(d->id, consumed, n_consumed) ? NULL
			: kcf_consumer_for(d->event_type);
		marks[i] = d->handled_by;
	}
	for (int i = 0; i < n; i++)
	{
		types[n_deferred + i] = event_type;
		corrs[n_deferred + i] = correlation_ids[i];
		students[n_deferred + i] = student_ids[i];
		texts[n_deferred + i] = payloads[i];
		consumers[n_deferred + i] = consumer;
	}
	emit_rows(total, types, corrs, students, texts, consumers, marks, ids);
	if (event_ids)
		memcpy(event_ids, ids + n_deferred, sizeof(int64) * n);
}

/*
 * Appends n events of one type in one statement, as n calls of kcf_emit()
 * would (emit_rows()), their ids in event_ids when not NULL; or defers them,
 * as kcf_emit() does, while the dispatcher defers.  On a 0.1.0 schema it
 * calls kcf_emit() n times.
 */
void
kcf_emit_set(const char *event_type, int n, const Datum *correlation_ids,
			 const Datum *student_ids, char *const *payloads, int64 *event_ids)
{
	if (deferring && kcf_log_installed())
	{
		for (int i = 0; i < n; i++)
		{
			int64		id = defer_event(event_type, correlation_ids[i], student_ids[i], payloads[i]);

			if (event_ids)
				event_ids[i] = id;
		}
		return;
	}
	Assert(n_deferred == 0);
	emit_with_deferred(event_type, n, correlation_ids, student_ids, payloads, event_ids, NULL, 0);
}

/*
 * The deferred events and then n events of type event_type, in one statement
 * (emit_with_deferred(): consumed are the deferred events whose consumer ran
 * in this transaction); the caller forgets the deferred events once the
 * subtransaction it ran in is kept.
 */
void
kcf_emit_set_after_deferred(const char *event_type, int n, const Datum *correlation_ids,
							const Datum *student_ids, char *const *payloads,
							const int64 *consumed, int n_consumed)
{
	emit_with_deferred(event_type, n, correlation_ids, student_ids, payloads, NULL,
					   consumed, n_consumed);
}

/*
 * A batch begins at the current nesting level: nothing is deferred yet, and
 * should that level's (sub)transaction abort, what the batch deferred goes
 * with it (kcf_subxact_callback).
 */
void
kcf_emit_batch_begin(void)
{
	deferring = false;
	kcf_emit_deferred_forget();
	batch_nest_level = GetCurrentTransactionNestLevel();
}

/* Whether kcf_emit() defers its events: on while the dispatcher runs an allocation job. */
void
kcf_emit_defer(bool on)
{
	deferring = on;
}

/* How many events are deferred; a mark for kcf_emit_deferred_truncate(). */
int
kcf_emit_deferred_count(void)
{
	return n_deferred;
}

/* Drops the events deferred after the first n: the job that deferred them was rolled back. */
void
kcf_emit_deferred_truncate(int n)
{
	Assert(n <= n_deferred);
	n_deferred = n;
	if (n == 0 && deferred_context != NULL)
	{
		MemoryContextReset(deferred_context);
		deferred = NULL;
		max_deferred = 0;
	}
}

/* The deferred event id, or NULL when it is not deferred. */
static KcfDeferred *
deferred_event(int64 id)
{
	for (int i = 0; i < n_deferred; i++)
		if (deferred[i].id == id)
			return &deferred[i];
	return NULL;
}

/* The payload of event id when it is deferred, else NULL (its row is to be read). */
const char *
kcf_emit_deferred_payload(int64 id)
{
	KcfDeferred *d = deferred_event(id);

	return d ? d->payload : NULL;
}

/*
 * Whether event id is deferred; notes whether its consumer handled it in
 * this batch: consumed (its job was kept), so that it gets no queue row, or
 * not (its job was rolled back), so that it gets its queue row and no mark.
 */
bool
kcf_emit_deferred_note(int64 id, bool consumed)
{
	KcfDeferred *d = deferred_event(id);

	if (d == NULL)
		return false;
	d->consumed = consumed;
	if (!consumed)
		d->handled_by = NULL;
	return true;
}

/*
 * Consumer handled deferred event id in this batch (its job was done): the
 * event gets that consumer's processed mark with its row, and no queue row.
 */
void
kcf_emit_deferred_handled(int64 id, const char *consumer)
{
	KcfDeferred *d = deferred_event(id);

	Assert(d != NULL);
	d->consumed = true;
	d->handled_by = MemoryContextStrdup(deferred_context, consumer);
}

/* Whether event id is deferred and its consumer has not handled it: no queue row, no mark yet. */
bool
kcf_emit_deferred_unhandled(int64 id)
{
	KcfDeferred *d = deferred_event(id);

	return d != NULL && !d->consumed;
}

/* Forgets the deferred events: they were written. */
void
kcf_emit_deferred_forget(void)
{
	kcf_emit_deferred_truncate(0);
}

/* Writes the deferred events now, with their queue rows, and forgets them. */
void
kcf_emit_flush(void)
{
	if (n_deferred == 0)
		return;
	emit_with_deferred(NULL, 0, NULL, NULL, NULL, NULL, NULL, 0);
	kcf_emit_deferred_forget();
}

/* kc_flow.emit_event(event_type, correlation_id, student_id, payload) */
Datum
kcf_emit_event_sql(PG_FUNCTION_ARGS)
{
	char	   *event_type;
	char	   *payload;
	int64		id;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("event type, correlation id and student id must not be null")));
	event_type = text_to_cstring(PG_GETARG_TEXT_PP(0));
	payload = PG_ARGISNULL(3) ? NULL
		: DatumGetCString(DirectFunctionCall1(jsonb_out, PG_GETARG_DATUM(3)));

	SPI_connect();
	id = kcf_emit(event_type, PG_GETARG_DATUM(1), PG_GETARG_DATUM(2), payload);
	SPI_finish();
	PG_RETURN_INT64(id);
}

/* kc_flow.wake_workers(): wake the workers when this transaction commits. */
Datum
kcf_wake_workers_sql(PG_FUNCTION_ARGS)
{
	wake_at_commit = true;
	PG_RETURN_VOID();
}

/*
 * kc_flow.event_horizon() of the 0.1.0 schema (0.2.0 has no such function:
 * its log needs no horizon): the smallest event id an open transaction holds,
 * NULL when none.  Without shared memory it waits for open writers instead,
 * so that everything committed is final by the time the caller reads.
 */
Datum
kcf_event_horizon(PG_FUNCTION_ARGS)
{
	int64		horizon;

	kcf_require_read_committed("kc_flow.events_since()",
							   "A transaction snapshot taken before the event horizon could hide events that commit below it.");

	if (!kcf_shared_ready())
	{
		DirectFunctionCall2(pg_advisory_xact_lock_int4,
							Int32GetDatum(KCF_EVENT_LOCK_KEY1),
							Int32GetDatum(KCF_EVENT_LOCK_KEY2));
		PG_RETURN_NULL();
	}
	horizon = kcf_inflight_horizon();
	if (horizon == 0)
		PG_RETURN_NULL();
	PG_RETURN_INT64(horizon);
}

static void
kcf_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			if (n_deferred > 0)
				ereport(ERROR,
						(errcode(ERRCODE_INTERNAL_ERROR),
						 errmsg("kc_flow: %d deferred events were never written", n_deferred),
						 errdetail("The transaction is rolled back rather than commit without them.")));
			break;
		case XACT_EVENT_PRE_PREPARE:
			if (emitted_in_xact)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot prepare a transaction that emitted kc_flow events"),
						 errdetail("Its events would stay out of the log, unseen by kc_flow.health(), until COMMIT PREPARED.")));
			break;
		case XACT_EVENT_COMMIT:
			kcf_inflight_end();
			if (wake_at_commit)
			{
				kcf_count_commit();
				kcf_wake_workers();
			}
			wake_at_commit = emitted_in_xact = false;
			batch_nest_level = 0;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
			kcf_inflight_end();
			wake_at_commit = emitted_in_xact = false;
			deferring = false;
			kcf_emit_deferred_forget();
			batch_nest_level = 0;
			break;
		default:
			break;
	}
}

/*
 * A subtransaction at or above the batch's level aborts (run_pending() under
 * a savepoint or an exception block, the batch failing outside its jobs):
 * the events the batch deferred are rolled back with everything they were
 * about.  A job's own subtransaction is deeper; the dispatcher truncates
 * what it deferred (kcf_emit_deferred_truncate).
 */
static void
kcf_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					 SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB &&
		GetCurrentTransactionNestLevel() <= batch_nest_level)
	{
		deferring = false;
		kcf_emit_deferred_forget();
		batch_nest_level = 0;
	}
}

void
kcf_emit_install_callbacks(void)
{
	RegisterXactCallback(kcf_xact_callback, NULL);
	RegisterSubXactCallback(kcf_subxact_callback, NULL);
}
