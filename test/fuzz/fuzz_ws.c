/*
 * fuzz_ws.c - the gateway's own parts of the WebSocket route: the handshake
 * checks of websocket.c (kc_list_has_token of parse.c for Upgrade/Connection,
 * kc_ws_key_valid for Sec-WebSocket-Key) and the event message it builds
 * (kc_ws_event_json, through kc_json_escape of log.c).
 * Input: header value \0 token \0 key \0 type \0 correlation id \0 created_at
 *        \0 payload \0 escape buffer size (first byte).
 * Promises checked: a listed token is in the header; a key is valid exactly
 * when OpenSSL decodes it to 16 bytes and encodes them back to it; an event
 * message is one JSON object whose fields read back, and it is valid UTF-8
 * (a WebSocket text frame must be) whenever its inputs are.
 */
#define _GNU_SOURCE				/* strcasestr */
#include <openssl/evp.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "fuzz.h"
#include "log.h"
#include "parse.h"
#include "websocket.h"

static const char *
field(const fuzz_fields *ff, int i)
{
	return ff->f[i] ? ff->f[i] : "";
}

/* kc_ws_key_valid's promise, through OpenSSL. */
static int
key_valid_ref(const char *key)
{
	unsigned char raw[32];
	char		back[64];

	if (strlen(key) != 24 || EVP_DecodeBlock(raw, (const unsigned char *) key, 24) != 18)
		return 0;
	EVP_EncodeBlock((unsigned char *) back, raw, 16);
	return strcmp(back, key) == 0;
}

static int
utf8(const char *s)
{
	return fuzz_utf8_valid(s, strlen(s));
}

static void
check_escape(const char *s, size_t cap)
{
	char		buf[300];
	size_t		n;

	n = kc_json_escape(buf, cap, s);
	FUZZ_CHECK(n < cap && strlen(buf) == n);
	for (size_t i = 0; i < n; i++)
		FUZZ_CHECK((unsigned char) buf[i] >= 0x20);
	if (utf8(s))
		FUZZ_CHECK(utf8(buf));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_fields ff;
	const char *value,
			   *token,
			   *key,
			   *type,
			   *corr,
			   *at,
			   *payload;
	cJSON	   *pj,
			   *m;
	char	   *out;
	size_t		len = 0;

	fuzz_split(&ff, data, size);
	value = field(&ff, 0);
	token = field(&ff, 1);
	key = field(&ff, 2);
	type = field(&ff, 3);
	corr = ff.f[4];
	at = field(&ff, 5);
	payload = field(&ff, 6);

	if (kc_list_has_token(value, token) && token[0])
		FUZZ_CHECK(strcasestr(value, token) != NULL);
	FUZZ_CHECK(kc_ws_key_valid(key) == key_valid_ref(key));

	check_escape(type, 1 + (ff.f[7] ? (unsigned char) ff.f[7][0] : 0));

	pj = cJSON_ParseWithOpts(payload, NULL, 1);
	out = kc_ws_event_json(42, type, corr, 7, at, pj ? payload : NULL, &len);
	FUZZ_CHECK(out != NULL && strlen(out) == len);
	m = cJSON_ParseWithOpts(out, NULL, 1);
	FUZZ_CHECK(cJSON_IsObject(m));
	FUZZ_CHECK(strcmp(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "type")), "event") == 0);
	FUZZ_CHECK(cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(m, "id")) == 42);
	FUZZ_CHECK(cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(m, "version")) == 7);
	FUZZ_CHECK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(m, "event_type")));
	FUZZ_CHECK(corr ? cJSON_IsString(cJSON_GetObjectItemCaseSensitive(m, "correlation_id")) :
			   cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(m, "correlation_id")));
	FUZZ_CHECK(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(m, "payload")) || pj);
	if (utf8(type) && (!corr || utf8(corr)) && utf8(at) && (!pj || utf8(payload)))
		FUZZ_CHECK(utf8(out));
	cJSON_Delete(m);
	cJSON_Delete(pj);
	free(out);
	fuzz_free(&ff);
	return 0;
}
