/*
 * trainer_load.c
 *      A trainer's load (its approved and active allocations) without
 *      updating the trainer's row.
 *
 * The load is the count of the trainer's live allocations: rows that come and
 * go with the data, so a held xmin horizon leaves no dead version of a table
 * of fixed size behind (docs/extension.md, "Allocation").  Counting them for
 * every trainer of a course on every search would be slow, so when kc_flow is
 * preloaded the search ranks by a hint in shared memory: trainer -> load of
 * the committed state, filled lazily from the exact count and moved by the
 * deltas a row trigger on trainer_allocations collects per (sub)transaction
 * and applies once the transaction has committed (discarded on a (sub)abort).
 * The capacity is never decided by the hint: the allocation stage counts the
 * locked candidate's allocations exactly (kcf_trainer_load_exact) and that
 * count re-seeds the hint.  Without preload there is no hint and the search
 * counts (stage_allocation.c).
 *
 * A seed must not overwrite a delta it did not see.  Each entry counts the
 * changes applied to it and the transactions between their pre-commit and
 * their end (whose rows may or may not be in the seeder's snapshot); a
 * seeder notes the change count before its count's snapshot is taken and
 * writes only if it is unchanged and no such transaction is in flight.
 * Entries are never removed; when the table is full the trainers without one
 * are counted exactly.
 *
 * The search also keeps each course's roster (its active trainers, their
 * capacity and zone) between purchases (stage_allocation.c); it reads it
 * again when the rosters' version has moved: a counter in shared memory that
 * a statement trigger on trainers and trainer_courses moves when its
 * transaction commits, and a count of this backend's own changes (moved at
 * once, and again when a subtransaction that made one rolls back).
 */
#include "kc_flow.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/uuid.h"

PG_FUNCTION_INFO_V1(kcf_trainer_load_sql);
PG_FUNCTION_INFO_V1(kcf_trainer_loads_sql);
PG_FUNCTION_INFO_V1(kcf_note_trainer_load);
PG_FUNCTION_INFO_V1(kcf_forget_trainer_loads);
PG_FUNCTION_INFO_V1(kcf_note_roster_change);

/* trainers with a hint, all databases together */
#define KCF_LOAD_HINTS_MAX 16384

/* a trainer of one installation: its database and allocations table, then its id */
typedef struct HintKey
{
	Oid			dbid;
	Oid			relid;			/* trainer_allocations: a new one after DROP EXTENSION */
	pg_uuid_t	trainer;
} HintKey;

typedef struct HintEntry
{
	HintKey		key;
	bool		valid;			/* load holds the committed load */
	int32		load;
	uint32		changes;		/* deltas applied or announced, ever */
	int32		inflight;		/* transactions past pre-commit that changed it */
} HintEntry;

/* a change of this transaction: delta on a trainer at subtransaction level */
typedef struct LocalChange
{
	HintKey		key;
	int32		delta;
	int			level;
} LocalChange;

typedef struct LocalDelta
{
	HintKey		key;
	int32		delta;			/* the sum of the open transaction's changes */
} LocalDelta;

static LWLock *hint_lock = NULL;
static HTAB *hints = NULL;

static HTAB *local_deltas = NULL;	/* this transaction's deltas by trainer */
static LocalChange *changes = NULL;
static int	nchanges = 0;
static int	changes_cap = 0;
static int	forget_level = 0;	/* >0: a TRUNCATE at that level, forget all at commit */
static bool announced = false;	/* pre-commit marked our trainers in flight */

static pg_atomic_uint64 *roster_commits = NULL;	/* committed changes of the rosters, all databases */
static uint64 roster_own = 0;	/* this backend's own changes and their rollbacks */
static bool roster_changed = false; /* this transaction changed a roster */

/* ---- shared memory ---- */

static Size
shmem_size(void)
{
	return add_size(hash_estimate_size(KCF_LOAD_HINTS_MAX, sizeof(HintEntry)), sizeof(pg_atomic_uint64));
}

void
kcf_trainer_load_shmem_request(void)
{
	RequestAddinShmemSpace(shmem_size());
	RequestNamedLWLockTranche("kc_flow_trainer_load", 1);
}

