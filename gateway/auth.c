/*
 * auth.c - JWT verification with libjwt, plus an explicit algorithm check of
 * the token header before any signature work: "none", RS*, ES* and HS384/512
 * tokens are refused whatever the library would accept.
 *
 * A verified token is remembered (auth_cache.c: one table for every thread,
 * keyed by the whole token text and the secret), so a client that sends the
 * same token again pays for the HMAC once; exp is still checked on every
 * request.
 */
#include "auth.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <jwt.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <stdint.h>

#include "auth_cache.h"
#include "setassoc.h"

#define MAX_TOKEN 4096

bool
kc_uuid_normalize(const char *s, char out[37])
{
	for (int i = 0; i < 36; i++)
	{
		char		ch = s[i];

		if (i == 8 || i == 13 || i == 18 || i == 23)
		{
			if (ch != '-')
				return false;
		}
		else if (!isxdigit((unsigned char) ch))
			return false;
		out[i] = (char) tolower((unsigned char) ch);
	}
	if (s[36] != '\0')
		return false;
	out[36] = '\0';
	return true;
}

/* Decodes base64url (no padding) into a malloc'd NUL-terminated buffer. */
static char *
b64url_decode(const char *in, size_t len)
{
	char	   *out = malloc(len * 3 / 4 + 4);
	unsigned int acc = 0;
	int			bits = 0;
	size_t		n = 0;

	if (!out)
		return NULL;
	for (size_t i = 0; i < len; i++)
	{
		int			v;
		char		ch = in[i];

		if (ch >= 'A' && ch <= 'Z')
			v = ch - 'A';
		else if (ch >= 'a' && ch <= 'z')
			v = ch - 'a' + 26;
		else if (ch >= '0' && ch <= '9')
			v = ch - '0' + 52;
		else if (ch == '-')
			v = 62;
		else if (ch == '_')
			v = 63;
		else
		{
			free(out);
			return NULL;
		}
		acc = (acc << 6) | (unsigned int) v;
		bits += 6;
		if (bits >= 8)
		{
			bits -= 8;
			out[n++] = (char) ((acc >> bits) & 0xff);
		}
	}
	out[n] = '\0';
	return out;
}

/* True when the token's header declares exactly alg HS256. */
static bool
header_is_hs256(const char *token)
{
	const char *dot = strchr(token, '.');
	char	   *json;
	cJSON	   *h;
	const cJSON *alg;
	bool		ok;

	if (!dot)
		return false;
	json = b64url_decode(token, (size_t) (dot - token));
	if (!json)
		return false;
	h = cJSON_Parse(json);
	free(json);
	alg = cJSON_GetObjectItemCaseSensitive(h, "alg");
	ok = cJSON_IsString(alg) && strcmp(alg->valuestring, "HS256") == 0;
	cJSON_Delete(h);
	return ok;
}

/*
 * Reads a NumericDate claim (exp, nbf): 1 with *out when it is an integer, 0
 * when absent, -1 when it is anything else. libjwt's jwt_get_grant_int reads
 * a string or a fraction as 0, which would make any such nbf pass.
 */
static int
claim_int(jwt_t *jwt, const char *name, long *out)
{
	char	   *json = jwt_get_grants_json(jwt, name);
	cJSON	   *v;
	int			rc = -1;

	if (!json)
		return 0;
	v = cJSON_Parse(json);
	free(json);
	if (cJSON_IsNumber(v) && v->valuedouble >= -9007199254740992.0 &&
		v->valuedouble <= 9007199254740992.0 &&
		(double) (long) v->valuedouble == v->valuedouble)
	{
		*out = (long) v->valuedouble;
		rc = 1;
	}
	cJSON_Delete(v);
	return rc;
}

