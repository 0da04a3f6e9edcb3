/*
 * setassoc.h - the layout shared by the gateway's two in-process tables
 * (cache_local.c: views by student; auth_cache.c: verified tokens).
 *
 * Sets of KC_WAYS entries, a power of two of them, picked by the key's hash;
 * each set is guarded by one of KC_STRIPES mutexes, held for a few loads and
 * stores; within a full set the least recently used entry makes room, told by
 * use stamps from one clock. The tables keep their own entries; this holds
 * the sizing, the locks, the clock and the hash.
 */
#ifndef KC_SETASSOC_H
#define KC_SETASSOC_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define KC_WAYS 4
#define KC_STRIPES 64

typedef struct kc_setassoc
{
	size_t		mask;			/* sets - 1 */
	_Atomic uint32_t clock;		/* use stamps */
	pthread_mutex_t locks[KC_STRIPES];
} kc_setassoc;

/* Sizes t for about `entries` entries and sets up its locks; returns the number of sets. */
size_t		kc_setassoc_init(kc_setassoc *t, int entries);
void		kc_setassoc_destroy(kc_setassoc *t);

/* The set a key of this hash lives in, and the mutex that guards it. */
size_t		kc_setassoc_set(const kc_setassoc *t, uint64_t hash);
pthread_mutex_t *kc_setassoc_lock(kc_setassoc *t, size_t set);

/* A stamp for an entry just used. */
uint32_t	kc_setassoc_stamp(kc_setassoc *t);
/* Which of a full set's KC_WAYS entries, by their stamps, was used least recently. */
int			kc_setassoc_lru(kc_setassoc *t, const uint32_t stamps[KC_WAYS]);

/* A 64-bit hash of len bytes: spreads keys over sets and buckets; equality is checked on the key. */
uint64_t	kc_hash(const void *data, size_t len);

#endif