/* Attaches the hint table; the caller holds AddinShmemInitLock. */
void
kcf_trainer_load_shmem_startup(void)
{
	HASHCTL		info;
	bool		found;

	roster_commits = ShmemInitStruct("kc_flow trainer rosters", sizeof(pg_atomic_uint64), &found);
	if (!found)
		pg_atomic_init_u64(roster_commits, 0);
	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(HintKey);
	info.entrysize = sizeof(HintEntry);
	hint_lock = &(GetNamedLWLockTranche("kc_flow_trainer_load"))->lock;
	hints = ShmemInitHash("kc_flow trainer loads", KCF_LOAD_HINTS_MAX, KCF_LOAD_HINTS_MAX,
						  &info, HASH_ELEM | HASH_BLOBS);
}

/* Whether the search can rank by the hint: preloaded, shared memory attached. */
bool
kcf_trainer_load_hinted(void)
{
	return hints != NULL;
}

/* The allocations table of this database's kc_flow, InvalidOid if none. */
Oid
kcf_trainer_load_relid(void)
{
	Oid			nsp = get_namespace_oid("kc_flow", true);

	return OidIsValid(nsp) ? get_relname_relid("trainer_allocations", nsp) : InvalidOid;
}

static HintKey
hint_key(Oid relid, Datum trainer_id)
{
	HintKey		key;

	memset(&key, 0, sizeof(key));
	key.dbid = MyDatabaseId;
	key.relid = relid;
	key.trainer = *DatumGetUUIDP(trainer_id);
	return key;
}

/* The entry of key, made (not valid) if missing; NULL when the table is full. Lock held exclusively. */
static HintEntry *
hint_enter(const HintKey *key)
{
	HintEntry  *e;
	bool		found;

	e = hash_search(hints, key, HASH_FIND, NULL);
	if (e != NULL || hash_get_num_entries(hints) >= KCF_LOAD_HINTS_MAX)
		return e;
	e = hash_search(hints, key, HASH_ENTER_NULL, &found);
	if (e != NULL && !found)
	{
		e->valid = false;
		e->load = 0;
		e->changes = 0;
		e->inflight = 0;
	}
	return e;
}

/* ---- this transaction's changes ---- */

static int32
local_delta(const HintKey *key)
{
	LocalDelta *d;

	if (local_deltas == NULL || nchanges == 0)
		return 0;
	d = hash_search(local_deltas, key, HASH_FIND, NULL);
	return d ? d->delta : 0;
}

