/*
 * cache.c - Redis connection pool and the atomic cache operations of §6.
 *
 * Every failure of Redis closes the connection, marks Redis down and the cache
 * unsynced: requests then bypass Redis until the listener has reconnected and
 * replayed the events it may have missed (see listen.c).
 *
 * With --local-cache the views also live in this process (cache_local.c):
 * kc_cache_lookup and kc_cache_store keep it in step with Redis, and every
 * invalidation, loss of sync and resync passes through here, so it can never
 * serve what Redis would no longer serve.
 */
#include "cache.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache_local.h"
#include "log.h"
#include "metrics.h"

#define RETRY_CONNECT_MS 500
#define IO_TIMEOUT_MS 500
#define WATERMARK_KEY "kc:gateway:watermark"

/*
 * KEYS: fence, home, learning. ARGV: version, fence ttl.
 * Returns -1 when the fence already covers version, else a bit mask of the
 * views that existed: 1 home, 2 learning.
 */
static const char invalidate_lua[] =
	"local f = tonumber(redis.call('GET', KEYS[1]) or '-1')\n"
	"local v = tonumber(ARGV[1])\n"
	"if f >= v then return -1 end\n"
	"redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])\n"
	"local h = redis.call('DEL', KEYS[2])\n"
	"local l = redis.call('DEL', KEYS[3])\n"
	"return h + 2 * l\n";

/* KEYS: fence, view key. ARGV: version, body, ttl. */
static const char fill_lua[] =
	"local f = tonumber(redis.call('GET', KEYS[1]) or '-1')\n"
	"local v = tonumber(ARGV[1])\n"
	"if f > v then return 0 end\n"
	"local cur = redis.call('HGET', KEYS[2], 'v')\n"
	"if cur and tonumber(cur) > v then return 0 end\n"
	"redis.call('HSET', KEYS[2], 'v', ARGV[1], 'b', ARGV[2])\n"
	"redis.call('EXPIRE', KEYS[2], ARGV[3])\n"
	"return 1\n";

/* KEYS: watermark. ARGV: id. Raises only. */
static const char watermark_lua[] =
	"local w = tonumber(redis.call('GET', KEYS[1]) or '-1')\n"
	"if tonumber(ARGV[1]) > w then redis.call('SET', KEYS[1], ARGV[1]) end\n"
	"return 1\n";

enum
{
	SCRIPT_INVALIDATE, SCRIPT_FILL, SCRIPT_WATERMARK, N_SCRIPTS
};
static const char *const script_src[N_SCRIPTS] = {invalidate_lua, fill_lua, watermark_lua};

struct kc_cache
{
	char		host[256];
	int			port;
	char		password[256];
	int			dbnum;
	int			ttl;
	int			size;
	redisContext **conns;
	int		   *free_slots;
	int			n_free;
	pthread_mutex_t lock;
	pthread_cond_t available;
	char		sha[N_SCRIPTS][41];
	_Atomic long long down_until_ms;
	_Atomic bool up;
	_Atomic bool synced;
	_Atomic unsigned long down_epoch;
	kc_local   *local;			/* NULL: no in-process cache */
};

static long long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool
kc_cache_parse_url(const char *url, char *host, size_t hostlen, int *port,
				   char *password, size_t pwlen, int *db)
{
	const char *p;
	const char *at;
	const char *hend;
	size_t		hl;

	if (strncmp(url, "redis://", 8) != 0)
		return false;
	p = url + 8;
	*port = 6379;
	*db = 0;
	password[0] = '\0';
	at = strchr(p, '@');
	if (at)
	{
		const char *colon = memchr(p, ':', (size_t) (at - p));
		const char *pw = colon ? colon + 1 : p;
		size_t		pl = (size_t) (at - pw);

		if (pl >= pwlen)
			return false;
		memcpy(password, pw, pl);
		password[pl] = '\0';
		p = at + 1;
	}
	hend = p + strcspn(p, ":/");
	hl = (size_t) (hend - p);
	if (hl == 0 || hl >= hostlen)
		return false;
	memcpy(host, p, hl);
	host[hl] = '\0';
	p = hend;
	if (*p == ':')
	{
		char	   *end;
		long		v = strtol(p + 1, &end, 10);

		if (end == p + 1 || v <= 0 || v > 65535)
			return false;
		*port = (int) v;
		p = end;
	}
	if (*p == '/')
	{
		char	   *end;
		long		v;

		if (p[1] == '\0')
			return true;
		v = strtol(p + 1, &end, 10);
		if (end == p + 1 || *end || v < 0 || v > 1000)
			return false;
		*db = (int) v;
		p = end;
	}
	return *p == '\0';
}

