/*
 * cache.c - the cache protocol of docs/design.md §6 on Redis: keys, the
 * atomic Lua scripts (fence, fill, watermark), the request path
 * (lookup/store) and whether the cache may be used at all (synced state).
 * The connections are cache_redis.c's.
 *
 * Every failure of Redis marks the cache unsynced: requests then bypass Redis
 * until the listener has reconnected and replayed the events it may have
 * missed (see listen.c).
 *
 * With --local-cache the views also live in this process (cache_local.c):
 * kc_cache_lookup and kc_cache_store keep it in step with Redis, and every
 * invalidation, loss of sync and resync passes through here, so it can never
 * serve what Redis would no longer serve.
 */
#include "cache.h"

#include <hiredis/hiredis.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache_local.h"
#include "cache_redis.h"
#include "clock.h"
#include "log.h"
#include "metrics.h"

#define WATERMARK_KEY "kc:gateway:watermark"
#define WATERMARK_EVENT_KEY "kc:gateway:watermark:event"

/*
 * A batch of events, in log order. KEYS: fence, home, learning of each event
 * in turn. ARGV: fence ttl, then each event's version. Returns one integer per
 * event: -1 when the fence already covered its version, else a bit mask of
 * the views that existed (1 home, 2 learning). One call for the batch: one
 * round trip, and each invalidation atomic as the whole is.
 */
static const char invalidate_lua[] =
	"local out = {}\n"
	"for i = 1, #ARGV - 1 do\n"
	"  local k = 3 * (i - 1)\n"
	"  local f = tonumber(redis.call('GET', KEYS[k + 1]) or '-1')\n"
	"  local v = tonumber(ARGV[i + 1])\n"
	"  if f >= v then\n"
	"    out[i] = -1\n"
	"  else\n"
	"    redis.call('SET', KEYS[k + 1], ARGV[i + 1], 'EX', ARGV[1])\n"
	"    out[i] = redis.call('DEL', KEYS[k + 2]) + 2 * redis.call('DEL', KEYS[k + 3])\n"
	"  end\n"
	"end\n"
	"return out\n";

/*
 * KEYS: fence, view key. ARGV: version, body, ttl, source, fence ttl.
 * Without a fence (Redis restarted, flushed or evicted it) a replica's body is
 * refused, since nothing tells how far behind the replica is; a primary's
 * body is stored and sets the fence to its version, after which replicas may
 * fill again.
 */
static const char fill_lua[] =
	"local f = redis.call('GET', KEYS[1])\n"
	"local v = tonumber(ARGV[1])\n"
	"if f then\n"
	"  if tonumber(f) > v then return 0 end\n"
	"elseif ARGV[4] == 'replica' then\n"
	"  return 0\n"
	"else\n"
	"  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[5])\n"
	"end\n"
	"local cur = redis.call('HGET', KEYS[2], 'v')\n"
	"if cur and tonumber(cur) > v then return 0 end\n"
	"redis.call('HSET', KEYS[2], 'v', ARGV[1], 'b', ARGV[2])\n"
	"redis.call('EXPIRE', KEYS[2], ARGV[3])\n"
	"return 1\n";

/*
 * KEYS: watermark, its event. ARGV: position, identity ("" unknown). Raises
 * the watermark only; the event key ("position identity") is written with it,
 * in the same step, so it names the watermark's position unless a gateway
 * that does not know the key (before 0.2.0) raised the watermark alone.
 */
static const char watermark_lua[] =
	"local w = tonumber(redis.call('GET', KEYS[1]) or '-1')\n"
	"local p = tonumber(ARGV[1])\n"
	"if p > w then redis.call('SET', KEYS[1], ARGV[1]) w = p end\n"
	"if p == w and ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[1] .. ' ' .. ARGV[2]) end\n"
	"return 1\n";

enum
{
	SCRIPT_INVALIDATE, SCRIPT_FILL, SCRIPT_WATERMARK, N_SCRIPTS
};
static const char *const script_src[N_SCRIPTS] = {invalidate_lua, fill_lua, watermark_lua};

struct kc_cache
{
	kc_redis   *redis;
	int			ttl;
	_Atomic bool synced;
	_Atomic unsigned long down_epoch;
	kc_local   *local;			/* NULL: no in-process cache */
};