/* Every check of kc_auth_verify on the bare token; *exp_out gets exp when OK. */
static kc_auth_result
verify_token(const char *secret, const char *token, time_t now,
			 kc_principal *p, const char **why, long *exp_out)
{
	jwt_t	   *jwt = NULL;
	const char *sub;
	const char *role;
	long		exp = 0,
				nbf = 0;
	int			rc;
	size_t		dots = 0;

	for (const char *s = token; *s; s++)
		dots += *s == '.';
	if (dots != 2 || !header_is_hs256(token))
	{
		*why = "token must be a JWT signed with HS256";
		return KC_AUTH_INVALID;
	}
	if (jwt_decode(&jwt, token, (const unsigned char *) secret, (int) strlen(secret)) != 0 ||
		jwt == NULL || jwt_get_alg(jwt) != JWT_ALG_HS256)
	{
		*why = "invalid token signature";
		if (jwt)
			jwt_free(jwt);
		return KC_AUTH_INVALID;
	}
	rc = claim_int(jwt, "exp", &exp);
	if (rc <= 0)
	{
		jwt_free(jwt);
		*why = rc == 0 ? "token has no exp claim" : "token exp claim is not an integer";
		return KC_AUTH_INVALID;
	}
	if (exp <= now)
	{
		jwt_free(jwt);
		*why = "token expired";
		return KC_AUTH_EXPIRED;
	}
	rc = claim_int(jwt, "nbf", &nbf);
	if (rc != 0 && (rc < 0 || nbf > now))
	{
		jwt_free(jwt);
		*why = rc < 0 ? "token nbf claim is not an integer" : "token not valid yet";
		return KC_AUTH_INVALID;
	}
	sub = jwt_get_grant(jwt, "sub");
	role = jwt_get_grant(jwt, "role");
	p->admin = role && strcmp(role, "admin") == 0;
	if (!sub || strlen(sub) >= sizeof(p->sub))
	{
		jwt_free(jwt);
		*why = "token has no usable sub claim";
		return KC_AUTH_INVALID;
	}
	if (!kc_uuid_normalize(sub, p->sub))
	{
		if (!p->admin)
		{
			jwt_free(jwt);
			*why = "token sub is not a student id";
			return KC_AUTH_INVALID;
		}
		strcpy(p->sub, sub);
	}
	p->authenticated = true;
	*exp_out = exp;
	jwt_free(jwt);
	return KC_AUTH_OK;
}

kc_auth_result
kc_auth_verify(const char *secret, const char *authorization, time_t now,
			   kc_principal *p, const char **why)
{
	const char *token;
	size_t		len;
	uint64_t	secret_hash;
	kc_auth_result res;
	long		exp = 0;

	memset(p, 0, sizeof(*p));
	if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
	{
		*why = "missing bearer token";
		return KC_AUTH_MISSING;
	}
	token = authorization + 7;
	while (*token == ' ')
		token++;
	len = strlen(token);
	if (len > MAX_TOKEN)
	{
		*why = "token too long";
		return KC_AUTH_INVALID;
	}
	secret_hash = kc_hash(secret, strlen(secret));
	if (kc_auth_cache_get(secret_hash, token, len, &exp, p))
	{
		/* the very same text passed every check before; only time can have changed */
		if (exp <= now)
		{
			kc_auth_cache_forget(secret_hash, token, len);
			memset(p, 0, sizeof(*p));
			*why = "token expired";
			return KC_AUTH_EXPIRED;
		}
		return KC_AUTH_OK;
	}
	res = verify_token(secret, token, now, p, why, &exp);
	if (res == KC_AUTH_OK)
		kc_auth_cache_put(secret_hash, token, len, exp, p);
	return res;
}

bool
kc_auth_scope(const kc_principal *p, const char *named, char scope[37])
{
	if (p->authenticated && !p->admin)
	{
		/* a student's sub is a normalized uuid (verify_token) */
		if (named[0] && strcmp(named, p->sub) != 0)
			return false;
		return kc_uuid_normalize(p->sub, scope);
	}
	memmove(scope, named, strlen(named) + 1);
	return true;
}

char *
kc_auth_issue(const char *secret, const char *sub, const char *role, long ttl)
{
	jwt_t	   *jwt = NULL;
	char	   *out = NULL;
	time_t		now = time(NULL);

	if (jwt_new(&jwt) != 0)
		return NULL;
	if (jwt_add_grant(jwt, "sub", sub) == 0 &&
		jwt_add_grant(jwt, "role", role) == 0 &&
		jwt_add_grant_int(jwt, "iat", (long) now) == 0 &&
		jwt_add_grant_int(jwt, "exp", (long) now + ttl) == 0 &&
		jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *) secret, (int) strlen(secret)) == 0)
		out = jwt_encode_str(jwt);
	jwt_free(jwt);
	return out;
}