void
kc_cache_key(char *buf, size_t len, kc_view view, const char *student)
{
	snprintf(buf, len, "student:%s:%s", view == KC_VIEW_HOME ? "home" : "learning", student);
}

kc_cache *
kc_cache_create(const char *url, int pool_size, int ttl, char *err, size_t errlen)
{
	kc_cache   *c = calloc(1, sizeof(*c));

	if (!c)
	{
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (!kc_cache_parse_url(url, c->host, sizeof(c->host), &c->port,
							c->password, sizeof(c->password), &c->dbnum))
	{
		snprintf(err, errlen, "invalid Redis URL \"%s\": expected redis://host[:port][/db]", url);
		free(c);
		return NULL;
	}
	c->ttl = ttl;
	c->size = pool_size;
	c->conns = calloc((size_t) pool_size, sizeof(redisContext *));
	c->free_slots = calloc((size_t) pool_size, sizeof(int));
	if (!c->conns || !c->free_slots)
	{
		snprintf(err, errlen, "out of memory");
		kc_cache_destroy(c);
		return NULL;
	}
	for (int i = 0; i < pool_size; i++)
		c->free_slots[i] = i;
	c->n_free = pool_size;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->available, NULL);
	return c;
}

void
kc_cache_destroy(kc_cache *c)
{
	if (!c)
		return;
	for (int i = 0; c->conns && i < c->size; i++)
		if (c->conns[i])
			redisFree(c->conns[i]);
	kc_local_destroy(c->local);
	free(c->conns);
	free(c->free_slots);
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
	return atomic_load(&c->up);
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

/* Records a Redis failure: requests bypass until the listener resyncs. */
static void
mark_down(kc_cache *c, const char *why)
{
	atomic_fetch_add(&c->down_epoch, 1);
	atomic_store(&c->synced, false);
	if (c->local)
		kc_local_flush(c->local);
	atomic_store(&c->down_until_ms, now_ms() + RETRY_CONNECT_MS);
	if (atomic_exchange(&c->up, false))
	{
		kc_logline	l;

		kc_log_begin(&l, KC_LOG_WARN, "redis unavailable, serving from postgres");
		kc_log_str(&l, "error", why);
		kc_log_end(&l);
	}
}

static redisContext *
open_conn(kc_cache *c, char *err, size_t errlen)
{
	struct timeval tv = {0, IO_TIMEOUT_MS * 1000};
	redisContext *ctx = redisConnectWithTimeout(c->host, c->port, tv);
	redisReply *r;

	if (!ctx || ctx->err)
	{
		snprintf(err, errlen, "%s", ctx ? ctx->errstr : "out of memory");
		if (ctx)
			redisFree(ctx);
		return NULL;
	}
	redisSetTimeout(ctx, tv);
	if (c->password[0])
	{
		r = redisCommand(ctx, "AUTH %s", c->password);
		if (!r || r->type == REDIS_REPLY_ERROR)
			goto fail;
		freeReplyObject(r);
	}
	if (c->dbnum)
	{
		r = redisCommand(ctx, "SELECT %d", c->dbnum);
		if (!r || r->type == REDIS_REPLY_ERROR)
			goto fail;
		freeReplyObject(r);
	}
	for (int i = 0; i < N_SCRIPTS; i++)
	{
		r = redisCommand(ctx, "SCRIPT LOAD %s", script_src[i]);
		if (!r || r->type != REDIS_REPLY_STRING || r->len != 40)
			goto fail;
		memcpy(c->sha[i], r->str, 41);	/* same for every connection */
		freeReplyObject(r);
	}
	return ctx;

fail:
	snprintf(err, errlen, "%s", r ? r->str : ctx->errstr);
	if (r)
		freeReplyObject(r);
	redisFree(ctx);
	return NULL;
}

/* Checks out a live connection slot; -1 (after marking down) when Redis is unreachable. */
static int
acquire(kc_cache *c)
{
	int			slot;
	char		err[256];

	pthread_mutex_lock(&c->lock);
	while (c->n_free == 0)
		pthread_cond_wait(&c->available, &c->lock);
	slot = c->free_slots[--c->n_free];
	pthread_mutex_unlock(&c->lock);
	if (c->conns[slot])
		return slot;
	if (now_ms() >= atomic_load(&c->down_until_ms))
	{
		c->conns[slot] = open_conn(c, err, sizeof(err));
		if (c->conns[slot])
		{
			if (!atomic_exchange(&c->up, true))
				kc_logf(KC_LOG_INFO, "redis reachable");
			return slot;
		}
		mark_down(c, err);
	}
	pthread_mutex_lock(&c->lock);
	c->free_slots[c->n_free++] = slot;
	pthread_cond_signal(&c->available);
	pthread_mutex_unlock(&c->lock);
	return -1;
}

/* Returns the slot; a failed connection is closed and Redis marked down. */
static void
release(kc_cache *c, int slot, bool failed)
{
	if (failed && c->conns[slot])
	{
		char		why[128];

		snprintf(why, sizeof(why), "%s", c->conns[slot]->err ? c->conns[slot]->errstr : "bad reply");
		redisFree(c->conns[slot]);
		c->conns[slot] = NULL;
		mark_down(c, why);
	}
	pthread_mutex_lock(&c->lock);
	c->free_slots[c->n_free++] = slot;
	pthread_cond_signal(&c->available);
	pthread_mutex_unlock(&c->lock);
}

/* EVALSHA with a fallback to EVAL when the script cache was flushed. */
static redisReply *
run_script(kc_cache *c, redisContext *ctx, int script, int nkeys, int nargs,
		   const char **argv, const size_t *argl)
{
	const char *full[12];
	size_t		fulll[12];
	char		nk[8];
	redisReply *r;

	snprintf(nk, sizeof(nk), "%d", nkeys);
	full[0] = "EVALSHA";
	fulll[0] = 7;
	full[1] = c->sha[script];
	fulll[1] = 40;
	full[2] = nk;
	fulll[2] = strlen(nk);
	for (int i = 0; i < nargs; i++)
	{
		full[3 + i] = argv[i];
		fulll[3 + i] = argl[i];
	}
	r = redisCommandArgv(ctx, 3 + nargs, full, fulll);
	if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0)
	{
		freeReplyObject(r);
		full[0] = "EVAL";
		fulll[0] = 4;
		full[1] = script_src[script];
		fulll[1] = strlen(script_src[script]);
		r = redisCommandArgv(ctx, 3 + nargs, full, fulll);
	}
	return r;
}

