/*
 * auth_cache.c - the table of verified tokens (see auth_cache.h).
 *
 * Sets of WAYS entries, a power of two of them, picked by the token's hash;
 * each set is guarded by one of STRIPES mutexes, held for a few comparisons
 * and copies. An entry owns a malloc'd copy of its token. Replacement within a
 * set is least recently used, by a stamp every hit refreshes.
 */
#include "auth_cache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define WAYS 4
#define STRIPES 64

typedef struct entry
{
	uint64_t	hash;
	uint64_t	secret;
	char	   *token;			/* NULL: free */
	size_t		len;
	long		exp;
	uint32_t	stamp;
	kc_principal principal;
} entry;

static struct
{
	entry	   *entries;		/* sets * WAYS; NULL: no table */
	size_t		set_mask;
	_Atomic uint32_t clock;
	pthread_mutex_t locks[STRIPES];
} table = {.locks = {[0 ... STRIPES - 1] = PTHREAD_MUTEX_INITIALIZER}};

static entry *set_of(uint64_t hash, pthread_mutex_t **lock);
static entry *find(entry *set, uint64_t hash, uint64_t secret, const char *token, size_t len);

uint64_t
kc_auth_hash(const char *s, size_t len)
{
	/* eight bytes a step: a token is a few hundred bytes, hashed on every request */
	uint64_t	h = 0x9e3779b97f4a7c15ULL ^ len;
	uint64_t	w;

	for (; len >= 8; s += 8, len -= 8)
	{
		memcpy(&w, s, 8);
		h = (h ^ w) * 0xff51afd7ed558ccdULL;
		h ^= h >> 32;
	}
	w = 0;
	memcpy(&w, s, len);
	h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
	return h ^ (h >> 29);
}

bool
kc_auth_cache_init(int tokens)
{
	size_t		sets = 1;

	kc_auth_cache_free();
	if (tokens <= 0)
		return true;
	while (sets * WAYS < (size_t) tokens)
		sets <<= 1;
	table.entries = calloc(sets * WAYS, sizeof(entry));
	if (!table.entries)
		return false;
	table.set_mask = sets - 1;
	return true;
}

void
kc_auth_cache_free(void)
{
	if (!table.entries)
		return;
	for (size_t i = 0; i < (table.set_mask + 1) * WAYS; i++)
		free(table.entries[i].token);
	free(table.entries);
	table.entries = NULL;
}

static entry *
set_of(uint64_t hash, pthread_mutex_t **lock)
{
	size_t		s = (size_t) (hash ^ (hash >> 32)) & table.set_mask;

	*lock = &table.locks[s % STRIPES];
	return &table.entries[s * WAYS];
}

static entry *
find(entry *set, uint64_t hash, uint64_t secret, const char *token, size_t len)
{
	for (int w = 0; w < WAYS; w++)
	{
		entry	   *e = &set[w];

		if (e->token && e->hash == hash && e->secret == secret && e->len == len &&
			memcmp(e->token, token, len) == 0)
			return e;
	}
	return NULL;
}

bool
kc_auth_cache_get(uint64_t secret_hash, const char *token, size_t len, long *exp, kc_principal *p)
{
	uint64_t	h;
	pthread_mutex_t *lock;
	entry	   *e;

	if (!table.entries)
		return false;
	h = kc_auth_hash(token, len);
	e = set_of(h, &lock);
	pthread_mutex_lock(lock);
	e = find(e, h, secret_hash, token, len);
	if (e)
	{
		e->stamp = atomic_fetch_add_explicit(&table.clock, 1, memory_order_relaxed);
		*exp = e->exp;
		*p = e->principal;
	}
	pthread_mutex_unlock(lock);
	return e != NULL;
}

void
kc_auth_cache_put(uint64_t secret_hash, const char *token, size_t len, long exp, const kc_principal *p)
{
	uint64_t	h;
	pthread_mutex_t *lock;
	entry	   *set;
	entry	   *victim;
	char	   *copy;

	if (!table.entries || !(copy = malloc(len)))
		return;
	memcpy(copy, token, len);
	h = kc_auth_hash(token, len);
	set = set_of(h, &lock);
	pthread_mutex_lock(lock);
	victim = find(set, h, secret_hash, token, len);
	for (int w = 0; !victim && w < WAYS; w++)
		if (!set[w].token)
			victim = &set[w];
	if (!victim)
	{
		uint32_t	now = atomic_load_explicit(&table.clock, memory_order_relaxed);

		victim = &set[0];
		for (int w = 1; w < WAYS; w++)
			if ((uint32_t) (now - set[w].stamp) > (uint32_t) (now - victim->stamp))
				victim = &set[w];
	}
	free(victim->token);
	victim->token = copy;
	victim->hash = h;
	victim->secret = secret_hash;
	victim->len = len;
	victim->exp = exp;
	victim->principal = *p;
	victim->stamp = atomic_fetch_add_explicit(&table.clock, 1, memory_order_relaxed);
	pthread_mutex_unlock(lock);
}

void
kc_auth_cache_forget(uint64_t secret_hash, const char *token, size_t len)
{
	uint64_t	h;
	pthread_mutex_t *lock;
	entry	   *e;

	if (!table.entries)
		return;
	h = kc_auth_hash(token, len);
	e = set_of(h, &lock);
	pthread_mutex_lock(lock);
	e = find(e, h, secret_hash, token, len);
	if (e)
	{
		free(e->token);
		e->token = NULL;
	}
	pthread_mutex_unlock(lock);
}
