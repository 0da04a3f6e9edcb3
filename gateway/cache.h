/*
 * cache.h - the Redis side of the cache protocol (docs/design.md §6).
 *
 *   student:home:{id}, student:learning:{id}   hash {v: version, b: body}, TTL
 *   student:ver:{id}                           the fence: highest version invalidated
 *   kc:gateway:watermark                       last event id whose invalidation is applied
 *   kc:gateway:watermark:event                 "position identity" of the event at it
 *
 * Invalidate and fill are Lua scripts, so each is atomic in Redis: an
 * invalidation raises the fence and deletes both views in one step, and a fill
 * is refused when the fence is above the version its body was read at.
 *
 * The cache is "usable" for requests only while Redis answers and the listener
 * has replayed every event since the watermark (kc_cache_set_synced); otherwise
 * requests bypass it and read Postgres.
 */
#ifndef KC_CACHE_H
#define KC_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct kc_cache kc_cache;
struct kc_body;

typedef enum kc_view
{
	KC_VIEW_HOME = 0,
	KC_VIEW_LEARNING
} kc_view;

typedef enum kc_get_result
{
	KC_GET_HIT,
	KC_GET_MISS,
	KC_GET_TOO_OLD,				/* cached, but older than the request needs: a miss */
	KC_GET_ERROR				/* Redis failed: the caller bypasses */
} kc_get_result;

/* pool_size connections to url (cache_redis.c); NULL, with err filled, on a bad URL. */
kc_cache   *kc_cache_create(const char *url, int pool_size, int ttl, char *err, size_t errlen);
void		kc_cache_destroy(kc_cache *c);

/* Parses redis://[[user]:password@]host[:port][/db]; false when malformed (cache_redis.c). */
bool		kc_cache_parse_url(const char *url, char *host, size_t hostlen, int *port,
							   char *password, size_t pwlen, int *db);

void		kc_cache_key(char *buf, size_t len, kc_view view, const char *student);

bool		kc_cache_usable(kc_cache *c);
bool		kc_cache_redis_up(kc_cache *c);
/* The listener's view: an epoch that changes whenever Redis is seen failing. */
unsigned long kc_cache_down_epoch(kc_cache *c);
/* Marks the cache synced unless Redis failed since epoch was read. */
bool		kc_cache_set_synced(kc_cache *c, unsigned long epoch);
void		kc_cache_set_unsynced(kc_cache *c);

/* Keeps up to `students` students' views in process too (cache_local.h); false: out of memory. */
bool		kc_cache_enable_local(kc_cache *c, int students);

/*
 * The request path. HIT: *body holds a reference (kc_body_unref it), from this
 * process (*local_hit) or from Redis, at version min_version or later. MISS, or
 * TOO_OLD (what this process or Redis holds is older than min_version): read the
 * view from Postgres, then hand it to kc_cache_store with *ticket. ERROR: Redis
 * failed, bypass.
 */
kc_get_result kc_cache_lookup(kc_cache *c, kc_view view, const char *student,
							  long long min_version, struct kc_body **body, uint64_t *ticket,
							  bool *local_hit);
/*
 * Who read a body being stored: the primary, or a replica that may lag. With
 * no fence for the student in Redis a replica's body is refused and a
 * primary's sets the fence to its version.
 */
typedef enum
{
	KC_FILL_PRIMARY,
	KC_FILL_REPLICA
} kc_fill_source;

/* kc_cache_fill of body, kept in process too when stored; same answers as kc_cache_fill. */
int			kc_cache_store(kc_cache *c, kc_view view, const char *student, uint64_t ticket,
						   struct kc_body *body, kc_fill_source source);

/* 1 stored, 0 refused by the fence (or a newer entry, or no fence for a replica), -1 Redis error. */
int			kc_cache_fill(kc_cache *c, kc_view view, const char *student,
						  long long version, const char *body, size_t len, kc_fill_source source);
/* One event's invalidation: its student, and the version it made. */
typedef struct kc_invalidation
{
	const char *student;
	long long	version;
} kc_invalidation;

/*
 * For each of the n events of inv, in order: raises the fence of its student
 * to its version and deletes both views, atomically; all n in one Redis round
 * trip, and in this process's cache too. deleted[i] is -1 when the fence was
 * already at or above the version (nothing to do), else the bit mask of the
 * views that existed (1 home, 2 learning). 0 ok, -1 on a Redis error (the
 * in-process cache is invalidated all the same).
 */
int			kc_cache_invalidate_batch(kc_cache *c, int n, const kc_invalidation *inv, int *deleted);
/*
 * This process's cache only: drops the student's views kept in process and
 * voids the tickets taken for them (a child of a gateway of several
 * processes, handed an event that the listener process invalidated in Redis).
 */
void		kc_cache_invalidate_local(kc_cache *c, const char *student);
/*
 * 1 found (*wm set), 0 absent, -1 error. The identity of an event at or below
 * the watermark (which event_log held at *event_pos, see catchup.c) is copied
 * into ident, or *event_pos is 0 and ident "" when Redis has none (written by
 * a gateway that did not keep it).
 */
int			kc_cache_get_watermark(kc_cache *c, long long *wm, long long *event_pos,
								   char *ident, size_t len);
/*
 * Raises the watermark to wm (never lowers it), and keeps ident (NULL or "":
 * unknown) as the identity of the event at wm; 0 ok, -1 error.
 */
int			kc_cache_set_watermark(kc_cache *c, long long wm, const char *ident);
/* Sets the watermark to wm, lower than it was too (the log was rewound); 0 ok, -1 error. */
int			kc_cache_reset_watermark(kc_cache *c, long long wm, const char *ident);
/* Deletes every cached view (not the fences), in Redis and in this process; number deleted in Redis or -1. */
long long	kc_cache_purge_views(kc_cache *c);
/* 0 when Redis answers PING, -1 otherwise. */
int			kc_cache_ping(kc_cache *c);

#endif