kc_get_result
kc_cache_get(kc_cache *c, kc_view view, const char *student,
			 long long *version, char **body, size_t *len)
{
	char		key[128];
	int			slot = acquire(c);
	redisReply *r;
	kc_get_result res = KC_GET_MISS;

	if (slot < 0)
		return KC_GET_ERROR;
	kc_cache_key(key, sizeof(key), view, student);
	r = redisCommand(c->conns[slot], "HMGET %s v b", key);
	if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2)
	{
		if (r)
			freeReplyObject(r);
		release(c, slot, true);
		return KC_GET_ERROR;
	}
	if (r->element[0]->type == REDIS_REPLY_STRING && r->element[1]->type == REDIS_REPLY_STRING)
	{
		*body = malloc(r->element[1]->len + 1);
		if (*body)
		{
			memcpy(*body, r->element[1]->str, r->element[1]->len);
			(*body)[r->element[1]->len] = '\0';
			*len = r->element[1]->len;
			*version = strtoll(r->element[0]->str, NULL, 10);
			res = KC_GET_HIT;
		}
		else
			res = KC_GET_ERROR;
	}
	freeReplyObject(r);
	release(c, slot, false);
	return res;
}

/*
 * HMGET v b, plus PTTL in the same round trip when the in-process cache needs
 * the entry's remaining life. On HIT *body is a new kc_body.
 */
