/*
 * cache_redis.c - the cache's Redis connections (see cache_redis.h).
 *
 * Connect and I/O timeouts are IO_TIMEOUT_MS, so a hung Redis delays an
 * operation by at most that before the caller bypasses the cache. A
 * connection is kept until an operation on it fails; the pool then closes it
 * and throttles reconnects while the cache reacts (cache.c: unsynced).
 */
#include "cache_redis.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "log.h"

#define IO_TIMEOUT_MS 500

struct kc_redis
{
	char		host[256];
	int			port;
	char		password[256];
	int			dbnum;
	kc_redis_setup setup;
	char		(*sha)[41];		/* per script; the same for every connection */
	kc_pool    *pool;
};

static void *open_conn(void *arg, char *err, size_t errlen);
static void close_conn(void *conn);
static void on_up(void *arg, kc_pool_state prev);
static void on_down(void *arg, kc_pool_state prev, const char *why);
static struct redisReply *run_script(kc_redis *rd, struct redisContext *ctx, int script,
									 int nkeys, int nargs, const char **argv,
									 const size_t *argl);

static const kc_pool_ops redis_ops = {open_conn, close_conn, NULL, on_up, on_down};

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

kc_redis *
kc_redis_create(const char *url, int pool_size, const kc_redis_setup *setup,
				char *err, size_t errlen)
{
	kc_redis   *r = calloc(1, sizeof(*r));

	if (!r)
	{
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (!kc_cache_parse_url(url, r->host, sizeof(r->host), &r->port,
							r->password, sizeof(r->password), &r->dbnum))
	{
		snprintf(err, errlen, "invalid Redis URL \"%s\": expected redis://host[:port][/db]", url);
		free(r);
		return NULL;
	}
	r->setup = *setup;
	r->sha = calloc((size_t) setup->nscripts, sizeof(*r->sha));
	r->pool = kc_pool_create(&redis_ops, r, pool_size, IO_TIMEOUT_MS);
	if (!r->sha || !r->pool)
	{
		snprintf(err, errlen, "out of memory");
		kc_redis_destroy(r);
		return NULL;
	}
	return r;
}

void
kc_redis_destroy(kc_redis *r)
{
	if (!r)
		return;
	kc_pool_destroy(r->pool);
	free(r->sha);
	free(r);
}

bool
kc_redis_up(kc_redis *r)
{
	return kc_pool_get_state(r->pool) == KC_POOL_UP;
}

/* Connects, authenticates, selects the database and loads the scripts. */
static void *
open_conn(void *arg, char *err, size_t errlen)
{
	kc_redis   *rd = arg;
	struct timeval tv = {0, IO_TIMEOUT_MS * 1000};
	redisContext *ctx = redisConnectWithTimeout(rd->host, rd->port, tv);
	redisReply *r;

	if (!ctx || ctx->err)
	{
		snprintf(err, errlen, "%s", ctx ? ctx->errstr : "out of memory");
		if (ctx)
			redisFree(ctx);
		return NULL;
	}
	redisSetTimeout(ctx, tv);
	if (rd->password[0])
	{
		r = redisCommand(ctx, "AUTH %s", rd->password);
		if (!r || r->type == REDIS_REPLY_ERROR)
			goto fail;
		freeReplyObject(r);
	}
	if (rd->dbnum)
	{
		r = redisCommand(ctx, "SELECT %d", rd->dbnum);
		if (!r || r->type == REDIS_REPLY_ERROR)
			goto fail;
		freeReplyObject(r);
	}
	for (int i = 0; i < rd->setup.nscripts; i++)
	{
		r = redisCommand(ctx, "SCRIPT LOAD %s", rd->setup.scripts[i]);
		if (!r || r->type != REDIS_REPLY_STRING || r->len != 40)
			goto fail;
		memcpy(rd->sha[i], r->str, 41);
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

static void
close_conn(void *conn)
{
	redisFree(conn);
}

static void
on_up(void *arg, kc_pool_state prev)
{
	kc_redis   *r = arg;

	r->setup.on_up(r->setup.arg, prev);
}

static void
on_down(void *arg, kc_pool_state prev, const char *why)
{
	kc_redis   *r = arg;

	r->setup.on_down(r->setup.arg, prev, why);
}

redisContext *
kc_redis_acquire(kc_redis *r, kc_pool_lease *l)
{
	return kc_pool_checkout(r->pool, l) ? l->conn : NULL;
}

void
kc_redis_release(kc_redis *r, kc_pool_lease *l, bool failed)
{
	redisContext *ctx = l->conn;
	char		why[128];

	if (!failed)
	{
		kc_pool_checkin(r->pool, l);
		return;
	}
	snprintf(why, sizeof(why), "%s", ctx->err ? ctx->errstr : "bad reply");
	kc_pool_fail(r->pool, l, why);
}

/*
 * EVALSHA of scripts[script], falling back to EVAL when Redis lost its script
 * cache; NULL when out of memory or Redis failed.
 */
static redisReply *
run_script(kc_redis *rd, redisContext *ctx, int script, int nkeys, int nargs,
		   const char **argv, const size_t *argl)
{
	const char **full = malloc((3 + nargs) * sizeof(*full));
	size_t	   *fulll = malloc((3 + nargs) * sizeof(*fulll));
	char		nk[16];
	redisReply *r = NULL;

	if (!full || !fulll)
		goto done;
	snprintf(nk, sizeof(nk), "%d", nkeys);
	full[0] = "EVALSHA";
	fulll[0] = 7;
	full[1] = rd->sha[script];
	fulll[1] = 40;
	full[2] = nk;
	fulll[2] = strlen(nk);
	memcpy(full + 3, argv, nargs * sizeof(*full));
	memcpy(fulll + 3, argl, nargs * sizeof(*fulll));
	r = redisCommandArgv(ctx, 3 + nargs, full, fulll);
	if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0)
	{
		freeReplyObject(r);
		full[0] = "EVAL";
		fulll[0] = 4;
		full[1] = rd->setup.scripts[script];
		fulll[1] = strlen(rd->setup.scripts[script]);
		r = redisCommandArgv(ctx, 3 + nargs, full, fulll);
	}
done:
	free(full);
	free(fulll);
	return r;
}

long long
kc_redis_script_int(kc_redis *rd, int script, int nkeys, int nargs, const char **argv,
					const size_t *argl, bool *ok)
{
	kc_pool_lease lease;
	redisContext *ctx = kc_redis_acquire(rd, &lease);
	redisReply *r;
	long long	v = 0;

	*ok = false;
	if (!ctx)
		return 0;
	r = run_script(rd, ctx, script, nkeys, nargs, argv, argl);
	if (r && r->type == REDIS_REPLY_INTEGER)
	{
		v = r->integer;
		*ok = true;
	}
	else if (r && r->type == REDIS_REPLY_ERROR)
		kc_logf(KC_LOG_ERROR, "redis script error: %s", r->str);
	if (r)
		freeReplyObject(r);
	kc_redis_release(rd, &lease, !*ok);
	return v;
}

int
kc_redis_script_ints(kc_redis *rd, int script, int nkeys, int nargs, const char **argv,
					 const size_t *argl, long long *out, int nout)
{
	kc_pool_lease lease;
	redisContext *ctx = kc_redis_acquire(rd, &lease);
	redisReply *r;
	bool		ok = false;

	if (!ctx)
		return -1;
	r = run_script(rd, ctx, script, nkeys, nargs, argv, argl);
	if (r && r->type == REDIS_REPLY_ARRAY && r->elements == (size_t) nout)
	{
		ok = true;
		for (int i = 0; i < nout; i++)
		{
			ok = ok && r->element[i]->type == REDIS_REPLY_INTEGER;
			out[i] = ok ? r->element[i]->integer : 0;
		}
	}
	if (r && !ok)
		kc_logf(KC_LOG_ERROR, "redis script error: %s",
				r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
	if (r)
		freeReplyObject(r);
	kc_redis_release(rd, &lease, !ok);
	return ok ? 0 : -1;
}

int
kc_redis_mget(kc_redis *rd, int n, const char *const *keys, char (*vals)[KC_REDIS_VALUE_MAX])
{
	kc_pool_lease lease;
	redisContext *ctx = kc_redis_acquire(rd, &lease);
	const char *argv[8];
	redisReply *r;
	int			res = -1;

	if (!ctx)
		return -1;
	if (n < 1 || n > 7)
	{
		kc_redis_release(rd, &lease, false);
		return -1;
	}
	argv[0] = "MGET";
	for (int i = 0; i < n; i++)
		argv[i + 1] = keys[i];
	r = redisCommandArgv(ctx, n + 1, argv, NULL);
	if (r && r->type == REDIS_REPLY_ARRAY && r->elements == (size_t) n)
	{
		res = 0;
		for (int i = 0; i < n; i++)
		{
			const redisReply *e = r->element[i];

			vals[i][0] = '\0';
			if (e->type == REDIS_REPLY_STRING)
			{
				snprintf(vals[i], KC_REDIS_VALUE_MAX, "%s", e->str);
				res++;
			}
		}
	}
	if (r)
		freeReplyObject(r);
	kc_redis_release(rd, &lease, res < 0);
	return res;
}

long long
kc_redis_delete_matching(kc_redis *rd, const char *const *patterns, int npatterns)
{
	kc_pool_lease lease;
	redisContext *ctx = kc_redis_acquire(rd, &lease);
	long long	deleted = 0;
	bool		failed = false;

	if (!ctx)
		return -1;
	for (int p = 0; p < npatterns && !failed; p++)
	{
		char		cursor[32] = "0";

		do
		{
			redisReply *r = redisCommand(ctx, "SCAN %s MATCH %s COUNT 1000", cursor, patterns[p]);

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
				redisReply *d = redisCommand(ctx, "DEL %b", r->element[1]->element[i]->str,
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
	kc_redis_release(rd, &lease, failed);
	return failed ? -1 : deleted;
}

int
kc_redis_ping(kc_redis *rd)
{
	kc_pool_lease lease;
	redisContext *ctx = kc_redis_acquire(rd, &lease);
	redisReply *r;
	bool		ok;

	if (!ctx)
		return -1;
	r = redisCommand(ctx, "PING");
	ok = r && r->type == REDIS_REPLY_STATUS;
	if (r)
		freeReplyObject(r);
	kc_redis_release(rd, &lease, !ok);
	return ok ? 0 : -1;
}
