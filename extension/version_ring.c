/*
 * version_ring.c
 *      The students' cache versions as insert-only rows in a ring of three
 *      tables, emptied by TRUNCATE (issue 9).
 *
 * A bump of a student's version (emit.c) inserts a row (student_id, version,
 * at) into kc_flow.student_versions, partitioned by slot into
 * student_versions_0, _1 and _2 (the current slot: kc_flow.version_slot(),
 * the generation modulo 3); the student's version is the largest over the
 * three (kc_flow.student_version(), one backward probe of each table's
 * primary key).  Nothing is updated, so a held xmin horizon leaves no dead
 * version behind; 0.1.0 updated one row per student (cache_versions, now a
 * view), a dead version per bump.
 *
 * Bumps of one student are serialized by a transaction-level advisory lock
 * of kc_flow's version lock space (KCF_LOCK_VERSIONS, the student's
 * uuid_hash), taken before the statement that reads the largest version and
 * inserts the next one, together with the ring's three tables (so that its
 * snapshot is taken after both: it sees the last bump and the last rotation).
 * A set of students is locked in the order of their keys, so that two
 * batches never wait for each other in a cycle.  The current slot is read
 * after those locks, which no rotation can pass: the bump's statement (emit.c)
 * writes into that table itself, with neither the partitioned table's
 * routing nor its slot default, a PL/pgSQL call per row.
 *
 * A student's rows in a newer generation's table are larger than its rows in
 * an older one's: a bump writes the largest plus one into the current table,
 * and a rotation carries a row forward only when no newer table holds one as
 * large.  So the largest version is the largest of the newest table that
 * holds any row of the student: the bump probes the current table, then the
 * previous one, then the oldest, and stops at the first that answers.
 *
 * Rotation (ring.c): once the current slot holds at least
 * kc_flow.version_rotation_rows rows and twice as many as the rotation that
 * made it current carried into it, each student whose largest version is in
 * the oldest slot only is carried into the current slot, and the oldest is
 * TRUNCATEd and becomes current.  A generation then holds at least as many
 * bumps as carried rows: carrying costs at most one row per bump.  Every
 * reader of the versions locks the three tables until its transaction ends,
 * so the rotation waits for (or, after kc_flow.rotation_lock_timeout, gives
 * up on) every transaction that has read them.  A snapshot taken before a
 * rotation that reads the versions only after it sees the oldest slot empty
 * and the carried rows not yet written; kc_flow.student_version() notices
 * (the rotation's row in kc_flow.version_rotations is not in its snapshot,
 * while the generation sequence, read without one, has moved) and takes the
 * student's version from the events of that snapshot too
 * (docs/extension.md, "Cache versions").
 */
#include "kc_flow.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "commands/sequence.h"
#include "lib/stringinfo.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/lsyscache.h"
#include "utils/uuid.h"

PG_FUNCTION_INFO_V1(kcf_rotate_versions_sql);

static bool versions_due(int64 generation);
static bool versions_carry(int64 generation, int current, int oldest);

static const char *const version_tables[] = {"kc_flow.student_versions", NULL};

static const KcfRing version_ring = {
	.name = "cache versions",
	.generation = "kc_flow.version_generation",
	.tables = version_tables,
	.rotator_lock = KCF_LOCK_VERSION_ROTATOR,
	.then_lock = 0,
	.due = versions_due,
	.carry = versions_carry,
};

/* Whether the versions are the ring (0.1.0 has the table cache_versions). */
bool
kcf_version_ring_installed(void)
{
	return kcf_ring_installed(&version_ring);
}

/* qsort comparator of advisory lock keys */
static int
key_cmp(const void *a, const void *b)
{
	int32		x = *(const int32 *) a;
	int32		y = *(const int32 *) b;

	return x < y ? -1 : x > y ? 1 : 0;
}

/*
 * The ring's generation, read from the sequence's page without a snapshot,
 * as `SELECT last_value` reads it (whether nextval was called or not).
 */
static int64
read_generation(Oid nsp)
{
	Relation	seq = relation_open(get_relname_relid("version_generation", nsp), AccessShareLock);
	Buffer		buf = ReadBuffer(seq, 0);
	Page		page;
	HeapTupleData tuple;
	int64		generation;

	LockBuffer(buf, BUFFER_LOCK_SHARE);
	page = BufferGetPage(buf);
	tuple.t_data = (HeapTupleHeader) PageGetItem(page, PageGetItemId(page, FirstOffsetNumber));
	generation = ((Form_pg_sequence_data) GETSTRUCT(&tuple))->last_value;
	UnlockReleaseBuffer(buf);
	relation_close(seq, AccessShareLock);
	return generation;
}

/*
 * Takes what a bump of the n students' versions needs before its statement
 * (see the header): each student's advisory lock, in key order, once per
 * key, and the ring's three tables; returns the current slot, read after
 * them.  Students whose keys collide are serialized together, which costs a
 * wait, never a wrong version.
 */