static void
add_local(const HintKey *key, int32 delta)
{
	LocalDelta *d;
	bool		found;

	if (local_deltas == NULL)
	{
		HASHCTL		info;

		memset(&info, 0, sizeof(info));
		info.keysize = sizeof(HintKey);
		info.entrysize = sizeof(LocalDelta);
		info.hcxt = TopMemoryContext;
		local_deltas = hash_create("kc_flow trainer load deltas", 64, &info,
								   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	d = hash_search(local_deltas, key, HASH_ENTER, &found);
	d->delta = (found ? d->delta : 0) + delta;
}

/* Notes that this (sub)transaction moved a trainer's load by delta. */
static void
note_change(const HintKey *key, int32 delta)
{
	if (nchanges == changes_cap)
	{
		changes_cap = Max(64, changes_cap * 2);
		changes = changes == NULL
			? MemoryContextAlloc(TopMemoryContext, sizeof(LocalChange) * changes_cap)
			: repalloc(changes, sizeof(LocalChange) * changes_cap);
	}
	changes[nchanges].key = *key;
	changes[nchanges].delta = delta;
	changes[nchanges].level = GetCurrentTransactionNestLevel();
	nchanges++;
	add_local(key, delta);
}

static void
forget_local(void)
{
	HASH_SEQ_STATUS seq;
	LocalDelta *d;

	if (local_deltas != NULL && hash_get_num_entries(local_deltas) > 0)
	{
		hash_seq_init(&seq, local_deltas);
		while ((d = hash_seq_search(&seq)) != NULL)
			hash_search(local_deltas, &d->key, HASH_REMOVE, NULL);
	}
	nchanges = 0;
	forget_level = 0;
	announced = false;
}

/* ---- the transaction's end ---- */

/* Marks (start) or unmarks our trainers in flight; at commit applies the deltas. */
static void
apply_local(bool start, bool commit)
{
	HASH_SEQ_STATUS seq;
	LocalDelta *d;

	LWLockAcquire(hint_lock, LW_EXCLUSIVE);
	hash_seq_init(&seq, local_deltas);
	while ((d = hash_seq_search(&seq)) != NULL)
	{
		HintEntry  *e;

		if (d->delta == 0)
			continue;
		e = start ? hint_enter(&d->key) : hash_search(hints, &d->key, HASH_FIND, NULL);
		if (e == NULL)
			continue;			/* the table was full at pre-commit: counted exactly */
		e->changes++;
		if (start)
		{
			e->inflight++;
			continue;
		}
		e->inflight--;
		if (commit && e->valid)
		{
			e->load += d->delta;
			if (e->load < 0)
				e->valid = false;	/* cannot be: count again */
		}
	}
	LWLockRelease(hint_lock);
}

/* A committed TRUNCATE of the allocations: every hint of this database is counted again. */
static void
forget_database(void)
{
	HASH_SEQ_STATUS seq;
	HintEntry  *e;

	LWLockAcquire(hint_lock, LW_EXCLUSIVE);
	hash_seq_init(&seq, hints);
	while ((e = hash_seq_search(&seq)) != NULL)
		if (e->key.dbid == MyDatabaseId)
		{
			e->valid = false;
			e->changes++;
		}
	LWLockRelease(hint_lock);
}

/* The rosters' version at the transaction's end: moved for all by a commit that changed one. */
static void
roster_xact_end(XactEvent event)
{
	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			if (roster_changed && roster_commits != NULL)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot prepare a transaction that changed trainers or their courses"),
						 errdetail("kc_flow's workers keep each course's trainers between allocations and "
								   "would not see a change made visible by COMMIT PREPARED."),
						 errhint("Commit the change to trainers or trainer_courses in a transaction of its own.")));
			break;
		case XACT_EVENT_COMMIT:
			if (roster_changed && roster_commits != NULL)
				pg_atomic_fetch_add_u64(roster_commits, 1);
			roster_changed = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
			roster_changed = false;
			break;
		default:
			break;
	}
}

static void
xact_callback(XactEvent event, void *arg)
{
	roster_xact_end(event);
	if (hints == NULL)
		return;
	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			if (nchanges > 0 || forget_level > 0)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot prepare a transaction that changed a trainer's load"),
						 errdetail("kc_flow ranks trainers by a load kept in shared memory, which would miss "
								   "the allocations of a prepared transaction until COMMIT PREPARED.")));
			break;
		case XACT_EVENT_PRE_COMMIT:
			if (nchanges > 0)
			{
				apply_local(true, false);
				announced = true;
			}
			break;
		case XACT_EVENT_COMMIT:
			if (announced)
				apply_local(false, true);
			if (forget_level > 0)
				forget_database();
			forget_local();
			break;
		case XACT_EVENT_ABORT:
			if (announced)
				apply_local(false, false);
			forget_local();
			break;
		case XACT_EVENT_PREPARE:
			forget_local();
			break;
		default:
			break;
	}
}

static void
subxact_callback(SubXactEvent event, SubTransactionId mySubid, SubTransactionId parentSubid, void *arg)
{
	int			level = GetCurrentTransactionNestLevel();

	if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		for (int i = nchanges - 1; i >= 0 && changes[i].level >= level; i--)
			changes[i].level = level - 1;
		if (forget_level >= level)
			forget_level = level - 1;
	}
	else if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		if (roster_changed)
			roster_own++;		/* the rolled back change may be in a roster read since */
		while (nchanges > 0 && changes[nchanges - 1].level >= level)
		{
			nchanges--;
			add_local(&changes[nchanges].key, -changes[nchanges].delta);
		}
		if (forget_level >= level)
			forget_level = 0;
	}
}

void
kcf_trainer_load_install_callbacks(void)
{
	RegisterXactCallback(xact_callback, NULL);
	RegisterSubXactCallback(subxact_callback, NULL);
}

