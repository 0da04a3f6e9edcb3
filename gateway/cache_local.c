/*
 * cache_local.c - the in-process front of the Redis cache (see cache_local.h
 * for the freshness rules; cache.c is its only caller besides the routes).
 *
 * A set-associative table (setassoc.h) of students, both views of a student
 * side by side, picked by the student's hash; within a set the least recently
 * used student makes room for a new one, so a working set up to the
 * configured size stays in memory instead of two students thrashing one slot.
 * Each set has a generation that every invalidation of a student mapped to it
 * (and every flush) increments; a ticket is that generation, so a store is
 * refused after any invalidation that could concern its student.
 */
#include "cache_local.h"

#include <stdlib.h>
#include <string.h>

#include "setassoc.h"

typedef struct way
{
	char		student[37];	/* empty: free */
	uint32_t	stamp;			/* last use, for the least recently used */
	kc_body    *views[2];
} way;

typedef struct set
{
	uint64_t	gen;
	way			ways[KC_WAYS];
} set;

struct kc_local
{
	set		   *sets;
	kc_setassoc shape;
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

	if (!l)
		return NULL;
	l->sets = calloc(kc_setassoc_init(&l->shape, students), sizeof(set));
	if (!l->sets)
	{
		kc_setassoc_destroy(&l->shape);
		free(l);
		return NULL;
	}
	return l;
}

static void
clear_way(way *w)
{
	for (int v = 0; v < 2; v++)
	{
		kc_body_unref(w->views[v]);
		w->views[v] = NULL;
	}
	w->student[0] = '\0';
}

void
kc_local_destroy(kc_local *l)
{
	if (!l)
		return;
	for (size_t i = 0; i <= l->shape.mask; i++)
		for (int w = 0; w < KC_WAYS; w++)
			clear_way(&l->sets[i].ways[w]);
	kc_setassoc_destroy(&l->shape);
	free(l->sets);
	free(l);
}

static size_t
set_of(const kc_local *l, const char *student)
{
	return kc_setassoc_set(&l->shape, kc_hash(student, strlen(student)));
}

static pthread_mutex_t *
lock_of(kc_local *l, size_t i)
{
	return kc_setassoc_lock(&l->shape, i);
}

/* The way holding student in s, or NULL. */
static way *
way_of(set *s, const char *student)
{
	for (int w = 0; w < KC_WAYS; w++)
		if (strcmp(s->ways[w].student, student) == 0)
			return &s->ways[w];
	return NULL;
}

kc_body *
kc_local_get(kc_local *l, kc_view view, const char *student, long long now_ms)
{
	size_t		i = set_of(l, student);
	way		   *w;
	kc_body    *body = NULL;

	pthread_mutex_lock(lock_of(l, i));
	w = way_of(&l->sets[i], student);
	if (w && w->views[view])
	{
		if (w->views[view]->expires_ms && w->views[view]->expires_ms <= now_ms)
		{
			kc_body_unref(w->views[view]);
			w->views[view] = NULL;
		}
		else
		{
			body = kc_body_ref(w->views[view]);
			w->stamp = kc_setassoc_stamp(&l->shape);
		}
	}
	pthread_mutex_unlock(lock_of(l, i));
	return body;
}

uint64_t
kc_local_ticket(kc_local *l, const char *student)
{
	size_t		i = set_of(l, student);
	uint64_t	gen;

	pthread_mutex_lock(lock_of(l, i));
	gen = l->sets[i].gen;
	pthread_mutex_unlock(lock_of(l, i));
	return gen;
}

/* The way student may take in s: its own, a free one, or the least recently used (evicted). */
static way *
way_for(kc_local *l, set *s, const char *student)
{
	way		   *w = way_of(s, student);

	if (w)
		return w;
	for (int i = 0; i < KC_WAYS; i++)
		if (!s->ways[i].student[0])
			w = &s->ways[i];
	if (!w)
	{
		uint32_t	stamps[KC_WAYS];

		for (int i = 0; i < KC_WAYS; i++)
			stamps[i] = s->ways[i].stamp;
		w = &s->ways[kc_setassoc_lru(&l->shape, stamps)];
		/* another student lived here: evict it (its tickets stay valid, harmlessly) */
		clear_way(w);
	}
	memcpy(w->student, student, sizeof(w->student));
	return w;
}

void
kc_local_put(kc_local *l, kc_view view, const char *student, uint64_t ticket, kc_body *body)
{
	size_t		i = set_of(l, student);
	set		   *s = &l->sets[i];

	pthread_mutex_lock(lock_of(l, i));
	if (s->gen == ticket)
	{
		way		   *w = way_for(l, s, student);

		if (!w->views[view] || w->views[view]->version <= body->version)
		{
			kc_body_unref(w->views[view]);
			w->views[view] = kc_body_ref(body);
		}
		w->stamp = kc_setassoc_stamp(&l->shape);
	}
	pthread_mutex_unlock(lock_of(l, i));
}

void
kc_local_invalidate(kc_local *l, const char *student)
{
	size_t		i = set_of(l, student);
	way		   *w;

	pthread_mutex_lock(lock_of(l, i));
	l->sets[i].gen++;
	w = way_of(&l->sets[i], student);
	if (w)
		clear_way(w);
	pthread_mutex_unlock(lock_of(l, i));
}

void
kc_local_flush(kc_local *l)
{
	for (int s = 0; s < KC_STRIPES; s++)
	{
		pthread_mutex_lock(&l->shape.locks[s]);
		for (size_t i = (size_t) s; i <= l->shape.mask; i += KC_STRIPES)
		{
			l->sets[i].gen++;
			for (int w = 0; w < KC_WAYS; w++)
				clear_way(&l->sets[i].ways[w]);
		}
		pthread_mutex_unlock(&l->shape.locks[s]);
	}
}
