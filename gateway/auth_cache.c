/*
 * auth_cache.c - the table of verified tokens (see auth_cache.h).
 *
 * A set-associative table (setassoc.h) picked by the token's hash. An entry
 * owns a malloc'd copy of its token; every hit refreshes its use stamp.
 */
#include "auth_cache.h"

#include <stdlib.h>
#include <string.h>

#include "setassoc.h"

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
	entry	   *entries;		/* sets * KC_WAYS; NULL: no table */
	kc_setassoc shape;
} table;

/* The first entry of the set of hash, whose lock is then *lock. */
static entry *
set_of(uint64_t hash, pthread_mutex_t **lock)
{
	size_t		s = kc_setassoc_set(&table.shape, hash);

	*lock = kc_setassoc_lock(&table.shape, s);
	return &table.entries[s * KC_WAYS];
}

static entry *
find(entry *set, uint64_t hash, uint64_t secret, const char *token, size_t len)
{
	for (int w = 0; w < KC_WAYS; w++)
	{
		entry	   *e = &set[w];

		if (e->token && e->hash == hash && e->secret == secret && e->len == len &&
			memcmp(e->token, token, len) == 0)
			return e;
	}
	return NULL;
}

bool
kc_auth_cache_init(int tokens)
{
	size_t		sets;

	kc_auth_cache_free();
	if (tokens <= 0)
		return true;
	sets = kc_setassoc_init(&table.shape, tokens);
	table.entries = calloc(sets * KC_WAYS, sizeof(entry));
	if (!table.entries)
	{
		kc_setassoc_destroy(&table.shape);
		return false;
	}
	return true;
}

void
kc_auth_cache_free(void)
{
	if (!table.entries)
		return;
	for (size_t i = 0; i < (table.shape.mask + 1) * KC_WAYS; i++)
		free(table.entries[i].token);
	free(table.entries);
	table.entries = NULL;
	kc_setassoc_destroy(&table.shape);
}

bool
kc_auth_cache_get(uint64_t secret_hash, const char *token, size_t len, long *exp, kc_principal *p)
{
	uint64_t	h;
	pthread_mutex_t *lock;
	entry	   *e;

	if (!table.entries)
		return false;
	h = kc_hash(token, len);
	e = set_of(h, &lock);
	pthread_mutex_lock(lock);
	e = find(e, h, secret_hash, token, len);
	if (e)
	{
		e->stamp = kc_setassoc_stamp(&table.shape);
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
	h = kc_hash(token, len);
	set = set_of(h, &lock);
	pthread_mutex_lock(lock);
	victim = find(set, h, secret_hash, token, len);
	for (int w = 0; !victim && w < KC_WAYS; w++)
		if (!set[w].token)
			victim = &set[w];
	if (!victim)
	{
		uint32_t	stamps[KC_WAYS];

		for (int w = 0; w < KC_WAYS; w++)
			stamps[w] = set[w].stamp;
		victim = &set[kc_setassoc_lru(&table.shape, stamps)];
	}
	free(victim->token);
	victim->token = copy;
	victim->hash = h;
	victim->secret = secret_hash;
	victim->len = len;
	victim->exp = exp;
	victim->principal = *p;
	victim->stamp = kc_setassoc_stamp(&table.shape);
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
	h = kc_hash(token, len);
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