static kc_get_result
redis_get_body(kc_cache *c, const char *key, kc_body **body)
{
	int			slot = acquire(c);
	redisContext *ctx;
	redisReply *r = NULL;
	redisReply *ttl = NULL;
	kc_get_result res = KC_GET_ERROR;
	bool		failed = true;	/* Redis failed, as opposed to out of memory */

	if (slot < 0)
		return KC_GET_ERROR;
	ctx = c->conns[slot];
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

			(*body)->expires_ms = now_ms() + left;
			res = KC_GET_HIT;
		}
	}
done:
	if (r)
		freeReplyObject(r);
	if (ttl)
		freeReplyObject(ttl);
	release(c, slot, failed);
	return res;
}

kc_get_result
kc_cache_lookup(kc_cache *c, kc_view view, const char *student, kc_body **body,
				uint64_t *ticket, bool *local_hit)
{
	char		key[128];
	kc_get_result res;

	*body = NULL;
	*ticket = 0;
	*local_hit = false;
	if (c->local)
	{
		*body = kc_local_get(c->local, view, student, now_ms());
		if (*body)
		{
			*local_hit = true;
			return KC_GET_HIT;
		}
		*ticket = kc_local_ticket(c->local, student);
	}
	kc_cache_key(key, sizeof(key), view, student);
	res = redis_get_body(c, key, body);
	if (res == KC_GET_HIT && c->local)
		kc_local_put(c->local, view, student, *ticket, *body);
	return res;
}

int
kc_cache_store(kc_cache *c, kc_view view, const char *student, uint64_t ticket, kc_body *body)
{
	int			stored = kc_cache_fill(c, view, student, body->version, body->data, body->len);

	if (stored == 1 && c->local)
	{
		body->expires_ms = now_ms() + (long long) c->ttl * 1000;
		kc_local_put(c->local, view, student, ticket, body);
	}
	return stored;
}

/* Runs a script and returns its integer reply; *ok false on any failure. */
static long long
script_int(kc_cache *c, int script, int nkeys, int nargs, const char **argv,
		   const size_t *argl, bool *ok)
{
	int			slot = acquire(c);
	redisReply *r;
	long long	v = 0;

	*ok = false;
	if (slot < 0)
		return 0;
	r = run_script(c, c->conns[slot], script, nkeys, nargs, argv, argl);
	if (r && r->type == REDIS_REPLY_INTEGER)
	{
		v = r->integer;
		*ok = true;
	}
	else if (r && r->type == REDIS_REPLY_ERROR)
		kc_logf(KC_LOG_ERROR, "redis script error: %s", r->str);
	if (r)
		freeReplyObject(r);
	release(c, slot, !*ok);
	return v;
}

int
kc_cache_fill(kc_cache *c, kc_view view, const char *student,
			  long long version, const char *body, size_t len)
{
	char		fence[128],
				key[128],
				ver[32],
				ttl[16];
	const char *argv[5];
	size_t		argl[5];
	bool		ok;
	long long	v;

	snprintf(fence, sizeof(fence), "student:ver:%s", student);
	kc_cache_key(key, sizeof(key), view, student);
	snprintf(ver, sizeof(ver), "%lld", version);
	snprintf(ttl, sizeof(ttl), "%d", c->ttl);
	argv[0] = fence;
	argv[1] = key;
	argv[2] = ver;
	argv[3] = body;
	argv[4] = ttl;
	for (int i = 0; i < 5; i++)
		argl[i] = i == 3 ? len : strlen(argv[i]);
	v = script_int(c, SCRIPT_FILL, 2, 5, argv, argl, &ok);
	return ok ? (int) v : -1;
}

