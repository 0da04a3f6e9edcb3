/*
 * parse.c - the pure parsers of the gateway's HTTP side (see parse.h).
 *
 * Every comma-separated value the gateway reads goes through kc_list_next, and
 * every integer of a query string through kc_parse_int_param, so each rule
 * (what separates items, what a number looks like) is written once.
 */
#include "parse.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth.h"

#define MAX_EVENT_ID 9223372036854775806LL	/* one below bigint's max: id > after stays a bigint */

bool
kc_list_next(const char **p, const char **item, size_t *len)
{
	const char *s = *p;

	if (!s)
		return false;
	for (;;)
	{
		const char *end;
		size_t		n;

		while (*s == ' ' || *s == '\t' || *s == ',')
			s++;
		if (!*s)
		{
			*p = s;
			return false;
		}
		end = strchr(s, ',');
		n = end ? (size_t) (end - s) : strlen(s);
		*p = s + n;
		while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
			n--;
		if (n > 0)
		{
			*item = s;
			*len = n;
			return true;
		}
		s = *p;
	}
}

bool
kc_list_has_token(const char *value, const char *token)
{
	size_t		tl = strlen(token);
	const char *item;
	size_t		len;

	while (kc_list_next(&value, &item, &len))
		if (len == tl && strncasecmp(item, token, tl) == 0)
			return true;
	return false;
}

bool
kc_etag_matches(const char *inm, const char *etag)
{
	size_t		elen = strlen(etag);
	const char *item;
	size_t		len;

	if (!etag[0])
		return false;
	while (kc_list_next(&inm, &item, &len))
	{
		if (len == 1 && *item == '*')
			return true;
		if (len > 2 && item[0] == 'W' && item[1] == '/')
		{
			item += 2;
			len -= 2;
		}
		if (len == elen && memcmp(item, etag, elen) == 0)
			return true;
	}
	return false;
}

bool
kc_cors_allowed(const char *list, const char *origin)
{
	size_t		olen;
	const char *item;
	size_t		len;

	if (!list || !origin)
		return false;
	if (strcmp(list, "*") == 0)
		return true;
	olen = strlen(origin);
	while (kc_list_next(&list, &item, &len))
		if (len == olen && memcmp(item, origin, len) == 0)
			return true;
	return false;
}

bool
kc_parse_int_param(const char *s, long long min, long long max, long long *out)
{
	char	   *end;
	long long	v;

	if (!s || !*s || strlen(s) > 19)
		return false;
	for (const char *p = s; *p; p++)
		if (*p < '0' || *p > '9')
			return false;
	v = strtoll(s, &end, 10);
	if (*end || v < min || v > max)
		return false;
	*out = v;
	return true;
}

bool
kc_parse_event_id(const char *s, long long *out)
{
	return kc_parse_int_param(s, 0, MAX_EVENT_ID, out);
}

bool
kc_parse_student(const char *s, char out[37])
{
	out[0] = '\0';
	return !s || !*s || kc_uuid_normalize(s, out);
}

const char *
kc_sessions_query_check(const char *status, const char *from, const char *to,
						const char *after, const char *limit, kc_sessions_query *q)
{
	static const char *const statuses[] = {"scheduled", "completed", "cancelled", "missed"};

	memset(q, 0, sizeof(*q));
	q->limit = 50;
	if (status && *status)
	{
		bool		known = false;

		for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++)
			known |= strcmp(status, statuses[i]) == 0;
		if (!known)
			return "status must be scheduled, completed, cancelled or missed";
	}
	if (limit && !kc_parse_int_param(limit, 1, 200, &q->limit))
		return "limit must be an integer from 1 to 200";
	if ((from && strlen(from) > 64) || (to && strlen(to) > 64) || (after && strlen(after) > 128))
		return "parameter too long";
	q->status = status && *status ? status : NULL;
	q->from = from && *from ? from : NULL;
	q->to = to && *to ? to : NULL;
	q->after = after && *after ? after : NULL;
	return NULL;
}

const char *
kc_events_query_check(const char *after, const char *limit, kc_events_query *q)
{
	memset(q, 0, sizeof(*q));
	q->limit = 100;
	if (after && !kc_parse_event_id(after, &q->after))
		return "after must be a non-negative integer";
	if (limit && !kc_parse_int_param(limit, 1, 1000, &q->limit))
		return "limit must be an integer from 1 to 1000";
	return NULL;
}
