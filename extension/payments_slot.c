/*
 * payments_slot.c
 *      Whether a payment's time slot is one kc_flow.validate_time_slot()
 *      accepts, without running it: for the INSTEAD OF trigger's insert path
 *      (payments_write.c).
 *
 * validate_time_slot() (20_payment_rules.sql) is the rule and the only
 * source of its errors; it runs a statement per key and per weekday, most of
 * the cost of a checkout's INSERT in the trigger.  kcf_slot_surely_valid()
 * answers true only for a slot that rule accepts: {"weekdays":[ISO days,
 * each once],"start":"HH:MM","timezone":IANA zone}.  Anything else, a slot
 * with starts_on included, answers false, and the trigger hands the insert
 * to the rules, which accept it or raise their error.
 */
#include "kc_flow.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

static bool surely_weekdays(JsonbValue *value);
static bool surely_start(JsonbValue *value);
static bool surely_timezone(JsonbValue *value);

/* A JSON array of ISO weekdays written as one digit 1..7, none twice, not empty. */
static bool
surely_weekdays(JsonbValue *value)
{
	JsonbIterator *it;
	JsonbValue	element;
	JsonbIteratorToken token;
	int			seen = 0;
	int			count = 0;

	if (value->type != jbvBinary || !JsonContainerIsArray(value->val.binary.data) ||
		JsonContainerIsScalar(value->val.binary.data))
		return false;
	it = JsonbIteratorInit(value->val.binary.data);
	while ((token = JsonbIteratorNext(&it, &element, true)) != WJB_DONE)
	{
		char	   *digits;
		int			day;

		if (token != WJB_ELEM)
			continue;
		if (element.type != jbvNumeric)
			return false;
		digits = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(element.val.numeric)));
		if (strlen(digits) != 1 || digits[0] < '1' || digits[0] > '7')
			return false;
		day = digits[0] - '0';
		if (seen & (1 << day))
			return false;
		seen |= 1 << day;
		count++;
	}
	return count > 0;
}

/* A JSON string "HH:MM", 00:00 to 23:59. */
static bool
surely_start(JsonbValue *value)
{
	const char *s;

	if (value->type != jbvString || value->val.string.len != 5)
		return false;
	s = value->val.string.val;
	return ((s[0] >= '0' && s[0] <= '1' && s[1] >= '0' && s[1] <= '9') ||
			(s[0] == '2' && s[1] >= '0' && s[1] <= '3')) &&
		s[2] == ':' && s[3] >= '0' && s[3] <= '5' && s[4] >= '0' && s[4] <= '9';
}

/* A JSON string that kc_flow.is_iana_timezone() accepts. */
static bool
surely_timezone(JsonbValue *value)
{
	text	   *zone;

	if (value->type != jbvString)
		return false;
	zone = cstring_to_text_with_len(value->val.string.val, value->val.string.len);
	return DatumGetBool(DirectFunctionCall1(kcf_is_iana_timezone, PointerGetDatum(zone)));
}

/* How many keys the slot has at its top; -1 when it is not an object. */
int
kcf_slot_key_count(Jsonb *slot)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken token;
	int			keys = 0;

	if (!JB_ROOT_IS_OBJECT(slot) || JB_ROOT_IS_SCALAR(slot))
		return -1;
	it = JsonbIteratorInit(&slot->root);
	while ((token = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		if (token == WJB_KEY)
			keys++;
	return keys;
}

/* The slot (a jsonb datum) is one validate_time_slot() accepts; false: not sure. */
bool
kcf_slot_surely_valid(Datum slot_datum)
{
	Jsonb	   *slot = DatumGetJsonbP(slot_datum);
	JsonbValue *weekdays,
			   *start,
			   *zone;
	int			keys = kcf_slot_key_count(slot);

	if (keys < 0)
		return false;
	weekdays = getKeyJsonValueFromContainer(&slot->root, "weekdays", 8, NULL);
	start = getKeyJsonValueFromContainer(&slot->root, "start", 5, NULL);
	zone = getKeyJsonValueFromContainer(&slot->root, "timezone", 8, NULL);
	/* exactly these three keys: any other (starts_on too) is for the rules to judge */
	return keys == 3 && weekdays != NULL && start != NULL && zone != NULL &&
		surely_weekdays(weekdays) && surely_start(start) && surely_timezone(zone);
}
