/*
 * pool.h - the one connection pool of the gateway, for every backend
 * (Postgres in db.c, Redis in cache_redis.c).
 *
 * N slots of opaque connections. A thread checks a connection out for one
 * operation and gives it back at once; the pool mutex covers a push or a pop,
 * never the operation. Connections are opened lazily by the backend's open
 * callback; one that broke is closed and its slot opened again on a later
 * checkout. While the backend is failing, connect attempts are throttled (at
 * most one every KC_POOL_RETRY_MS), so callers fail fast instead of waiting
 * on a connect timeout per request.
 *
 * The pool also keeps the backend's state (unknown until the first connect,
 * then up or down) and tells the backend of every failure and recovery, so
 * each backend logs and reacts in its own words.
 */
#ifndef KC_POOL_H
#define KC_POOL_H

#include <stdbool.h>
#include <stddef.h>

#define KC_POOL_RETRY_MS 500

typedef struct kc_pool kc_pool;

typedef enum kc_pool_state
{
	KC_POOL_UNKNOWN = 0,		/* no connect attempted yet */
	KC_POOL_UP,					/* the last connect succeeded, no failure since */
	KC_POOL_DOWN				/* a connect or an operation failed since */
} kc_pool_state;

/* What a backend gives the pool; arg is the one given to kc_pool_create. */
typedef struct kc_pool_ops
{
	/* Opens a ready connection; NULL, with err filled, when it cannot. */
	void	   *(*open) (void *arg, char *err, size_t errlen);
	void		(*close) (void *conn);
	/* Without I/O: is a kept connection still worth using? NULL: always. */
	bool		(*usable) (void *conn);
	/* A connection opened while the state was prev (UNKNOWN or DOWN). */
	void		(*on_up) (void *arg, kc_pool_state prev);
	/* Called for every failure (a connect, or kc_pool_fail); prev: the state before. */
	void		(*on_down) (void *arg, kc_pool_state prev, const char *why);
} kc_pool_ops;

/* One checked-out connection. */
typedef struct kc_pool_lease
{
	void	   *conn;			/* NULL only after a failed kc_pool_reopen */
	int			slot;
	bool		fresh;			/* opened by this checkout or reopen */
} kc_pool_lease;

/*
 * size slots; a checkout waits at most wait_ms for a free slot. ops must
 * outlive the pool. NULL when out of memory.
 */
kc_pool    *kc_pool_create(const kc_pool_ops *ops, void *arg, int size, int wait_ms);
/* Closes every connection; no lease may be out. */
void		kc_pool_destroy(kc_pool *p);

/*
 * Takes a slot and makes sure it holds a usable connection. false (nothing
 * held) when no slot freed up within wait_ms, when reconnects are throttled,
 * or when the connect failed (reported to on_down).
 */
bool		kc_pool_checkout(kc_pool *p, kc_pool_lease *l);
/* Closes the lease's connection and opens another in its place; false as above. */
bool		kc_pool_reopen(kc_pool *p, kc_pool_lease *l);

/* Gives a connection back as it is. */
void		kc_pool_checkin(kc_pool *p, kc_pool_lease *l);
/* Gives it back broken: it is closed, the backend is not blamed. */
void		kc_pool_discard(kc_pool *p, kc_pool_lease *l);
/* Gives it back because the backend failed: closed, reported down, reconnects throttled. */
void		kc_pool_fail(kc_pool *p, kc_pool_lease *l, const char *why);

kc_pool_state kc_pool_get_state(kc_pool *p);

#endif
