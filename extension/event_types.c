/*
 * event_types.c
 *      The table of kc_flow's event types: one row per type, read by everyone.
 *
 * A row names the type, the stage that consumes it (NULL when only readers
 * of the log act on it: the gateway, the student's screen), who emits it and
 * what it means.  emit.c refuses a type that is not here and queues an event
 * for its row's stage; the dispatcher (dispatch.c) hands a follow-up event to
 * that same stage; the events_type_known constraint calls
 * kc_flow.is_event_type(); kc_flow.event_types() shows the table in SQL.
 * Adding an event type is adding a row (and, for a new consumer, a stage in
 * dispatch.c's table of stages).
 */
#include "kc_flow.h"

#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(kcf_event_types);
PG_FUNCTION_INFO_V1(kcf_is_event_type);

typedef struct KcfEventType
{
	const char *name;
	const char *consumer;		/* the stage that handles it, NULL: none */
	const char *emitted_by;
	const char *meaning;
} KcfEventType;

static const KcfEventType event_types[] = {
	{"PURCHASE_CONFIRMED", "purchase", "payments_emit trigger",
	"a payment became succeeded"},
	{"PURCHASE_CREATED", "allocation", "purchase stage",
	"the purchase of a succeeded payment was created"},
	{"TRAINER_ALLOCATED", "sessions", "allocation stage",
	"a trainer was booked for every planned session of a purchase"},
	{"ALLOCATION_PENDING", NULL, "allocation stage",
	"no trainer is free for a new allocation yet; it is retried"},
	{"SESSIONS_GENERATED", NULL, "sessions stage",
	"tutoring sessions were added to an allocation"},
	{"PURCHASE_REFUNDED", "refund", "payments_emit trigger",
	"a succeeded payment became refunded"},
	{"PURCHASE_CANCELLED", NULL, "refund stage",
	"a refunded purchase ended: its trainer freed, its future sessions cancelled"},
	{"PURCHASE_ALREADY_ACTIVE", NULL, "purchase stage",
	"payment received, course already active: the payment cannot become a second purchase"},
	{"VIEWS_REFRESHED", NULL, "kc_flow--0.1.0--0.2.0.sql",
	"the read side changed shape in an upgrade: the student's views must be read again"},
};

static const KcfEventType *
find_event_type(const char *name)
{
	for (int i = 0; i < lengthof(event_types); i++)
		if (strcmp(event_types[i].name, name) == 0)
			return &event_types[i];
	return NULL;
}

/*
 * The stage that consumes events of this type, NULL when none does.  A type
 * that is not in the table is an error naming the known ones.
 */
const char *
kcf_consumer_for(const char *event_type)
{
	const KcfEventType *type = find_event_type(event_type);
	StringInfoData known;

	if (type != NULL)
		return type->consumer;

	initStringInfo(&known);
	for (int i = 0; i < lengthof(event_types); i++)
		appendStringInfo(&known, "%s%s", i > 0 ? ", " : "", event_types[i].name);
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown kc_flow event type \"%s\"", event_type),
			 errhint("Known types: %s.", known.data)));
	return NULL;				/* keep compiler quiet */
}

/* kc_flow.is_event_type(name): whether the table has it (the events_type_known check). */
Datum
kcf_is_event_type(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));

	PG_RETURN_BOOL(find_event_type(name) != NULL);
}

/* kc_flow.event_types(): the table, one row per type, in its order. */
Datum
kcf_event_types(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	for (int i = 0; i < lengthof(event_types); i++)
	{
		const KcfEventType *type = &event_types[i];
		Datum		values[4];
		bool		nulls[4] = {false, type->consumer == NULL, false, false};

		values[0] = CStringGetTextDatum(type->name);
		values[1] = type->consumer ? CStringGetTextDatum(type->consumer) : (Datum) 0;
		values[2] = CStringGetTextDatum(type->emitted_by);
		values[3] = CStringGetTextDatum(type->meaning);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
