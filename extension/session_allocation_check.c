/*
 * session_allocation_check.c
 *      The foreign key sessions_of_allocation's insert check, once per
 *      statement: the AFTER INSERT statement trigger of tutoring_sessions.
 *
 * PostgreSQL checks a foreign key on insert with one query per inserted row
 * (ri_triggers.c); the sessions stage inserts 10-30 rows per purchase, from
 * a few allocations per batch.  12_sessions_of_allocation.sql disables that
 * per-row trigger (the constraint and its referenced side stay PostgreSQL's)
 * and installs this one, which makes the lookup ri_triggers.c makes for
 * each row once per distinct key of the statement, in one statement: the
 * allocations locked FOR KEY SHARE from ONLY trainer_allocations, as the
 * table's owner with row security not forced, in the snapshot PostgreSQL's
 * check uses.  A key not found fails as PostgreSQL's check fails
 * (ri_ReportViolation): SQLSTATE 23503, the same message, detail and error
 * fields, for the first inserted row with a missing key, the key's values
 * only for a caller who may read them.
 */
#include "kc_flow.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/syscache.h"
#include "utils/uuid.h"

PG_FUNCTION_INFO_V1(kcf_check_sessions_of_allocation);

#define CONSTRAINT_NAME "sessions_of_allocation"
#define KEY_COLUMNS 4

/* the key's columns in tutoring_sessions, as the constraint lists them */
static const char *const key_names[KEY_COLUMNS] = {"allocation_id", "student_id", "course_id", "trainer_id"};

typedef struct SessionKey
{
	pg_uuid_t	cols[KEY_COLUMNS];
} SessionKey;

static int	distinct_keys(TriggerData *td, const AttrNumber *attnums, SessionKey **keys);
static int	count_held(SessionKey *keys, int n, bool *held, Oid owner);
static void report_missing(Relation rel, const AttrNumber *attnums, const SessionKey *key);

Datum
kcf_check_sessions_of_allocation(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	AttrNumber	attnums[KEY_COLUMNS];
	SessionKey *keys;
	bool	   *held;
	Oid			pk_rel;
	HeapTuple	pk_class;
	Oid			owner;
	int			n;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BY_INSERT(td->tg_event) ||
		!TRIGGER_FIRED_FOR_STATEMENT(td->tg_event) || td->tg_newtable == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("kc_flow.check_sessions_of_allocation() must be called as an AFTER INSERT statement trigger with a NEW TABLE"),
				 errhint("It is tutoring_sessions' trigger sessions_have_their_allocation; do not call it otherwise.")));
	for (int c = 0; c < KEY_COLUMNS; c++)
	{
		attnums[c] = SPI_fnumber(RelationGetDescr(td->tg_relation), key_names[c]);
		if (attnums[c] <= 0)
			elog(ERROR, "tutoring_sessions has no column %s", key_names[c]);
	}
	n = distinct_keys(td, attnums, &keys);
	if (n == 0)
		return PointerGetDatum(NULL);

	pk_rel = get_relname_relid("trainer_allocations", RelationGetNamespace(td->tg_relation));
	pk_class = SearchSysCache1(RELOID, ObjectIdGetDatum(pk_rel));
	if (!HeapTupleIsValid(pk_class))
		elog(ERROR, "kc_flow.trainer_allocations is missing");
	owner = ((Form_pg_class) GETSTRUCT(pk_class))->relowner;
	ReleaseSysCache(pk_class);

	held = palloc0(sizeof(bool) * n);
	if (count_held(keys, n, held, owner) < n)
		for (int i = 0; i < n; i++)
			if (!held[i])
				report_missing(td->tg_relation, attnums, &keys[i]);
	return PointerGetDatum(NULL);
}

/*
 * The statement's distinct keys, in the order their first row was inserted,
 * into *keys; returns how many.
 */
