/*
 * auth_cache.h - the process-wide table of verified tokens (--token-cache).
 *
 * kc_auth_verify (auth.c) remembers each token that passed every check, with
 * the principal it proved and its exp, so a client that sends the same token
 * again costs a lookup instead of an HMAC and three JSON parses. The table is
 * shared by every request thread (a request's connection may land on any of
 * them), set-associative and bounded: sized to the working set of tokens, it
 * holds all of them; beyond that the least recently used token of a set goes.
 * A token is found only by its whole text and under the same secret; exp is
 * checked by the caller on every request.
 */
#ifndef KC_AUTH_CACHE_H
#define KC_AUTH_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth.h"

/* Room for about `tokens` tokens (0: nothing is remembered); false when out of memory. */
bool		kc_auth_cache_init(int tokens);
void		kc_auth_cache_free(void);

/* True, with *exp and *p, when token (len bytes) was remembered under secret_hash. */
bool		kc_auth_cache_get(uint64_t secret_hash, const char *token, size_t len,
							  long *exp, kc_principal *p);
/* Remembers a verified token (a no-op without a table or when out of memory). */
void		kc_auth_cache_put(uint64_t secret_hash, const char *token, size_t len,
							  long exp, const kc_principal *p);
/* Forgets token (it expired). */
void		kc_auth_cache_forget(uint64_t secret_hash, const char *token, size_t len);

#endif
