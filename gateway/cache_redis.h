/*
 * cache_redis.h - the Redis connections of the cache: a kc_pool (pool.h) of
 * hiredis contexts, opened from a redis:// URL (AUTH, SELECT) with the
 * cache's Lua scripts loaded, and the call of a script by its index.
 *
 * It knows nothing of keys or views: cache.c gives it the scripts and is told
 * of every Redis failure and recovery through the pool's hooks.
 */
#ifndef KC_CACHE_REDIS_H
#define KC_CACHE_REDIS_H

#include <stdbool.h>
#include <stddef.h>

#include "pool.h"

struct redisContext;
struct redisReply;

typedef struct kc_redis kc_redis;

/* What the cache gives its connections: the scripts, and who hears of failures. */
typedef struct kc_redis_setup
{
	const char *const *scripts; /* Lua sources, loaded on every new connection */
	int			nscripts;
	void		(*on_up) (void *arg, kc_pool_state prev);
	void		(*on_down) (void *arg, kc_pool_state prev, const char *why);
	void	   *arg;
} kc_redis_setup;

/* NULL, with err filled, when url is malformed (kc_cache_parse_url) or out of memory. */
kc_redis   *kc_redis_create(const char *url, int pool_size, const kc_redis_setup *setup,
							char *err, size_t errlen);
void		kc_redis_destroy(kc_redis *r);

/*
 * A connection for one operation, or NULL when Redis is unreachable (or every
 * connection stayed busy for the I/O timeout). Give it back with
 * kc_redis_release; failed: the operation failed, Redis counts as down.
 */
struct redisContext *kc_redis_acquire(kc_redis *r, kc_pool_lease *l);
void		kc_redis_release(kc_redis *r, kc_pool_lease *l, bool failed);

/*
 * The operations below each take a connection for themselves; any failure
 * of Redis is reported like kc_redis_release(failed) does.
 */

/* Runs scripts[script] (EVALSHA, EVAL if Redis lost it); its integer reply, *ok false on failure. */
long long	kc_redis_script_int(kc_redis *r, int script, int nkeys, int nargs,
								const char **argv, const size_t *argl, bool *ok);
/*
 * Runs scripts[script] for an array of nout integers, into out (one round
 * trip whatever the number of keys); 0 ok, -1 on failure.
 */
int			kc_redis_script_ints(kc_redis *r, int script, int nkeys, int nargs,
								 const char **argv, const size_t *argl, long long *out, int nout);
/* Longest value kc_redis_mget keeps (longer ones are cut). */
#define KC_REDIS_VALUE_MAX 128
/*
 * MGET of n keys (n <= 7) into vals ("" for a missing key): the number found,
 * -1 on error.
 */
int			kc_redis_mget(kc_redis *r, int n, const char *const *keys,
						  char (*vals)[KC_REDIS_VALUE_MAX]);
/* Deletes every key matching any of patterns (SCAN + DEL); the number deleted or -1. */
long long	kc_redis_delete_matching(kc_redis *r, const char *const *patterns, int npatterns);
/* 0 when Redis answers PING, -1 otherwise. */
int			kc_redis_ping(kc_redis *r);

bool		kc_redis_up(kc_redis *r);

#endif
