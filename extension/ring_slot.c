/*
 * ring_slot.c
 *      The current slot of each ring of three tables: kc_flow.log_slot(),
 *      kc_flow.event_queue_slot() and kc_flow.version_slot(), the defaults of
 *      the rings' slot columns.
 *
 * A ring's rows go to the table of its generation sequence's last_value
 * modulo 3 (ring.c).  These defaults are evaluated for every row inserted
 * into the event log's tables (events, event_log, processed_events,
 * log_rounds) and the queue's (event_queue): a dozen rows per purchase.  As
 * PL/pgSQL functions running `SELECT last_value % 3` they cost about 2.3 µs a
 * row (an executor run of the statement on the sequence); here the sequence's
 * page is read as that SELECT reads it (the one tuple of a sequence is always
 * visible, so no snapshot is involved), with the SELECT's lock and privilege
 * check, in about 0.3 µs (docs/extension.md, "Payments: a status change
 * inserts a row").
 */
#include "kc_flow.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "catalog/namespace.h"
#include "commands/sequence.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "utils/acl.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

PG_FUNCTION_INFO_V1(kcf_log_slot);
PG_FUNCTION_INFO_V1(kcf_event_queue_slot);
PG_FUNCTION_INFO_V1(kcf_version_slot);

static int16 current_slot(const char *sequence);

/*
 * The slot of the ring whose generation is kc_flow.<sequence>: its
 * last_value modulo 3, whether nextval was ever called or not, as `SELECT
 * last_value FROM kc_flow.<sequence>` reads it, with the same privilege.
 */
static int16
current_slot(const char *sequence)
{
	Oid			seq_oid = get_relname_relid(sequence, get_namespace_oid("kc_flow", false));
	Relation	seq;
	Buffer		buf;
	Page		page;
	HeapTupleData tuple;
	int64		generation;

	if (!OidIsValid(seq_oid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("sequence kc_flow.%s does not exist", sequence),
				 errdetail("It is the generation of one of kc_flow's rings of tables."),
				 errhint("Reinstall the extension: DROP EXTENSION kc_flow; CREATE EXTENSION kc_flow CASCADE.")));
	if (pg_class_aclcheck(seq_oid, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for sequence %s", sequence),
				 errdetail("The slot of kc_flow's ring is read from the sequence kc_flow.%s.", sequence),
				 errhint("Write kc_flow's tables through its functions, or as their owner.")));
	seq = relation_open(seq_oid, AccessShareLock);
	buf = ReadBuffer(seq, 0);
	LockBuffer(buf, BUFFER_LOCK_SHARE);
	page = BufferGetPage(buf);
	tuple.t_data = (HeapTupleHeader) PageGetItem(page, PageGetItemId(page, FirstOffsetNumber));
	generation = ((Form_pg_sequence_data) GETSTRUCT(&tuple))->last_value;
	UnlockReleaseBuffer(buf);
	/* the lock is kept until the transaction ends, as the SELECT's is */
	relation_close(seq, NoLock);
	return (int16) (generation % KCF_RING_SLOTS);
}

/* kc_flow.log_slot(): the event log's current slot (log_generation modulo 3) */
Datum
kcf_log_slot(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT16(current_slot("log_generation"));
}

/* kc_flow.event_queue_slot(): the event queue's current slot (event_queue_generation modulo 3) */
Datum
kcf_event_queue_slot(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT16(current_slot("event_queue_generation"));
}

/* kc_flow.version_slot(): the cache versions' current slot (version_generation modulo 3) */
Datum
kcf_version_slot(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT16(current_slot("version_generation"));
}
