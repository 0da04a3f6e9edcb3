/*
 * emit.c
 *      The outbox: appending an event in the current transaction.
 *
 * kcf_emit() is the only writer of new kc_flow.events (the rotation of the
 * log's ring only copies rows forward, log_ring.c).  In one statement it bumps
 * the student's cache version, inserts the event (with the writing
 * transaction's id, the txid column's default) and, when a stage consumes
 * that type (the table of event types, event_types.c), queues it.  A
 * transaction callback wakes the workers right after such a commit: they
 * give the event its log position and announce it (log.c).  Nothing else
 * happens at the application's commit: no NOTIFY, no lock another
 * transaction waits for.
 *
 * On a 0.1.0 schema (the library is upgraded before ALTER EXTENSION), the
 * 0.1.0 behaviour instead: the id is noted for the event horizon
 * (shared_state.c) and NOTIFY kc_flow_events is sent per event.
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
#include "utils/resowner.h"
#include "utils/uuid.h"

/* advisory lock taken instead of the shared horizon (0.1.0) or the writing note (0.2.0) when not preloaded */
#define KCF_EVENT_LOCK_KEY1 KCF_LOCK_KEY1
#define KCF_EVENT_LOCK_KEY2 KCF_LOCK_WRITER

static bool wake_at_commit = false;
static bool emitted_in_xact = false;

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

int64
kcf_emit(const char *event_type, Datum correlation_id, Datum student_id,
		 const char *payload_json)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[6] = {INT8OID, TEXTOID, UUIDOID, UUIDOID, TEXTOID, TEXTOID};
	Datum		values[6];
	char		nulls[6] = "      ";
	const char *consumer = kcf_consumer_for(event_type);
	bool		legacy = !kcf_log_installed();
	int64		id;
	int64		version;
	bool		isnull;

	kcf_plan(&plan,
			 "WITH v AS ("
			 "  INSERT INTO kc_flow.cache_versions AS c (student_id, version) VALUES ($4, 1)"
			 "  ON CONFLICT (student_id) DO UPDATE SET version = c.version + 1, updated_at = now()"
			 "  RETURNING version),"
			 " e AS ("
			 "  INSERT INTO kc_flow.events (id, event_type, correlation_id, student_id, payload, version)"
			 "  SELECT $1, $2, $3, $4, $5::jsonb, v.version FROM v RETURNING version),"
			 " q AS ("
			 "  INSERT INTO kc_flow.event_queue (event_id, consumer)"
			 "  SELECT $1, $6 WHERE $6 IS NOT NULL)"
			 " SELECT version FROM e",
			 6, types);

	id = take_event_id(legacy);
	values[0] = Int64GetDatum(id);
	values[1] = CStringGetTextDatum(event_type);
	values[2] = correlation_id;
	values[3] = student_id;
	values[4] = CStringGetTextDatum(payload_json ? payload_json : "{}");
	values[5] = consumer ? CStringGetTextDatum(consumer) : (Datum) 0;
	if (consumer == NULL)
		nulls[5] = 'n';

	kcf_exec(plan, values, nulls, 1);
	version = kcf_get_int64(0, 1, &isnull);

	if (legacy)
	{
		send_notify(id, event_type, correlation_id, student_id, version);
		if (consumer != NULL)
			wake_at_commit = true;
	}
	else
		noted_as_emitted();
	emitted_in_xact = true;
	return id;
}

/*
 * Appends n events of one type in one statement, as n calls of kcf_emit()
 * would (the same ids, versions and queue rows; a student's events get
 * consecutive versions in the order given), their ids in event_ids when
 * not NULL.  On a 0.1.0 schema it calls kcf_emit() n times.
 */
void
kcf_emit_set(const char *event_type, int n, const Datum *correlation_ids,
			 const Datum *student_ids, char *const *payloads, int64 *event_ids)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[6] = {INT8ARRAYOID, TEXTOID, UUIDARRAYOID, UUIDARRAYOID, TEXTARRAYOID, TEXTOID};
	Datum		values[6];
	char		nulls[6] = "      ";
	const char *consumer = kcf_consumer_for(event_type);
	Datum	   *ids;
	Datum	   *texts;

	if (n == 0)
		return;
	if (!kcf_log_installed())
	{
		for (int i = 0; i < n; i++)
		{
			int64		id = kcf_emit(event_type, correlation_ids[i], student_ids[i], payloads[i]);

			if (event_ids)
				event_ids[i] = id;
		}
		return;
	}
	kcf_plan_generic(&plan,
			 "WITH i AS ("
			 "  SELECT * FROM unnest($1::bigint[], $3::uuid[], $4::uuid[], $5::text[])"
			 "    WITH ORDINALITY AS u(id, correlation_id, student_id, payload, o)),"
			 " v AS ("
			 "  INSERT INTO kc_flow.cache_versions AS c (student_id, version)"
			 "  SELECT student_id, count(*) FROM i GROUP BY student_id"
			 "  ON CONFLICT (student_id) DO UPDATE SET version = c.version + excluded.version, updated_at = now()"
			 "  RETURNING student_id, version),"
			 " e AS ("
			 "  INSERT INTO kc_flow.events (id, event_type, correlation_id, student_id, payload, version)"
			 "  SELECT i.id, $2, i.correlation_id, i.student_id, i.payload::jsonb,"
			 "         v.version - count(*) OVER (PARTITION BY i.student_id)"
			 "                   + row_number() OVER (PARTITION BY i.student_id ORDER BY i.o)"
			 "    FROM i JOIN v ON v.student_id = i.student_id),"
			 " q AS ("
			 "  INSERT INTO kc_flow.event_queue (event_id, consumer)"
			 "  SELECT i.id, $6 FROM i WHERE $6 IS NOT NULL)"
			 " SELECT 1",
			 6, types);
	ids = palloc(sizeof(Datum) * n);
	texts = palloc(sizeof(Datum) * n);
	for (int i = 0; i < n; i++)
	{
		int64		id = take_event_id(false);

		ids[i] = Int64GetDatum(id);
		if (event_ids)
			event_ids[i] = id;
		texts[i] = CStringGetTextDatum(payloads[i] ? payloads[i] : "{}");
	}
	values[0] = PointerGetDatum(construct_array(ids, n, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[1] = CStringGetTextDatum(event_type);
	values[2] = PointerGetDatum(construct_array((Datum *) correlation_ids, n, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
	values[3] = PointerGetDatum(construct_array((Datum *) student_ids, n, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
	values[4] = PointerGetDatum(construct_array(texts, n, TEXTOID, -1, false, TYPALIGN_INT));
	values[5] = consumer ? CStringGetTextDatum(consumer) : (Datum) 0;
	if (consumer == NULL)
		nulls[5] = 'n';
	kcf_exec(plan, values, nulls, 1);
	noted_as_emitted();
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
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
			kcf_inflight_end();
			wake_at_commit = emitted_in_xact = false;
			break;
		default:
			break;
	}
}

void
kcf_emit_install_callbacks(void)
{
	RegisterXactCallback(kcf_xact_callback, NULL);
}
