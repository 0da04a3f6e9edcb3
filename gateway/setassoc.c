/*
 * setassoc.c - sizing, striped locks, least recently used and the hash of
 * the gateway's set-associative tables (see setassoc.h).
 */
#include "setassoc.h"

#include <string.h>

size_t
kc_setassoc_init(kc_setassoc *t, int entries)
{
	size_t		sets = 1;

	while (sets * KC_WAYS < (size_t) (entries > 0 ? entries : 1))
		sets <<= 1;
	t->mask = sets - 1;
	atomic_init(&t->clock, 0);
	for (int i = 0; i < KC_STRIPES; i++)
		pthread_mutex_init(&t->locks[i], NULL);
	return sets;
}

void
kc_setassoc_destroy(kc_setassoc *t)
{
	for (int i = 0; i < KC_STRIPES; i++)
		pthread_mutex_destroy(&t->locks[i]);
}

size_t
kc_setassoc_set(const kc_setassoc *t, uint64_t hash)
{
	return (size_t) (hash ^ (hash >> 32)) & t->mask;
}

pthread_mutex_t *
kc_setassoc_lock(kc_setassoc *t, size_t set)
{
	return &t->locks[set % KC_STRIPES];
}

uint32_t
kc_setassoc_stamp(kc_setassoc *t)
{
	return atomic_fetch_add_explicit(&t->clock, 1, memory_order_relaxed);
}

int
kc_setassoc_lru(kc_setassoc *t, const uint32_t stamps[KC_WAYS])
{
	uint32_t	now = atomic_load_explicit(&t->clock, memory_order_relaxed);
	int			oldest = 0;

	/* ages, not stamps, so that the clock may wrap */
	for (int w = 1; w < KC_WAYS; w++)
		if ((uint32_t) (now - stamps[w]) > (uint32_t) (now - stamps[oldest]))
			oldest = w;
	return oldest;
}

uint64_t
kc_hash(const void *data, size_t len)
{
	/* eight bytes a step: a token is a few hundred bytes, hashed on every request */
	const char *s = data;
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
