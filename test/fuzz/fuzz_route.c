/*
 * fuzz_route.c - the router of the route table (kc_route_match), and the
 * list tokenizer of parse.c through If-None-Match matching (kc_etag_matches)
 * and the CORS origin list (kc_cors_allowed).
 * Input: path \0 If-None-Match \0 CORS list \0 Origin.
 * Promises checked: every path gets a row of the table; a {student} route
 * names a lower-case uuid taken from the path, or is flagged bad; only
 * {student} routes name a student; an {id} route has its segment as sent
 * (or flagged too long), and no other route has one; every item the tokenizer returns is a
 * non-empty, trimmed piece of the list without commas; a CORS match means the
 * origin is in the list (or the list is "*").
 */
#include <ctype.h>
#include <strings.h>

#include "fuzz.h"
#include "parse.h"
#include "routes.h"

/* kc_list_next's promise on list. */
static void
check_list(const char *list)
{
	const char *p = list;
	const char *item;
	size_t		len;

	while (kc_list_next(&p, &item, &len))
	{
		FUZZ_CHECK(len > 0 && item >= list && item + len <= list + strlen(list));
		FUZZ_CHECK(memchr(item, ',', len) == NULL);
		FUZZ_CHECK(item[0] != ' ' && item[0] != '\t' && item[len - 1] != ' ' && item[len - 1] != '\t');
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_fields ff;
	kc_match	m;
	const char *path,
			   *inm,
			   *list,
			   *origin;

	fuzz_split(&ff, data, size);
	path = ff.f[0];
	inm = ff.f[1];
	list = ff.f[2];
	origin = ff.f[3];

	kc_route_match(path, &m);
	FUZZ_CHECK(m.route >= kc_routes && m.route < kc_routes + kc_route_count);
	if (m.route->student == KC_STUDENT_PATH && !m.bad_id)
	{
		FUZZ_CHECK(strlen(m.student) == 36);
		for (int i = 0; i < 36; i++)
			FUZZ_CHECK(i == 8 || i == 13 || i == 18 || i == 23 ? m.student[i] == '-' :
					   isxdigit((unsigned char) m.student[i]) && !isupper((unsigned char) m.student[i]));
		/* the id is the {student} segment of the path, case aside */
		FUZZ_CHECK(strncasecmp(path + (strstr(m.route->path, "{student}") - m.route->path),
							   m.student, 36) == 0);
	}
	if (m.route->student != KC_STUDENT_PATH || m.bad_id)
		FUZZ_CHECK(m.student[0] == '\0');
	if (m.route->student != KC_STUDENT_PATH)
		FUZZ_CHECK(!m.bad_id);
	if (m.route->path && !strchr(m.route->path, '{'))
		FUZZ_CHECK(strcmp(m.route->path, path) == 0 || (m.route->alias && strcmp(m.route->alias, path) == 0));
	/* an {id} route: its id is the non-empty segment of the path, as sent, or flagged too long */
	if (m.route->path && strstr(m.route->path, "{id}"))
	{
		if (m.param_too_long)
			FUZZ_CHECK(m.param[0] == '\0');
		else
		{
			FUZZ_CHECK(m.param[0] && !strchr(m.param, '/'));
			FUZZ_CHECK(strncmp(path + (strstr(m.route->path, "{id}") - m.route->path),
							   m.param, strlen(m.param)) == 0);
		}
	}
	else
		FUZZ_CHECK(!m.param_too_long && m.param[0] == '\0');

	check_list(inm);
	check_list(list);

	(void) kc_etag_matches(inm, "\"v42\"");
	if (inm && path[0])
		(void) kc_etag_matches(inm, path);
	if (kc_cors_allowed(list, origin) && origin[0])
		FUZZ_CHECK(strcmp(list, "*") == 0 || strstr(list, origin) != NULL);
	fuzz_free(&ff);
	return 0;
}
