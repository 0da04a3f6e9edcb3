/*
 * fuzz_notify.c - the NOTIFY payload of kc_flow_events as the listener reads
 * it (kc_notify_parse in listen.c). Any user of the database may NOTIFY that
 * channel, so the payload is untrusted input.
 * Input: the payload text.
 * Promises checked: an accepted note has an id in 1..2^53 (it indexes the
 * listener's table of applied events), a version in 0..2^53, a lower-case
 * uuid student, a short type and a uuid or no correlation id.
 */
#include <ctype.h>

#include "fuzz.h"
#include "listen.h"

static int
is_lower_uuid(const char *s)
{
	if (strlen(s) != 36)
		return 0;
	for (int i = 0; i < 36; i++)
		if (i == 8 || i == 13 || i == 18 || i == 23 ? s[i] != '-' :
			!isxdigit((unsigned char) s[i]) || isupper((unsigned char) s[i]))
			return 0;
	return 1;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_fields ff;
	kc_event_note ev;
	kc_notify_buf buf;

	fuzz_split(&ff, data, size);
	memset(&ev, 0xaa, sizeof(ev));
	if (kc_notify_parse(ff.f[0], &ev, &buf))
	{
		FUZZ_CHECK(ev.id >= 1 && ev.id <= (1LL << 53));
		FUZZ_CHECK(ev.id % 8192 >= 0);
		FUZZ_CHECK(ev.version >= 0 && ev.version <= (1LL << 53));
		FUZZ_CHECK(ev.student_id == buf.student && is_lower_uuid(ev.student_id));
		FUZZ_CHECK(ev.type == buf.type && ev.type[0] && strlen(ev.type) < sizeof(buf.type));
		FUZZ_CHECK(!ev.correlation_id || is_lower_uuid(ev.correlation_id));
		FUZZ_CHECK(ev.created_at == NULL && ev.payload == NULL);
	}
	fuzz_free(&ff);
	return 0;
}
