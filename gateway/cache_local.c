/*
 * cache_local.c - the in-process front of the Redis cache (see cache_local.h
 * for the freshness rules; cache.c is its only caller besides the routes).
 *
 * A direct-mapped table of buckets, one student per bucket, both views side by
 * side. Each bucket has a generation that every invalidation of a student
 * mapped to it (and every flush) increments; a ticket is that generation, so a
 * store is refused after any invalidation that could concern its student.
 * Buckets are guarded by striped mutexes held for a few loads and stores only.
 */
#include "cache_local.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define STRIPES 64

typedef struct bucket
{
	char		student[37];	/* empty: free */
	kc_body    *views[2];
	uint64_t	gen;
} bucket;

struct kc_local
{
	size_t		mask;			/* buckets - 1 */
	bucket	   *buckets;
	pthread_mutex_t locks[STRIPES];
};

kc_body *
kc_body_new(const char *data, size_t len, long long version)
{
	kc_body    *b = malloc(sizeof(*b) + len + 1);

	if (!b)
		return NULL;
	atomic_init(&b->refs, 1);
	b->version = version;
	b->expires_ms = 0;
	b->len = len;
	memcpy(b->data, data, len);
	b->data[len] = '\0';
	return b;
}

kc_body *
kc_body_ref(kc_body *b)
{
	atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
	return b;
}

void
kc_body_unref(kc_body *b)
{
	if (b && atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1)
		free(b);
}

kc_local *
kc_local_create(int students)
{
	kc_local   *l = calloc(1, sizeof(*l));
	size_t		n = 1;

	if (!l)
		return NULL;
	while (n < (size_t) students)
		n <<= 1;
	l->buckets = calloc(n, sizeof(bucket));
	if (!l->buckets)
	{
		free(l);
		return NULL;
	}
	l->mask = n - 1;
	for (int i = 0; i < STRIPES; i++)
		pthread_mutex_init(&l->locks[i], NULL);
	return l;
}

static void
clear_bucket(bucket *b)
{
	for (int v = 0; v < 2; v++)
	{
		kc_body_unref(b->views[v]);
		b->views[v] = NULL;
	}
	b->student[0] = '\0';
}

void
kc_local_destroy(kc_local *l)
{
	if (!l)
		return;
	for (size_t i = 0; i <= l->mask; i++)
		clear_bucket(&l->buckets[i]);
	for (int i = 0; i < STRIPES; i++)
		pthread_mutex_destroy(&l->locks[i]);
	free(l->buckets);
	free(l);
}

static size_t
bucket_of(const kc_local *l, const char *student)
{
	uint64_t	h = 1469598103934665603ULL;

	for (const char *s = student; *s; s++)
	{
		h ^= (unsigned char) *s;
		h *= 1099511628211ULL;
	}
	return (size_t) (h ^ (h >> 29)) & l->mask;
}

static pthread_mutex_t *
lock_of(kc_local *l, size_t i)
{
	return &l->locks[i % STRIPES];
}

kc_body *
kc_local_get(kc_local *l, kc_view view, const char *student, long long now_ms)
{
	size_t		i = bucket_of(l, student);
	bucket	   *b = &l->buckets[i];
	kc_body    *body = NULL;

	pthread_mutex_lock(lock_of(l, i));
	if (b->views[view] && strcmp(b->student, student) == 0)
	{
		if (b->views[view]->expires_ms && b->views[view]->expires_ms <= now_ms)
		{
			kc_body_unref(b->views[view]);
			b->views[view] = NULL;
		}
		else
			body = kc_body_ref(b->views[view]);
	}
	pthread_mutex_unlock(lock_of(l, i));
	return body;
}

uint64_t
kc_local_ticket(kc_local *l, const char *student)
{
	size_t		i = bucket_of(l, student);
	uint64_t	gen;

	pthread_mutex_lock(lock_of(l, i));
	gen = l->buckets[i].gen;
	pthread_mutex_unlock(lock_of(l, i));
	return gen;
}

void
kc_local_put(kc_local *l, kc_view view, const char *student, uint64_t ticket, kc_body *body)
{
	size_t		i = bucket_of(l, student);
	bucket	   *b = &l->buckets[i];

	pthread_mutex_lock(lock_of(l, i));
	if (b->gen == ticket)
	{
		if (strcmp(b->student, student) != 0)
		{
			/* another student lived here: evict it (its tickets stay valid, harmlessly) */
			clear_bucket(b);
			memcpy(b->student, student, sizeof(b->student));
		}
		if (!b->views[view] || b->views[view]->version <= body->version)
		{
			kc_body_unref(b->views[view]);
			b->views[view] = kc_body_ref(body);
		}
	}
	pthread_mutex_unlock(lock_of(l, i));
}

void
kc_local_invalidate(kc_local *l, const char *student)
{
	size_t		i = bucket_of(l, student);
	bucket	   *b = &l->buckets[i];

	pthread_mutex_lock(lock_of(l, i));
	b->gen++;
	if (strcmp(b->student, student) == 0)
		clear_bucket(b);
	pthread_mutex_unlock(lock_of(l, i));
}

void
kc_local_flush(kc_local *l)
{
	for (int s = 0; s < STRIPES; s++)
	{
		pthread_mutex_lock(&l->locks[s]);
		for (size_t i = (size_t) s; i <= l->mask; i += STRIPES)
		{
			l->buckets[i].gen++;
			clear_bucket(&l->buckets[i]);
		}
		pthread_mutex_unlock(&l->locks[s]);
	}
}
