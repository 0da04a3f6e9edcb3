/*
 * parse.h - the pure parsers of the gateway's HTTP side: comma-separated
 * lists (the one tokenizer behind If-None-Match, CORS origins and handshake
 * headers), integers, event ids and student ids of the query string, and the
 * query checks of /sessions and /events/recent. No I/O, no libmicrohttpd:
 * everything here is unit-tested and fuzzed (test/fuzz).
 */
#ifndef KC_PARSE_H
#define KC_PARSE_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Steps through a comma-separated list: false at its end, else the next
 * non-empty item in *item and *len, spaces and tabs around it removed. *p
 * (start it at the list; NULL is an empty list) moves past the item.
 */
bool		kc_list_next(const char **p, const char **item, size_t *len);
/* True when the list value has token as one of its items (case-insensitive). */
bool		kc_list_has_token(const char *value, const char *token);
/* True when an If-None-Match header value matches etag (weak comparison, or "*"). */
bool		kc_etag_matches(const char *if_none_match, const char *etag);
/* True when origin is in the comma-separated list, or the list is "*". */
bool		kc_cors_allowed(const char *list, const char *origin);

/* Parses a plain decimal integer (digits only) in [min,max]; false otherwise. */
bool		kc_parse_int_param(const char *s, long long min, long long max, long long *out);
/* An event id (after=): a non-negative bigint; false otherwise. */
bool		kc_parse_event_id(const char *s, long long *out);
/* A student= parameter: absent or empty gives "", a uuid its lower-case form; false otherwise. */
bool		kc_parse_student(const char *s, char out[37]);

/* The query of /sessions once checked; absent or empty parameters are NULL. */
typedef struct kc_sessions_query
{
	const char *status;
	const char *from;			/* at most 64 bytes, checked by Postgres */
	const char *to;
	const char *after;			/* at most 128 bytes, opaque cursor */
	long long	limit;			/* 1..200, default 50 */
} kc_sessions_query;

/* Checks the raw query parameters of /sessions (each may be NULL): NULL when valid, else the 400 message. */
const char *kc_sessions_query_check(const char *status, const char *from, const char *to,
									const char *after, const char *limit, kc_sessions_query *q);

/* The query of /events/recent once checked (whose events: the request's student scope). */
typedef struct kc_events_query
{
	long long	after;			/* default 0 */
	long long	limit;			/* 1..1000, default 100 */
} kc_events_query;

/* Checks the raw after= and limit= of /events/recent (each may be NULL): NULL when valid, else the 400 message. */
const char *kc_events_query_check(const char *after, const char *limit, kc_events_query *q);

#endif
