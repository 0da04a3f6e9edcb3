/*
 * auth.h - bearer-token authentication (JWT, HS256 only) and the one access rule:
 * a student reads only their own data, an admin reads anyone's.
 */
#ifndef KC_AUTH_H
#define KC_AUTH_H

#include <stdbool.h>
#include <time.h>

typedef struct kc_principal
{
	bool		authenticated;	/* false when KC_AUTH=off */
	bool		admin;
	char		sub[64];		/* a lower-case student uuid unless admin */
} kc_principal;

typedef enum kc_auth_result
{
	KC_AUTH_OK = 0,
	KC_AUTH_MISSING,			/* no Authorization header (or not Bearer) */
	KC_AUTH_INVALID,			/* malformed, wrong algorithm or bad signature */
	KC_AUTH_EXPIRED
} kc_auth_result;

/*
 * Checks "Bearer <token>": the header must say alg HS256, the signature must
 * verify with secret, exp must be present and in the future (nbf, when given,
 * in the past), and sub must be a student uuid unless role is "admin".
 * *why gets a static explanation for the 401 answer.
 */
kc_auth_result kc_auth_verify(const char *secret, const char *authorization,
							  time_t now, kc_principal *p, const char **why);

/*
 * The access rule, for the student a request names (a normalized uuid, or ""
 * for none): a student reads only their own data, and reads it when naming
 * none; an admin, or anyone when auth is off, reads the student named, or
 * every student's data when none is. Sets scope to the student to read ("":
 * every student; named and scope may be the same buffer); false: refused.
 */
bool		kc_auth_scope(const kc_principal *p, const char *named, char scope[37]);

/* A signed HS256 token for sub with role and lifetime; malloc'd, NULL on error. */
char	   *kc_auth_issue(const char *secret, const char *sub, const char *role, long ttl);

/* Copies s lower-cased into out (37 bytes) when it is a uuid; false otherwise. */
bool		kc_uuid_normalize(const char *s, char out[37]);

#endif