/* ---- counting ---- */

/* The trainer's approved and active allocations, counted with a fresh snapshot (SPI connected). */
static int32
count_exact(Datum trainer_id)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {UUIDOID};
	Datum		values[1] = {trainer_id};
	bool		isnull;

	kcf_plan(&plan,
			 "SELECT count(*)::int FROM kc_flow.trainer_allocations"
			 " WHERE trainer_id = $1 AND status IN ('approved', 'active')",
			 1, types);
	kcf_exec(plan, values, NULL, 1);
	return DatumGetInt32(kcf_get_datum(0, 1, &isnull));
}

/*
 * The exact load of trainer_id as this transaction sees it (SPI connected);
 * with seed, the hint of allocations table relid is set from it.  The
 * allocation stage calls it for the trainer it has locked.
 */
int32
kcf_trainer_load_exact(Oid relid, Datum trainer_id, bool seed)
{
	HintKey		key = hint_key(relid, trainer_id);
	HintEntry  *e = NULL;
	uint32		seen = 0;
	int32		load;

	/* a seed needs a snapshot taken after this, not the transaction's */
	if (seed && hints != NULL && !IsolationUsesXactSnapshot())
	{
		LWLockAcquire(hint_lock, LW_EXCLUSIVE);
		e = hint_enter(&key);
		if (e != NULL)
			seen = e->changes;
		LWLockRelease(hint_lock);
	}
	load = count_exact(trainer_id);
	if (e != NULL)
	{
		LWLockAcquire(hint_lock, LW_EXCLUSIVE);
		if (e->changes == seen && e->inflight == 0)
		{
			e->load = load - local_delta(&key);
			e->valid = e->load >= 0;
		}
		LWLockRelease(hint_lock);
	}
	return load;
}

/*
 * The loads of the trainers ids[0..n-1] as this transaction sees them, into
 * loads[]: from the hint (the latest committed load) and this transaction's
 * own changes, one lock for all; the trainers without a hint are counted,
 * which seeds their hints.  The allocation stage ranks by it.
 */
void
kcf_trainer_loads(Oid relid, Datum *ids, int n, int32 *loads)
{
	bool	   *missing = palloc(sizeof(bool) * n);
	int			nmissing = 0;

	if (hints != NULL)
		LWLockAcquire(hint_lock, LW_SHARED);
	for (int i = 0; i < n; i++)
	{
		HintKey		key = hint_key(relid, ids[i]);
		HintEntry  *e = hints ? hash_search(hints, &key, HASH_FIND, NULL) : NULL;

		missing[i] = e == NULL || !e->valid;
		if (missing[i])
			nmissing++;
		else
			loads[i] = e->load + local_delta(&key);
	}
	if (hints != NULL)
		LWLockRelease(hint_lock);
	if (nmissing == 0)
		return;
	SPI_connect();
	for (int i = 0; i < n; i++)
		if (missing[i])
			loads[i] = kcf_trainer_load_exact(relid, ids[i], true);
	SPI_finish();
}

/* The allocations table's oid, looked up once per statement (fn_extra). */
static Oid
statement_relid(FunctionCallInfo fcinfo)
{
	Oid		   *relid = fcinfo->flinfo->fn_extra;

	if (relid == NULL)
	{
		relid = MemoryContextAlloc(fcinfo->flinfo->fn_mcxt, sizeof(Oid));
		*relid = kcf_trainer_load_relid();
		fcinfo->flinfo->fn_extra = relid;
	}
	return *relid;
}

/* kc_flow.trainer_load(trainer): its approved and active allocations. */
Datum
kcf_trainer_load_sql(PG_FUNCTION_ARGS)
{
	Datum		id = PG_GETARG_DATUM(0);
	int32		load;

	kcf_trainer_loads(statement_relid(fcinfo), &id, 1, &load);
	PG_RETURN_INT32(load);
}