int
kc_cache_invalidate(kc_cache *c, const char *student, long long version, int *deleted)
{
	char		fence[128],
				home[128],
				learning[128],
				ver[32],
				ttl[16];
	const char *argv[5] = {fence, home, learning, ver, ttl};
	size_t		argl[5];
	bool		ok;
	long long	v;

	snprintf(fence, sizeof(fence), "student:ver:%s", student);
	kc_cache_key(home, sizeof(home), KC_VIEW_HOME, student);
	kc_cache_key(learning, sizeof(learning), KC_VIEW_LEARNING, student);
	snprintf(ver, sizeof(ver), "%lld", version);
	/* the fence must outlive any entry and any slow reader by far */
	snprintf(ttl, sizeof(ttl), "%d", c->ttl + 86400);
	for (int i = 0; i < 5; i++)
		argl[i] = strlen(argv[i]);
	v = script_int(c, SCRIPT_INVALIDATE, 3, 5, argv, argl, &ok);
	/*
	 * After Redis, whatever it answered (the fence may already cover the event when
	 * another path applied it): a reader that took its ticket before this point may
	 * have read the old body from Redis, and this voids its ticket.
	 */
	if (c->local)
		kc_local_invalidate(c->local, student);
	if (!ok)
		return -1;
	if (v < 0)
		return 0;
	*deleted = (int) v;
	return 1;
}

int
kc_cache_get_watermark(kc_cache *c, long long *wm)
{
	int			slot = acquire(c);
	redisReply *r;
	int			res = -1;

	if (slot < 0)
		return -1;
	r = redisCommand(c->conns[slot], "GET " WATERMARK_KEY);
	if (r && r->type == REDIS_REPLY_NIL)
		res = 0;
	else if (r && r->type == REDIS_REPLY_STRING)
	{
		*wm = strtoll(r->str, NULL, 10);
		res = 1;
	}
	if (r)
		freeReplyObject(r);
	release(c, slot, res < 0);
	return res;
}

int
kc_cache_set_watermark(kc_cache *c, long long wm)
{
	char		id[32];
	const char *argv[2] = {WATERMARK_KEY, id};
	size_t		argl[2];
	bool		ok;

	snprintf(id, sizeof(id), "%lld", wm);
	argl[0] = strlen(argv[0]);
	argl[1] = strlen(id);
	script_int(c, SCRIPT_WATERMARK, 1, 2, argv, argl, &ok);
	return ok ? 0 : -1;
}

long long
kc_cache_purge_views(kc_cache *c)
{
	static const char *const patterns[] = {"student:home:*", "student:learning:*"};
	int			slot = acquire(c);
	long long	deleted = 0;
	bool		failed = false;

	if (slot < 0)
		return -1;
	for (int p = 0; p < 2 && !failed; p++)
	{
		char		cursor[32] = "0";

		do
		{
			redisReply *r = redisCommand(c->conns[slot], "SCAN %s MATCH %s COUNT 1000",
										 cursor, patterns[p]);

			if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2)
			{
				failed = true;
				if (r)
					freeReplyObject(r);
				break;
			}
			snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
			for (size_t i = 0; i < r->element[1]->elements; i++)
			{
				redisReply *d = redisCommand(c->conns[slot], "DEL %b",
											 r->element[1]->element[i]->str,
											 (size_t) r->element[1]->element[i]->len);

				if (!d || d->type != REDIS_REPLY_INTEGER)
					failed = true;
				else
					deleted += d->integer;
				if (d)
					freeReplyObject(d);
			}
			freeReplyObject(r);
		} while (!failed && strcmp(cursor, "0") != 0);
	}
	release(c, slot, failed);
	return failed ? -1 : deleted;
}

int
kc_cache_ping(kc_cache *c)
{
	int			slot = acquire(c);
	redisReply *r;
	bool		ok;

	if (slot < 0)
		return -1;
	r = redisCommand(c->conns[slot], "PING");
	ok = r && r->type == REDIS_REPLY_STATUS;
	if (r)
		freeReplyObject(r);
	release(c, slot, !ok);
	return ok ? 0 : -1;
}