int
kcf_version_lock(int n, const Datum *student_ids)
{
	int32	   *keys = palloc(sizeof(int32) * n);
	Oid			nsp = get_namespace_oid("kc_flow", false);

	for (int i = 0; i < n; i++)
		keys[i] = DatumGetInt32(DirectFunctionCall1(uuid_hash, student_ids[i]));
	qsort(keys, n, sizeof(int32), key_cmp);
	for (int i = 0; i < n; i++)
	{
		if (i > 0 && keys[i] == keys[i - 1])
			continue;
		DirectFunctionCall2(pg_advisory_xact_lock_int4,
							Int32GetDatum(KCF_LOCK_VERSIONS), Int32GetDatum(keys[i]));
	}
	pfree(keys);

	/* the tables in slot order, as a statement over the partitioned table locks them */
	for (int slot = 0; slot < KCF_RING_SLOTS; slot++)
	{
		char		name[NAMEDATALEN];

		snprintf(name, sizeof(name), "student_versions_%d", slot);
		LockRelationOid(get_relname_relid(name, nsp), RowExclusiveLock);
	}
	return (int) (read_generation(nsp) % KCF_RING_SLOTS);
}

/*
 * The part of a bump statement that gives the version: with student the
 * student's column or parameter and slot the current one (kcf_version_lock()),
 * the largest version of the newest table holding a row of the student (see
 * the header), 0 when none does.  Each subquery is one backward probe of a
 * table's primary key; coalesce() runs the next only when one finds nothing.
 */
char *
kcf_version_largest_sql(const char *student, int slot)
{
	StringInfoData sql;

	initStringInfo(&sql);
	appendStringInfoString(&sql, "coalesce(");
	/* current, previous, oldest */
	for (int age = 0; age < KCF_RING_SLOTS; age++)
		appendStringInfo(&sql,
						 "(SELECT max(x.version) FROM kc_flow.student_versions_%d x WHERE x.student_id = %s), ",
						 (slot + KCF_RING_SLOTS - age) % KCF_RING_SLOTS, student);
	appendStringInfoString(&sql, "0)");
	return sql.data;
}

/*
 * Rotates the ring when it is due (SPI connected, READ COMMITTED); see
 * kcf_ring_rotate().
 */
KcfRotation
kcf_rotate_versions(void)
{
	if (!kcf_version_ring_installed())
		return KCF_ROTATE_NOT_DUE;
	return kcf_ring_rotate(&version_ring);
}

/*
 * Due when the current slot holds at least kc_flow.version_rotation_rows
 * rows (at least one) and twice what its rotation carried into it.  Counted
 * without a lock, and only as far as that bound; the file's size tells
 * first whether it can hold that many rows at all.
 */
static bool
versions_due(int64 generation)
{
	int			current = (int) (generation % KCF_RING_SLOTS);
	bool		isnull;

	kcf_ring_exec(psprintf("WITH b AS (SELECT greatest(%d, 1,"
						   "  2 * (SELECT r.carried FROM kc_flow.version_rotations r"
						   "        ORDER BY r.generation DESC LIMIT 1)) AS rows)"
						   " SELECT CASE WHEN pg_relation_size('kc_flow.student_versions_%d') < b.rows * 40 THEN false"
						   "        ELSE (SELECT count(*) FROM (SELECT 1 FROM kc_flow.student_versions_%d"
						   "                                     LIMIT b.rows) x) >= b.rows END"
						   "   FROM b",
						   kcf_version_rotation_rows, current, current));
	return kcf_get_bool(0, 1, &isnull);
}

/*
 * Carries into the current slot each student's largest version of the
 * oldest slot that no other slot has reached, and records the rotation
 * with the number carried (the next one is due at twice that).
 */
static bool
versions_carry(int64 generation, int current, int oldest)
{
	kcf_ring_exec(psprintf("INSERT INTO kc_flow.student_versions (student_id, version, at, slot)"
						   " SELECT DISTINCT ON (o.student_id) o.student_id, o.version, o.at, %d"
						   "   FROM kc_flow.student_versions_%d o"
						   "  WHERE NOT EXISTS (SELECT 1 FROM kc_flow.student_versions x"
						   "                     WHERE x.student_id = o.student_id AND x.slot <> %d"
						   "                       AND x.version >= o.version)"
						   "  ORDER BY o.student_id, o.version DESC",
						   current, oldest, oldest));
	kcf_ring_exec(psprintf("INSERT INTO kc_flow.version_rotations (generation, carried)"
						   " VALUES (" INT64_FORMAT ", " UINT64_FORMAT ")",
						   generation + 1, SPI_processed));
	return true;
}

/* kc_flow.rotate_versions(): one rotation check by hand; 'rotated', 'not due' or 'busy'. */
Datum
kcf_rotate_versions_sql(PG_FUNCTION_ARGS)
{
	return kcf_ring_rotate_by_hand(&version_ring, kcf_rotate_versions, "kc_flow.rotate_versions()");
}