static void on_redis_up(void *arg, kc_pool_state prev);
static void on_redis_down(void *arg, kc_pool_state prev, const char *why);
static kc_get_result redis_get_body(kc_cache *c, const char *key, kc_body **body);

void
kc_cache_key(char *buf, size_t len, kc_view view, const char *student)
{
	snprintf(buf, len, "student:%s:%s", view == KC_VIEW_HOME ? "home" : "learning", student);
}

kc_cache *
kc_cache_create(const char *url, int pool_size, int ttl, char *err, size_t errlen)
{
	kc_cache   *c = calloc(1, sizeof(*c));
	kc_redis_setup setup = {script_src, N_SCRIPTS, on_redis_up, on_redis_down, c};

	if (!c)
	{
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	c->ttl = ttl;
	c->redis = kc_redis_create(url, pool_size, &setup, err, errlen);
	if (!c->redis)
	{
		free(c);
		return NULL;
	}
	return c;
}

void
kc_cache_destroy(kc_cache *c)
{
	if (!c)
		return;
	kc_redis_destroy(c->redis);
	kc_local_destroy(c->local);
	free(c);
}

bool
kc_cache_enable_local(kc_cache *c, int students)
{
	if (students <= 0)
		return true;
	c->local = kc_local_create(students);
	return c->local != NULL;
}

bool
kc_cache_usable(kc_cache *c)
{
	return atomic_load(&c->synced);
}

bool
kc_cache_redis_up(kc_cache *c)
{
	return kc_redis_up(c->redis);
}

unsigned long
kc_cache_down_epoch(kc_cache *c)
{
	return atomic_load(&c->down_epoch);
}

bool
kc_cache_set_synced(kc_cache *c, unsigned long epoch)
{
	/* events may have been missed while unsynced: nothing kept from before may be served */
	if (c->local)
		kc_local_flush(c->local);
	atomic_store(&c->synced, true);
	/* a failure seen after the caller read epoch wins over this call */
	if (atomic_load(&c->down_epoch) != epoch)
	{
		atomic_store(&c->synced, false);
		return false;
	}
	return true;
}

void
kc_cache_set_unsynced(kc_cache *c)
{
	atomic_store(&c->synced, false);
	if (c->local)
		kc_local_flush(c->local);
}

static void
on_redis_up(void *arg, kc_pool_state prev)
{
	kc_logf(KC_LOG_INFO, "redis reachable");
	if (prev == KC_POOL_DOWN)
		kc_metrics_add(KC_M_REDIS_RECONNECTS, 1);
}

/* Every Redis failure: requests bypass until the listener resyncs. */
static void
on_redis_down(void *arg, kc_pool_state prev, const char *why)
{
	kc_cache   *c = arg;

	atomic_fetch_add(&c->down_epoch, 1);
	atomic_store(&c->synced, false);
	if (c->local)
		kc_local_flush(c->local);
	if (prev == KC_POOL_UP)
	{
		kc_logline	l;

		kc_log_begin(&l, KC_LOG_WARN, "redis unavailable, serving from postgres");
		kc_log_str(&l, "error", why);
		kc_log_end(&l);
	}
}

/*
 * HMGET v b, plus PTTL in the same round trip when the in-process cache needs
 * the entry's remaining life. On HIT *body is a new kc_body.
 */
static kc_get_result
redis_get_body(kc_cache *c, const char *key, kc_body **body)
{
	kc_pool_lease lease;
	redisContext *ctx = kc_redis_acquire(c->redis, &lease);
	redisReply *r = NULL;
	redisReply *ttl = NULL;
	kc_get_result res = KC_GET_ERROR;
	bool		failed = true;	/* Redis failed, as opposed to out of memory */

	if (!ctx)
		return KC_GET_ERROR;
	if (redisAppendCommand(ctx, "HMGET %s v b", key) != REDIS_OK ||
		(c->local && redisAppendCommand(ctx, "PTTL %s", key) != REDIS_OK) ||
		redisGetReply(ctx, (void **) &r) != REDIS_OK ||
		(c->local && redisGetReply(ctx, (void **) &ttl) != REDIS_OK) ||
		r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
		(ttl && ttl->type != REDIS_REPLY_INTEGER))
		goto done;
	failed = false;
	res = KC_GET_MISS;
	if (r->element[0]->type == REDIS_REPLY_STRING && r->element[1]->type == REDIS_REPLY_STRING)
	{
		*body = kc_body_new(r->element[1]->str, r->element[1]->len,
							strtoll(r->element[0]->str, NULL, 10));
		if (!*body)
			res = KC_GET_ERROR;
		else
		{
			/* -1 (no TTL) cannot happen for a filled view; treat it like the configured TTL */
			long long	left = ttl && ttl->integer >= 0 ? ttl->integer : (long long) c->ttl * 1000;

			(*body)->expires_ms = kc_monotonic_ms() + left;
			res = KC_GET_HIT;
		}
	}
done:
	if (r)
		freeReplyObject(r);
	if (ttl)
		freeReplyObject(ttl);
	kc_redis_release(c->redis, &lease, failed);
	return res;
}

kc_get_result
kc_cache_lookup(kc_cache *c, kc_view view, const char *student, long long min_version,
				kc_body **body, uint64_t *ticket, bool *local_hit)
{
	char		key[128];
	kc_get_result res;
	bool		too_old = false;

	*body = NULL;
	*ticket = 0;
	*local_hit = false;
	if (c->local)
	{
		*body = kc_local_get(c->local, view, student, kc_monotonic_ms());
		if (*body && (*body)->version >= min_version)
		{
			*local_hit = true;
			return KC_GET_HIT;
		}
		/* older than the client already saw pushed: this gateway's listener is behind */
		too_old = *body != NULL;
		kc_body_unref(*body);
		*body = NULL;
		*ticket = kc_local_ticket(c->local, student);
	}
	kc_cache_key(key, sizeof(key), view, student);
	res = redis_get_body(c, key, body);
	if (res == KC_GET_HIT && (*body)->version < min_version)
	{
		kc_body_unref(*body);
		*body = NULL;
		return KC_GET_TOO_OLD;
	}
	if (res == KC_GET_HIT && c->local)
		kc_local_put(c->local, view, student, *ticket, *body);
	return res == KC_GET_MISS && too_old ? KC_GET_TOO_OLD : res;
}

/* A student's fence must outlive any entry and any slow reader by far. */
static int
fence_ttl(const kc_cache *c)
{
	return c->ttl + 86400;
}

int
kc_cache_store(kc_cache *c, kc_view view, const char *student, uint64_t ticket, kc_body *body,
			   kc_fill_source source)
{
	int			stored = kc_cache_fill(c, view, student, body->version, body->data, body->len, source);

	if (stored == 1 && c->local)
	{
		body->expires_ms = kc_monotonic_ms() + (long long) c->ttl * 1000;
		kc_local_put(c->local, view, student, ticket, body);
	}
	return stored;
}

int
kc_cache_fill(kc_cache *c, kc_view view, const char *student,
			  long long version, const char *body, size_t len, kc_fill_source source)
{
	char		fence[128],
				key[128],
				ver[32],
				ttl[16],
				fttl[16];
	const char *argv[7];
	size_t		argl[7];
	bool		ok;
	long long	v;

	snprintf(fence, sizeof(fence), "student:ver:%s", student);
	kc_cache_key(key, sizeof(key), view, student);
	snprintf(ver, sizeof(ver), "%lld", version);
	snprintf(ttl, sizeof(ttl), "%d", c->ttl);
	snprintf(fttl, sizeof(fttl), "%d", fence_ttl(c));
	argv[0] = fence;
	argv[1] = key;
	argv[2] = ver;
	argv[3] = body;
	argv[4] = ttl;
	argv[5] = source == KC_FILL_REPLICA ? "replica" : "primary";
	argv[6] = fttl;
	for (int i = 0; i < 7; i++)
		argl[i] = i == 3 ? len : strlen(argv[i]);
	v = kc_redis_script_int(c->redis, SCRIPT_FILL, 2, 7, argv, argl, &ok);
	return ok ? (int) v : -1;
}

void
kc_cache_invalidate_local(kc_cache *c, const char *student)
{
	if (c->local)
		kc_local_invalidate(c->local, student);
}

int
kc_cache_invalidate_batch(kc_cache *c, int n, const kc_invalidation *inv, int *deleted)
{
	/* per event: three keys and a version, each with its length */
	char	   *text = malloc((size_t) n * (3 * 128 + 32) + 16);
	const char **argv = malloc((size_t) (4 * n + 1) * sizeof(*argv));
	size_t	   *argl = malloc((size_t) (4 * n + 1) * sizeof(*argl));
	long long  *out = malloc((size_t) n * sizeof(*out));
	int			rc = -1;

	if (text && argv && argl && out)
	{
		char	   *ttl = text + (size_t) n * (3 * 128 + 32);

		for (int i = 0; i < n; i++)
		{
			char	   *fence = text + (size_t) i * (3 * 128 + 32),
					   *home = fence + 128,
					   *learning = home + 128,
					   *ver = learning + 128;

			snprintf(fence, 128, "student:ver:%s", inv[i].student);
			kc_cache_key(home, 128, KC_VIEW_HOME, inv[i].student);
			kc_cache_key(learning, 128, KC_VIEW_LEARNING, inv[i].student);
			snprintf(ver, 32, "%lld", inv[i].version);
			argv[3 * i] = fence;
			argv[3 * i + 1] = home;
			argv[3 * i + 2] = learning;
			argv[3 * n + 1 + i] = ver;
		}
		snprintf(ttl, 16, "%d", fence_ttl(c));
		argv[3 * n] = ttl;
		for (int i = 0; i < 4 * n + 1; i++)
			argl[i] = strlen(argv[i]);
		rc = kc_redis_script_ints(c->redis, SCRIPT_INVALIDATE, 3 * n, 4 * n + 1, argv, argl, out, n);
	}
	/*
	 * After Redis, whatever it answered (the fence may already cover the event when
	 * another path applied it): a reader that took its ticket before this point may
	 * have read the old body from Redis, and this voids its ticket.
	 */
	if (c->local)
		for (int i = 0; i < n; i++)
			kc_local_invalidate(c->local, inv[i].student);
	if (rc < 0)
		kc_metrics_add(KC_M_INVALIDATION_ERRORS, 1);
	else
		for (int i = 0; i < n; i++)
			deleted[i] = (int) out[i];
	free(text);
	free(argv);
	free(argl);
	free(out);
	return rc;
}

int
kc_cache_get_watermark(kc_cache *c, long long *wm, long long *event_pos, char *ident, size_t len)
{
	static const char *const keys[2] = {WATERMARK_KEY, WATERMARK_EVENT_KEY};
	char		vals[2][KC_REDIS_VALUE_MAX];
	int			n;
	char	   *sep;

	*event_pos = 0;
	ident[0] = '\0';
	if (kc_redis_mget(c->redis, 2, keys, vals) < 0)
		return -1;
	if (!vals[0][0])
		return 0;
	*wm = strtoll(vals[0], NULL, 10);
	sep = strchr(vals[1], ' ');
	if (sep && sep[1])
	{
		*event_pos = strtoll(vals[1], NULL, 10);
		n = snprintf(ident, len, "%s", sep + 1);
		if (n < 0 || (size_t) n >= len)
		{
			*event_pos = 0;		/* cut: cannot be compared */
			ident[0] = '\0';
		}
	}
	return 1;
}

int
kc_cache_set_watermark(kc_cache *c, long long wm, const char *ident)
{
	char		id[32];
	const char *argv[4] = {WATERMARK_KEY, WATERMARK_EVENT_KEY, id, ident ? ident : ""};
	size_t		argl[4];
	bool		ok;

	snprintf(id, sizeof(id), "%lld", wm);
	for (int i = 0; i < 4; i++)
		argl[i] = strlen(argv[i]);
	kc_redis_script_int(c->redis, SCRIPT_WATERMARK, 2, 4, argv, argl, &ok);
	return ok ? 0 : -1;
}

int
kc_cache_reset_watermark(kc_cache *c, long long wm, const char *ident)
{
	static const char *const keys[] = {WATERMARK_KEY, WATERMARK_EVENT_KEY};

	if (kc_redis_delete_matching(c->redis, keys, 2) < 0)
		return -1;
	return kc_cache_set_watermark(c, wm, ident);
}

long long
kc_cache_purge_views(kc_cache *c)
{
	static const char *const patterns[] = {"student:home:*", "student:learning:*"};

	if (c->local)
		kc_local_flush(c->local);
	return kc_redis_delete_matching(c->redis, patterns, 2);
}

int
kc_cache_ping(kc_cache *c)
{
	return kc_redis_ping(c->redis);
}