/* kc_flow.trainer_loads(trainers): the load of each, in the same order. */
Datum
kcf_trainer_loads_sql(PG_FUNCTION_ARGS)
{
	ArrayType  *ids = PG_GETARG_ARRAYTYPE_P(0);
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int32	   *loads;
	Datum	   *out;

	deconstruct_array(ids, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR, &elems, &nulls, &n);
	loads = palloc0(sizeof(int32) * Max(n, 1));
	out = palloc(sizeof(Datum) * Max(n, 1));
	for (int i = 0; i < n; i++)
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("a trainer id in the array is null"),
					 errhint("Pass the ids of existing trainers.")));
	kcf_trainer_loads(statement_relid(fcinfo), elems, n, loads);
	for (int i = 0; i < n; i++)
		out[i] = Int32GetDatum(loads[i]);
	PG_RETURN_ARRAYTYPE_P(construct_md_array(out, NULL, ARR_NDIM(ids), ARR_DIMS(ids), ARR_LBOUND(ids),
											 INT4OID, sizeof(int32), true, TYPALIGN_INT));
}

/* ---- the triggers ---- */

/* Whether the allocation row holds a place: approved or active, with a trainer. */
static bool
holds_place(HeapTuple tuple, TupleDesc desc, Datum *trainer_id)
{
	bool		isnull;
	Datum		status;
	char	   *s;

	*trainer_id = heap_getattr(tuple, SPI_fnumber(desc, "trainer_id"), desc, &isnull);
	if (isnull)
		return false;
	status = heap_getattr(tuple, SPI_fnumber(desc, "status"), desc, &isnull);
	if (isnull)
		return false;
	s = TextDatumGetCString(status);
	return strcmp(s, "approved") == 0 || strcmp(s, "active") == 0;
}

/*
 * Row trigger of trainer_allocations (after insert, update of status or
 * trainer, delete): notes the load each change moves, applied to the hint at
 * commit.  Without preload it has nothing to do.
 */
Datum
kcf_note_trainer_load(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	Datum		old_trainer = (Datum) 0;
	Datum		new_trainer = (Datum) 0;
	bool		was_live = false;
	bool		is_live = false;
	bool		moved;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("kc_flow.note_trainer_load() must be called as a row trigger")));
	if (hints == NULL)
		return PointerGetDatum(NULL);
	desc = trigdata->tg_relation->rd_att;
	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		is_live = holds_place(trigdata->tg_trigtuple, desc, &new_trainer);
	else if (TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
		was_live = holds_place(trigdata->tg_trigtuple, desc, &old_trainer);
	else
	{
		was_live = holds_place(trigdata->tg_trigtuple, desc, &old_trainer);
		is_live = holds_place(trigdata->tg_newtuple, desc, &new_trainer);
	}
	moved = was_live && is_live &&
		memcmp(DatumGetUUIDP(old_trainer), DatumGetUUIDP(new_trainer), sizeof(pg_uuid_t)) != 0;
	if (was_live && (!is_live || moved))
	{
		HintKey		key = hint_key(RelationGetRelid(trigdata->tg_relation), old_trainer);

		note_change(&key, -1);
	}
	if (is_live && (!was_live || moved))
	{
		HintKey		key = hint_key(RelationGetRelid(trigdata->tg_relation), new_trainer);

		note_change(&key, 1);
	}
	return PointerGetDatum(NULL);
}

/* Statement trigger after TRUNCATE of trainer_allocations: the hints are counted again after commit. */
Datum
kcf_forget_trainer_loads(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("kc_flow.forget_trainer_loads() must be called as a trigger")));
	if (hints != NULL && forget_level == 0)
		forget_level = GetCurrentTransactionNestLevel();
	return PointerGetDatum(NULL);
}

/*
 * Statement trigger after any change of trainers or trainer_courses: the
 * rosters the allocation search keeps are read again, by this backend at
 * once and by all once the transaction commits.
 */
Datum
kcf_note_roster_change(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("kc_flow.note_roster_change() must be called as a trigger")));
	roster_changed = true;
	roster_own++;
	return PointerGetDatum(NULL);
}

/*
 * The rosters' version: changes committed by any backend (read before the
 * roster it validates), and this backend's own.  Without preload, only the
 * latter.
 */
void
kcf_roster_version(uint64 *committed, uint64 *own)
{
	*committed = roster_commits != NULL ? pg_atomic_read_u64(roster_commits) : 0;
	*own = roster_own;
}
