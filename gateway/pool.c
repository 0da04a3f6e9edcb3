/*
 * pool.c - the connection pool shared by Postgres and Redis (see pool.h).
 *
 * Free slots are a stack under one mutex; a thread waits on a condition
 * variable (CLOCK_MONOTONIC, bounded) only when every slot is out. The
 * connection of a slot is touched only by the thread holding the slot, so
 * opening, checking and closing happen outside the lock. The state and the
 * throttle are atomics, read on every checkout without the lock.
 */
#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "clock.h"

struct kc_pool
{
	const kc_pool_ops *ops;
	void	   *arg;
	int			size;
	int			wait_ms;
	void	  **conns;			/* slot i: NULL until opened */
	int		   *free_slots;		/* stack of slot numbers */
	int			n_free;
	pthread_mutex_t lock;
	pthread_cond_t available;
	_Atomic long long retry_at_ms;	/* no connect attempt before then */
	_Atomic int state;			/* a kc_pool_state */
};

static bool take_slot(kc_pool *p, int *slot);
static void put_slot(kc_pool *p, int slot);
static bool ensure_open(kc_pool *p, kc_pool_lease *l);
static void close_conn(kc_pool *p, kc_pool_lease *l);
static void report_failure(kc_pool *p, const char *why);

kc_pool *
kc_pool_create(const kc_pool_ops *ops, void *arg, int size, int wait_ms)
{
	kc_pool    *p = calloc(1, sizeof(*p));
	pthread_condattr_t attr;

	if (!p)
		return NULL;
	p->ops = ops;
	p->arg = arg;
	p->size = size;
	p->wait_ms = wait_ms;
	p->conns = calloc((size_t) size, sizeof(void *));
	p->free_slots = calloc((size_t) size, sizeof(int));
	if (!p->conns || !p->free_slots)
	{
		free(p->conns);
		free(p->free_slots);
		free(p);
		return NULL;
	}
	for (int i = 0; i < size; i++)
		p->free_slots[i] = i;
	p->n_free = size;
	pthread_mutex_init(&p->lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&p->available, &attr);
	pthread_condattr_destroy(&attr);
	atomic_init(&p->state, KC_POOL_UNKNOWN);
	return p;
}

void
kc_pool_destroy(kc_pool *p)
{
	if (!p)
		return;
	for (int i = 0; i < p->size; i++)
		if (p->conns[i])
			p->ops->close(p->conns[i]);
	pthread_cond_destroy(&p->available);
	pthread_mutex_destroy(&p->lock);
	free(p->conns);
	free(p->free_slots);
	free(p);
}

kc_pool_state
kc_pool_get_state(kc_pool *p)
{
	return (kc_pool_state) atomic_load(&p->state);
}

/* Pops a free slot, waiting up to wait_ms for one; false on timeout. */
static bool
take_slot(kc_pool *p, int *slot)
{
	struct timespec deadline;
	bool		timed_out = false;

	pthread_mutex_lock(&p->lock);
	if (p->n_free == 0)
	{
		clock_gettime(CLOCK_MONOTONIC, &deadline);
		deadline.tv_sec += p->wait_ms / 1000;
		deadline.tv_nsec += (long) (p->wait_ms % 1000) * 1000000;
		if (deadline.tv_nsec >= 1000000000)
		{
			deadline.tv_sec++;
			deadline.tv_nsec -= 1000000000;
		}
		while (p->n_free == 0 && !timed_out)
			timed_out = pthread_cond_timedwait(&p->available, &p->lock, &deadline) == ETIMEDOUT;
	}
	if (p->n_free > 0)
	{
		*slot = p->free_slots[--p->n_free];
		timed_out = false;
	}
	pthread_mutex_unlock(&p->lock);
	return !timed_out;
}

static void
put_slot(kc_pool *p, int slot)
{
	pthread_mutex_lock(&p->lock);
	p->free_slots[p->n_free++] = slot;
	pthread_cond_signal(&p->available);
	pthread_mutex_unlock(&p->lock);
}

/* Throttles reconnects and tells the backend. */
static void
report_failure(kc_pool *p, const char *why)
{
	kc_pool_state prev;

	atomic_store(&p->retry_at_ms, kc_monotonic_ms() + KC_POOL_RETRY_MS);
	prev = (kc_pool_state) atomic_exchange(&p->state, KC_POOL_DOWN);
	p->ops->on_down(p->arg, prev, why);
}

static void
close_conn(kc_pool *p, kc_pool_lease *l)
{
	if (l->conn)
		p->ops->close(l->conn);
	l->conn = NULL;
	p->conns[l->slot] = NULL;
}

/* Leaves a usable connection in the lease's slot, opening one if needed. */
static bool
ensure_open(kc_pool *p, kc_pool_lease *l)
{
	char		err[512];
	kc_pool_state prev;

	l->conn = p->conns[l->slot];
	l->fresh = false;
	if (l->conn && (!p->ops->usable || p->ops->usable(l->conn)))
		return true;
	close_conn(p, l);
	if (kc_monotonic_ms() < atomic_load(&p->retry_at_ms))
		return false;
	l->conn = p->ops->open(p->arg, err, sizeof(err));
	if (!l->conn)
	{
		report_failure(p, err);
		return false;
	}
	p->conns[l->slot] = l->conn;
	l->fresh = true;
	prev = (kc_pool_state) atomic_exchange(&p->state, KC_POOL_UP);
	if (prev != KC_POOL_UP)
		p->ops->on_up(p->arg, prev);
	return true;
}

bool
kc_pool_checkout(kc_pool *p, kc_pool_lease *l)
{
	l->conn = NULL;
	if (!take_slot(p, &l->slot))
		return false;
	if (ensure_open(p, l))
		return true;
	put_slot(p, l->slot);
	return false;
}

bool
kc_pool_reopen(kc_pool *p, kc_pool_lease *l)
{
	close_conn(p, l);
	return ensure_open(p, l);
}

void
kc_pool_checkin(kc_pool *p, kc_pool_lease *l)
{
	put_slot(p, l->slot);
}

void
kc_pool_discard(kc_pool *p, kc_pool_lease *l)
{
	close_conn(p, l);
	put_slot(p, l->slot);
}

void
kc_pool_fail(kc_pool *p, kc_pool_lease *l, const char *why)
{
	close_conn(p, l);
	report_failure(p, why);
	put_slot(p, l->slot);
}
