/*
 * cache_local.h - the optional in-process front of the Redis cache (--local-cache).
 *
 * It keeps the views of up to N students in this process, so a hit costs no
 * Redis round trip. It is exactly as fresh as Redis for every event this
 * gateway's listener sees, because cache.c drives it from the same operations:
 *   - invalidate: the listener's kc_cache_invalidate_batch drops the student's views
 *     here right after the Redis script ran (whatever its answer), before the
 *     event is handed to any subscriber (the push);
 *   - fill: a body read from Redis or Postgres is stored only with a ticket
 *     taken before that read; any invalidation of the student (or a flush)
 *     since the ticket was taken makes the store a no-op, so a body read before
 *     an invalidation is never stored after it (the stale-set race, again);
 *   - flush: everything is dropped whenever the cache goes unsynced or synced
 *     again, because events may have been missed in between.
 * Entries also expire with the Redis TTL of the entry they came from.
 * See docs/gateway.md ("In-process cache") for what it does not see.
 */
#ifndef KC_CACHE_LOCAL_H
#define KC_CACHE_LOCAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "cache.h"

/* An immutable, reference-counted view body: shared by the cache and responses. */
typedef struct kc_body
{
	_Atomic int refs;
	long long	version;
	long long	expires_ms;		/* CLOCK_MONOTONIC ms; 0: never */
	size_t		len;
	char		data[];			/* len bytes plus a NUL */
} kc_body;

/* A body holding a copy of data, with one reference; NULL when out of memory. */
kc_body    *kc_body_new(const char *data, size_t len, long long version);
kc_body    *kc_body_ref(kc_body *b);
void		kc_body_unref(kc_body *b);

typedef struct kc_local kc_local;

/* Room for `students` students (rounded up to a power of two), in sets of four, least recently used out. */
kc_local   *kc_local_create(int students);
void		kc_local_destroy(kc_local *l);

/* The cached body of view for student, with a reference for the caller; NULL if none. */
kc_body    *kc_local_get(kc_local *l, kc_view view, const char *student, long long now_ms);
/* Taken before reading a body from Redis or Postgres; hand it to kc_local_put. */
uint64_t	kc_local_ticket(kc_local *l, const char *student);
/* Stores body (adds its own reference) unless student was invalidated since ticket. */
void		kc_local_put(kc_local *l, kc_view view, const char *student, uint64_t ticket,
						 kc_body *body);
/* Drops both views of student and voids every ticket taken for it. */
void		kc_local_invalidate(kc_local *l, const char *student);
/* Drops everything and voids every ticket. */
void		kc_local_flush(kc_local *l);

#endif
