/*
 * fuzz_query.c - the query parameters of the student and event routes:
 * kc_sessions_query_check (status=, from=, to=, after= cursor, limit=),
 * kc_events_query_check (after=, limit=), student= through kc_parse_student
 * and the access rule (kc_auth_scope), and kc_parse_int_param.
 * Input: one byte choosing the caller (auth off, student, admin), then
 * status \0 from \0 to \0 after \0 limit \0 student.
 * Promises checked: what is accepted is within the documented bounds, a
 * student never reads another student's data, integers are plain decimals.
 */
#include "auth.h"
#include "fuzz.h"
#include "parse.h"

#define STUDENT "11111111-1111-4111-8111-111111111111"

/* kc_parse_int_param's promise, written out independently. */
static void
check_int_param(const char *s, long long min, long long max)
{
	long long	v = -1;

	if (!kc_parse_int_param(s, min, max, &v))
		return;
	FUZZ_CHECK(s && s[0] && strlen(s) <= 19);
	for (const char *p = s; *p; p++)
		FUZZ_CHECK(*p >= '0' && *p <= '9');
	FUZZ_CHECK(v >= min && v <= max && v == strtoll(s, NULL, 10));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const statuses[] = {"scheduled", "completed", "cancelled", "missed"};
	fuzz_fields ff;
	kc_principal p;
	kc_sessions_query sq;
	kc_events_query eq;
	const char *status, *from, *to, *after, *limit, *student, *bad;
	char		named[37],
				scope[37];
	int			who;

	if (size < 1)
		return 0;
	who = data[0] % 3;
	fuzz_split(&ff, data + 1, size - 1);
	status = ff.f[0];
	from = ff.f[1];
	to = ff.f[2];
	after = ff.f[3];
	limit = ff.f[4];
	student = ff.f[5];
	memset(&p, 0, sizeof(p));
	p.authenticated = who != 0;
	p.admin = who == 2;
	strcpy(p.sub, who == 2 ? "ops" : STUDENT);

	bad = kc_sessions_query_check(status, from, to, after, limit, &sq);
	if (!bad)
	{
		int			known = sq.status == NULL;

		for (int i = 0; i < 4 && sq.status; i++)
			known |= strcmp(sq.status, statuses[i]) == 0;
		FUZZ_CHECK(known);
		FUZZ_CHECK(sq.limit >= 1 && sq.limit <= 200);
		FUZZ_CHECK(!sq.from || (sq.from[0] && strlen(sq.from) <= 64));
		FUZZ_CHECK(!sq.to || (sq.to[0] && strlen(sq.to) <= 64));
		FUZZ_CHECK(!sq.after || (sq.after[0] && strlen(sq.after) <= 128));
		FUZZ_CHECK(limit || sq.limit == 50);
	}
	else
		FUZZ_CHECK(bad[0] != '\0');

	bad = kc_events_query_check(after, limit, &eq);
	if (!bad)
		FUZZ_CHECK(eq.after >= 0 && eq.limit >= 1 && eq.limit <= 1000);
	else
		FUZZ_CHECK(bad[0] != '\0');

	if (kc_parse_student(student, named))
	{
		FUZZ_CHECK(named[0] == '\0' ? !student || !student[0] : strlen(named) == 36);
		if (kc_auth_scope(&p, named, scope))
		{
			FUZZ_CHECK(scope[0] == '\0' || strlen(scope) == 36);
			if (p.authenticated && !p.admin)
				FUZZ_CHECK(strcmp(scope, STUDENT) == 0);
			else
				FUZZ_CHECK(strcmp(scope, named) == 0);
		}
		else
			FUZZ_CHECK(p.authenticated && !p.admin && strcmp(named, STUDENT) != 0);
	}

	check_int_param(after, 0, 9223372036854775806LL);
	check_int_param(limit, 1, 1000);
	check_int_param(from, -5, 5);
	fuzz_free(&ff);
	return 0;
}
