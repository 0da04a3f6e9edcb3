/*
 * timezone.c
 *      kc_flow.is_iana_timezone(): which zone names the schema accepts.
 *
 * Postgres itself also takes POSIX zone specifications such as "XYZ+3",
 * which silently mean a fixed offset; students, trainers and time slots must
 * name a zone of the tz database so that daylight saving follows the place.
 * Accepted: a name the server's tz database resolves that is either
 * Area/Location (e.g. Asia/Kolkata, America/Argentina/Salta, Etc/GMT+5) or
 * a single word of letters (UTC, GMT, Japan).  POSIX rules never have that
 * shape except as a bare abbreviation, which the tz lookup refuses.
 */
#include "kc_flow.h"

#include "fmgr.h"
#include "pgtime.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(kcf_is_iana_timezone);

static bool
has_zone_name_shape(const char *name)
{
	bool		slash = false;

	if (!((name[0] >= 'A' && name[0] <= 'Z') || (name[0] >= 'a' && name[0] <= 'z')))
		return false;
	for (const char *p = name; *p; p++)
	{
		if (*p == '/')
		{
			if (p[1] == '/' || p[1] == '\0' || p[1] == '.')
				return false;
			slash = true;
		}
		else if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
				   (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' || *p == '+'))
			return false;
	}
	if (slash)
		return true;
	for (const char *p = name; *p; p++)
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')))
			return false;
	return true;
}

Datum
kcf_is_iana_timezone(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));

	if (strlen(name) == 0 || strlen(name) > TZ_STRLEN_MAX)
		PG_RETURN_BOOL(false);
	if (!has_zone_name_shape(name))
		PG_RETURN_BOOL(false);
	PG_RETURN_BOOL(pg_tzset(name) != NULL);
}
