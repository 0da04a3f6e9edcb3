/*
 * fuzz_jwt.c - what auth.c does with a bearer token: the header check (alg
 * exactly HS256), the claims (exp, nbf, sub, role) and the per-thread cache of
 * verified tokens. libjwt itself is not the target: to reach the claim
 * handling, the harness signs what the fuzzer writes with the fixed secret.
 * Input: byte 0 even: the rest is the Authorization header as sent;
 *        byte 0 odd:  header JSON \0 claims JSON, base64url-encoded and signed.
 * Promises checked: an accepted token has an integer exp in the future, no
 * nbf in the future, a uuid sub unless role is "admin"; asking again gives
 * the same answer (cache), and the answer turns "expired" at exp.
 */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "auth.h"
#include "auth_cache.h"
#include "fuzz.h"

#define SECRET "fuzz-secret"
#define NOW ((time_t) 1700000000)

static size_t
b64url(char *out, const unsigned char *in, size_t len)
{
	static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t		n = 0;
	unsigned int acc = 0;
	int			bits = 0;

	for (size_t i = 0; i < len; i++)
	{
		acc = (acc << 8) | in[i];
		bits += 8;
		while (bits >= 6)
		{
			bits -= 6;
			out[n++] = abc[(acc >> bits) & 63];
		}
	}
	if (bits > 0)
		out[n++] = abc[(acc << (6 - bits)) & 63];
	out[n] = '\0';
	return n;
}

/* "Bearer " + base64url(header) "." base64url(claims) "." HMAC-SHA256; malloc'd. */
static char *
signed_header(const char *header, const char *claims)
{
	size_t		hl = strlen(header),
				cl = strlen(claims);
	char	   *out = malloc(7 + (hl + cl) * 2 + 128);
	size_t		n = 7;
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;

	if (!out)
		abort();
	memcpy(out, "Bearer ", 7);
	n += b64url(out + n, (const unsigned char *) header, hl);
	out[n++] = '.';
	n += b64url(out + n, (const unsigned char *) claims, cl);
	if (!HMAC(EVP_sha256(), SECRET, (int) strlen(SECRET), (const unsigned char *) out + 7, n - 7,
			  mac, &maclen))
		abort();
	out[n++] = '.';
	b64url(out + n, mac, maclen);
	return out;
}

/* True when the object has two members of the same name (parsers disagree on those). */
static int
has_duplicates(const cJSON *o)
{
	for (const cJSON *a = o ? o->child : NULL; a; a = a->next)
		for (const cJSON *b = a->next; b; b = b->next)
			if (a->string && b->string && strcmp(a->string, b->string) == 0)
				return 1;
	return 0;
}

/* The claims of an accepted token, read independently with cJSON. */
static void
check_claims(const char *claims, const kc_principal *p, const char *authorization)
{
	cJSON	   *c = cJSON_ParseWithOpts(claims, NULL, 1);
	const cJSON *exp,
			   *nbf,
			   *sub,
			   *role;
	kc_principal again;
	const char *why = "";

	if (!cJSON_IsObject(c) || has_duplicates(c))
	{
		cJSON_Delete(c);
		return;
	}
	exp = cJSON_GetObjectItemCaseSensitive(c, "exp");
	nbf = cJSON_GetObjectItemCaseSensitive(c, "nbf");
	sub = cJSON_GetObjectItemCaseSensitive(c, "sub");
	role = cJSON_GetObjectItemCaseSensitive(c, "role");
	FUZZ_CHECK(cJSON_IsNumber(exp) && exp->valuedouble > (double) NOW);
	FUZZ_CHECK(!nbf || (cJSON_IsNumber(nbf) && nbf->valuedouble <= (double) NOW));
	FUZZ_CHECK(cJSON_IsString(sub));
	FUZZ_CHECK(p->admin == (cJSON_IsString(role) && strcmp(role->valuestring, "admin") == 0));
	if (!p->admin)
		FUZZ_CHECK(strlen(p->sub) == 36 && strcasecmp(p->sub, sub->valuestring) == 0);
	if (exp->valuedouble < 4e18)
		FUZZ_CHECK(kc_auth_verify(SECRET, authorization, (time_t) exp->valuedouble, &again, &why) ==
				   KC_AUTH_EXPIRED);
	cJSON_Delete(c);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_fields ff;
	char	   *authorization;
	const char *claims = NULL;
	kc_principal p,
				again;
	const char *why = "";
	kc_auth_result r,
				r2;

	static bool remembering;

	if (!remembering)			/* the second verification below then takes the remembered path */
		remembering = kc_auth_cache_init(1024);
	if (size < 1)
		return 0;
	fuzz_split(&ff, data + 1, size - 1);
	if (data[0] & 1)
	{
		claims = ff.f[1] ? ff.f[1] : "";
		authorization = signed_header(ff.f[0], claims);
	}
	else
		authorization = strdup(ff.f[0]);

	r = kc_auth_verify(SECRET, authorization, NOW, &p, &why);
	FUZZ_CHECK(why != NULL);
	FUZZ_CHECK(r == KC_AUTH_OK ? p.authenticated : !p.authenticated);
	r2 = kc_auth_verify(SECRET, authorization, NOW, &again, &why);
	FUZZ_CHECK(r2 == r);
	if (r == KC_AUTH_OK)
	{
		FUZZ_CHECK(again.authenticated && again.admin == p.admin && strcmp(again.sub, p.sub) == 0);
		FUZZ_CHECK(strlen(p.sub) < sizeof(p.sub));
		if (claims)
			check_claims(claims, &p, authorization);
	}
	free(authorization);
	fuzz_free(&ff);
	return 0;
}
