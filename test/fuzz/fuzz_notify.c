/*
 * fuzz_notify.c - the NOTIFY payload of kc_flow_events as the listener reads
 * it (kc_notify_range and kc_notify_is_old in listen.c). Any user of the
 * database may NOTIFY that channel, so the payload is untrusted input.
 * Input: the payload text.
 * Promises checked: an accepted range has 1 <= first <= last <= 2^53 and the
 * payload is two decimals and a dash, nothing else; a range is never taken for
 * a payload of kc_flow 0.1.0.
 */
#include "fuzz.h"
#include "listen.h"

#define DIGITS "0123456789"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_fields ff;
	long long	first = -1,
				last = -1;

	fuzz_split(&ff, data, size);
	if (kc_notify_range(ff.f[0], &first, &last))
	{
		const char *p = ff.f[0];
		size_t		a = strspn(p, DIGITS);

		FUZZ_CHECK(first >= 1 && first <= last && last <= (1LL << 53));
		/* nothing but "digits-digits": no sign, space or trailing byte slipped through */
		FUZZ_CHECK(a > 0 && p[a] == '-' && p[a + 1] != '\0' &&
				   strspn(p + a + 1, DIGITS) == strlen(p + a + 1));
		FUZZ_CHECK(!kc_notify_is_old(p));
	}
	fuzz_free(&ff);
	return 0;
}
