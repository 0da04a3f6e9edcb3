/*
 * payload.c
 *      Reading an event's payload: the fields a stage needs to find its work.
 *
 * kcf_emit() (emit.c) writes an event's payload as jsonb; a stage that
 * handles the event reads back the id it acts on (the purchase, the
 * allocation) through these helpers, so that every stage reports a missing
 * or malformed field the same way.  An event whose row the batch has not
 * written yet (deferred, emit.c) is read from its payload in memory.
 */
#include "kc_flow.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"

/* The uuid under key in payload, a jsonb's text (an event deferred, emit.c); isnull when absent. */
static Datum
uuid_in_text(const char *payload, const char *key, bool *isnull)
{
	Jsonb	   *jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(payload)));
	JsonbValue *v = getKeyJsonValueFromContainer(&jb->root, key, strlen(key), NULL);

	*isnull = v == NULL || v->type != jbvString;
	if (*isnull)
		return (Datum) 0;
	return DirectFunctionCall1(uuid_in, CStringGetDatum(pnstrdup(v->val.string.val, v->val.string.len)));
}

/*
 * The uuid under key in an event's payload; a clear error when it is missing,
 * since a stage cannot do anything sensible with such an event.
 */
Datum
kcf_event_uuid(const KcfEvent *event, const char *key)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[2] = {INT8OID, TEXTOID};
	Datum		values[2] = {Int64GetDatum(event->id), CStringGetTextDatum(key)};
	bool		isnull = true;
	Datum		value = (Datum) 0;
	const char *deferred = kcf_emit_deferred_payload(event->id);

	if (deferred != NULL)
		value = uuid_in_text(deferred, key, &isnull);
	else
	{
		kcf_plan(&plan, "SELECT (payload->>$2)::uuid FROM kc_flow.events WHERE id = $1", 2, types);
		if (kcf_exec(plan, values, NULL, 1) > 0)
			value = kcf_get_datum(0, 1, &isnull);
	}
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("event " INT64_FORMAT " (%s) has no %s in its payload", event->id, event->type, key)));
	return value;
}