static int
distinct_keys(TriggerData *td, const AttrNumber *attnums, SessionKey **keys)
{
	HASHCTL		ctl;
	HTAB	   *seen;
	TupleTableSlot *slot = MakeSingleTupleTableSlot(RelationGetDescr(td->tg_relation), &TTSOpsMinimalTuple);
	int			n = 0;
	int			room = 16;

	ctl.keysize = sizeof(SessionKey);
	ctl.entrysize = sizeof(SessionKey);
	ctl.hcxt = CurrentMemoryContext;
	seen = hash_create("sessions_of_allocation keys", 64, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	*keys = palloc(sizeof(SessionKey) * room);
	tuplestore_rescan(td->tg_newtable);
	while (tuplestore_gettupleslot(td->tg_newtable, true, false, slot))
	{
		SessionKey	key;
		bool		found;

		for (int c = 0; c < KEY_COLUMNS; c++)
		{
			bool		isnull;
			Datum		d = slot_getattr(slot, attnums[c], &isnull);

			if (isnull)
				elog(ERROR, "tutoring_sessions.%s is null", key_names[c]);
			memcpy(&key.cols[c], DatumGetUUIDP(d), sizeof(pg_uuid_t));
		}
		hash_search(seen, &key, HASH_ENTER, &found);
		if (found)
			continue;
		if (n == room)
		{
			room *= 2;
			*keys = repalloc(*keys, sizeof(SessionKey) * room);
		}
		(*keys)[n++] = key;
	}
	ExecDropSingleTupleTableSlot(slot);
	hash_destroy(seen);
	return n;
}

/*
 * Locks FOR KEY SHARE the allocations of the n keys, as owner, sets held[i]
 * for each key found; returns how many were.
 */
static int
count_held(SessionKey *keys, int n, bool *held, Oid owner)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[KEY_COLUMNS] = {UUIDARRAYOID, UUIDARRAYOID, UUIDARRAYOID, UUIDARRAYOID};
	Datum		values[KEY_COLUMNS];
	Datum	   *elems = palloc(sizeof(Datum) * n);
	Oid			save_userid;
	int			save_sec_context;
	int			found;
	int			count = 0;

	for (int c = 0; c < KEY_COLUMNS; c++)
	{
		for (int i = 0; i < n; i++)
			elems[i] = UUIDPGetDatum(&keys[i].cols[c]);
		values[c] = PointerGetDatum(construct_array(elems, n, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/* as ri_triggers.c runs its check: the owner's rights, row security not forced */
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(owner, save_sec_context | SECURITY_LOCAL_USERID_CHANGE | SECURITY_NOFORCE_RLS);
	/* one index probe per key: as a join, a plan made while the table looked small hashes all of it */
	kcf_plan_generic(&plan,
					 "SELECT k.o FROM unnest($1, $2, $3, $4) WITH ORDINALITY AS k(a, s, c, t, o)"
					 " CROSS JOIN LATERAL (SELECT 1 FROM ONLY kc_flow.trainer_allocations x"
					 "                      WHERE x.id = k.a AND x.student_id = k.s AND x.course_id = k.c"
					 "                        AND x.trainer_id = k.t"
					 "                      LIMIT 1 FOR KEY SHARE OF x) held",
					 KEY_COLUMNS, types);
	found = kcf_exec(plan, values, NULL, 0);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	for (int r = 0; r < found; r++)
	{
		bool		isnull;
		int64		o = kcf_get_int64(r, 1, &isnull);

		if (!held[o - 1])
			count++;
		held[o - 1] = true;
	}
	SPI_finish();
	return count;
}

/* Fails as ri_triggers.c fails an insert whose key is not in trainer_allocations. */
static void
report_missing(Relation rel, const AttrNumber *attnums, const SessionKey *key)
{
	StringInfoData names;
	StringInfoData values;
	bool		shown = true;

	/* the values only for a caller who may read them all, as ri_ReportViolation decides */
	if (check_enable_rls(RelationGetRelid(rel), InvalidOid, true) == RLS_ENABLED)
		shown = false;
	else if (pg_class_aclcheck(RelationGetRelid(rel), GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		for (int c = 0; c < KEY_COLUMNS && shown; c++)
			if (pg_attribute_aclcheck(RelationGetRelid(rel), attnums[c], GetUserId(), ACL_SELECT) != ACLCHECK_OK)
				shown = false;

	initStringInfo(&names);
	initStringInfo(&values);
	for (int c = 0; c < KEY_COLUMNS; c++)
	{
		appendStringInfo(&names, "%s%s", c > 0 ? ", " : "", key_names[c]);
		appendStringInfo(&values, "%s%s", c > 0 ? ", " : "",
						 DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&key->cols[c]))));
	}
	ereport(ERROR,
			(errcode(ERRCODE_FOREIGN_KEY_VIOLATION),
			 errmsg("insert or update on table \"%s\" violates foreign key constraint \"%s\"",
					RelationGetRelationName(rel), CONSTRAINT_NAME),
			 shown ?
			 errdetail("Key (%s)=(%s) is not present in table \"%s\".", names.data, values.data,
					   "trainer_allocations") :
			 errdetail("Key is not present in table \"%s\".", "trainer_allocations"),
			 errtableconstraint(rel, CONSTRAINT_NAME)));
}
