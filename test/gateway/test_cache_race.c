/*
 * test_cache_race.c - the stale-refill race of docs/design.md §6, reproduced
 * deterministically against a real Postgres and Redis through the very calls
 * the home route makes (routes_student.c: kc_cache_lookup, kc_db_exec,
 * kc_cache_store):
 *
 *   reader: looks the home view up (a miss), reads it from Postgres at version v
 *   writer: commits a change (version v+1), invalidates (fence := v+1)
 *   reader: stores its version-v body -> must be refused, and no later lookup
 *           may serve version v
 *
 * Without the fence the reader's store succeeds and every later lookup serves
 * the stale body until its TTL, which is what the checks below catch. The
 * race is played twice: on Redis alone, and with the in-process cache in
 * front of it (--local-cache). Then the fence is lost, as when Redis
 * restarts, is flushed or evicts it: a replica's body must not be stored
 * until a primary's fill has set the fence again.
 *
 * Usage: test_cache_race <student uuid>, with KC_DATABASE_URL and KC_REDIS_URL set.
 * The student must exist and must not be cached yet.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "cache.h"
#include "cache_local.h"
#include "db.h"
#include "log.h"

static int failures;

static void
check(int cond, const char *mode, const char *name)
{
	printf("%s - race (%s): %s\n", cond ? "ok" : "not ok", mode, name);
	if (!cond)
		failures++;
}

/* Reads the home view from Postgres as the route does after a miss. */
static kc_body *
read_home(kc_db *db, const char *student)
{
	const char *params[1] = {student};
	PGresult   *res;
	char		msg[256];
	kc_body    *body;

	if (kc_db_exec(db, KC_STMT_HOME, 1, params, &res, msg, sizeof(msg)) != KC_DB_OK)
	{
		printf("# read failed: %s\n", msg);
		return NULL;
	}
	body = kc_body_new(PQgetvalue(res, 0, 0), (size_t) PQgetlength(res, 0, 0),
					   strtoll(PQgetvalue(res, 0, 1), NULL, 10));
	PQclear(res);
	return body;
}

/*
 * Commits a version bump for student, as a pipeline stage would (a new row of
 * the versions' ring, one above the largest: extension/version_ring.c; this
 * test bumps one at a time, so it needs no lock); returns the new version.
 */
static long long
bump_version(const char *conninfo, const char *student)
{
	char		err[256];
	PGconn	   *c = kc_db_connect_raw(conninfo, "kc-race-test", err, sizeof(err));
	const char *params[1] = {student};
	PGresult   *r;
	long long	v = -1;

	if (!c)
		return -1;
	r = PQexecParams(c, "INSERT INTO kc_flow.student_versions (student_id, version) "
					 "SELECT $1::uuid, coalesce(max(v.version), 0) + 1 FROM kc_flow.student_versions v "
					 "WHERE v.student_id = $1::uuid RETURNING version", 1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(r) == PGRES_TUPLES_OK)
		v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	else
		printf("# bump failed: %s\n", PQresultErrorMessage(r));
	PQclear(r);
	PQfinish(c);
	return v;
}

/* A lookup that hits; *version is then the version served (-1 otherwise). */
static kc_get_result
lookup(kc_cache *cache, const char *student, long long *version, uint64_t *ticket)
{
	kc_body    *body;
	bool		local;
	kc_get_result g = kc_cache_lookup(cache, KC_VIEW_HOME, student, 0, &body, ticket, &local);

	*version = g == KC_GET_HIT ? body->version : -1;
	kc_body_unref(body);
	return g;
}

/*
 * The listener's invalidation of one event (a batch of one): 1 applied
 * (*mask: the views that existed), 0 already covered by the fence, -1 error.
 */
static int
invalidate(kc_cache *cache, const char *student, long long version, int *mask)
{
	kc_invalidation inv = {student, version};

	if (kc_cache_invalidate_batch(cache, 1, &inv, mask) < 0)
		return -1;
	return *mask >= 0;
}

/* Plays the race once on a fresh cache; local_students > 0 puts the in-process cache in front. */
static void
play(kc_db *db, const char *dburl, const char *redisurl, const char *student,
	 int local_students, const char *mode)
{
	char		err[256] = "";
	kc_cache   *cache = kc_cache_create(redisurl, 1, 300, err, sizeof(err));
	kc_body    *old_body = NULL,
			   *new_body = NULL;
	uint64_t	ticket = 0,
				ticket2 = 0;
	long long	served = -1,
				v_new;
	int			mask = 0;

	if (!cache || !kc_cache_enable_local(cache, local_students))
	{
		check(0, mode, err);
		kc_cache_destroy(cache);
		return;
	}
	check(kc_cache_set_synced(cache, kc_cache_down_epoch(cache)) && kc_cache_usable(cache), mode,
		  "the cache is synced, so the route would use it");

	/* the reader misses, then reads Postgres at version v */
	check(lookup(cache, student, &served, &ticket) == KC_GET_MISS, mode, "the reader misses");
	old_body = read_home(db, student);
	check(old_body != NULL, mode, "the reader reads the home view at version v");
	if (!old_body)
		goto done;

	/* meanwhile a writer commits v+1 and its invalidation is applied */
	v_new = bump_version(dburl, student);
	check(v_new == old_body->version + 1, mode, "a writer commits version v+1");
	check(invalidate(cache, student, v_new, &mask) == 1, mode,
		  "the invalidation for v+1 is applied");

	/* the reader now stores what it read before the invalidation */
	check(kc_cache_store(cache, KC_VIEW_HOME, student, ticket, old_body, KC_FILL_PRIMARY) == 0, mode,
		  "the reader's late store of version v is refused by the fence");
	check(lookup(cache, student, &served, &ticket2) == KC_GET_MISS, mode,
		  "no reader is served version v after the invalidation");

	/* the next reader reads v+1 and fills */
	new_body = read_home(db, student);
	check(new_body && new_body->version == v_new, mode, "a new read sees version v+1");
	if (!new_body)
		goto done;
	check(kc_cache_store(cache, KC_VIEW_HOME, student, ticket2, new_body, KC_FILL_PRIMARY) == 1, mode,
		  "a store at the fence's version is accepted");
	check(lookup(cache, student, &served, &ticket) == KC_GET_HIT && served == v_new, mode,
		  "the cache now serves version v+1");

	check(invalidate(cache, student, v_new, &mask) == 0, mode,
		  "replaying the same invalidation is a no-op (idempotent catch-up)");
	check(lookup(cache, student, &served, &ticket) == KC_GET_HIT && served == v_new, mode,
		  "...and keeps the fresh entry");
	check(kc_cache_store(cache, KC_VIEW_HOME, student, ticket, old_body, KC_FILL_PRIMARY) == 0, mode,
		  "an older body never overwrites a newer entry");
	check(lookup(cache, student, &served, &ticket) == KC_GET_HIT && served == v_new, mode,
		  "...so version v+1 is still served");

	/* the next change: the pipeline bumps the version, the listener invalidates */
	v_new = bump_version(dburl, student);
	check(invalidate(cache, student, v_new, &mask) == 1 && (mask & 1), mode,
		  "the next invalidation deletes the entry (existedBefore)");
	check(lookup(cache, student, &served, &ticket) == KC_GET_MISS, mode, "and the view is gone");

done:
	kc_body_unref(old_body);
	kc_body_unref(new_body);
	kc_cache_destroy(cache);
}

/*
 * Runs one Redis command on a connection of its own (the test's hand on
 * Redis, outside the gateway's pools): the reply's integer, or its string
 * read as one; -1 for nil or an error.
 */
static long long
redis_command(const char *redisurl, const char *fmt, const char *key)
{
	char		host[256],
				password[256];
	int			port,
				db;
	long long	v = -1;
	redisContext *rc;
	redisReply *r;

	if (!kc_cache_parse_url(redisurl, host, sizeof(host), &port, password, sizeof(password), &db))
		return -1;
	rc = redisConnect(host, port);
	if (!rc || rc->err)
	{
		if (rc)
			redisFree(rc);
		return -1;
	}
	r = redisCommand(rc, "SELECT %d", db);
	freeReplyObject(r);
	r = redisCommand(rc, fmt, key);
	if (r && r->type == REDIS_REPLY_INTEGER)
		v = r->integer;
	else if (r && r->type == REDIS_REPLY_STRING)
		v = strtoll(r->str, NULL, 10);
	freeReplyObject(r);
	redisFree(rc);
	return v;
}

/*
 * The student's fence and views are lost (Redis restarted, flushed or evicted
 * them). A body read on a replica may be behind any event and is refused; a
 * body read on the primary is stored and sets the fence to its version, so a
 * replica's body at that version is accepted again and an older one is not.
 */
static void
play_lost_fence(kc_db *db, const char *redisurl, const char *student)
{
	const char *mode = "lost fence";
	char		err[256] = "",
				fence[160];
	kc_cache   *cache = kc_cache_create(redisurl, 1, 300, err, sizeof(err));
	kc_body    *body = NULL,
			   *older = NULL;
	uint64_t	ticket = 0;
	long long	served = -1;

	if (!cache)
	{
		check(0, mode, err);
		return;
	}
	check(kc_cache_set_synced(cache, kc_cache_down_epoch(cache)), mode, "the cache is synced");
	snprintf(fence, sizeof(fence), "student:ver:%s", student);
	check(redis_command(redisurl, "DEL %s", fence) == 1 && kc_cache_purge_views(cache) >= 0, mode,
		  "the student's fence and views are gone");

	check(lookup(cache, student, &served, &ticket) == KC_GET_MISS, mode, "a reader misses");
	body = read_home(db, student);
	check(body != NULL, mode, "and reads the view (standing in for a replica's read)");
	if (!body)
		goto done;
	check(kc_cache_store(cache, KC_VIEW_HOME, student, ticket, body, KC_FILL_REPLICA) == 0, mode,
		  "with no fence a replica's body is refused");
	check(lookup(cache, student, &served, &ticket) == KC_GET_MISS, mode, "so nothing is served");
	check(kc_cache_store(cache, KC_VIEW_HOME, student, ticket, body, KC_FILL_PRIMARY) == 1, mode,
		  "the primary's body is stored");
	check(redis_command(redisurl, "GET %s", fence) == body->version, mode,
		  "and sets the fence to its version");
	check(lookup(cache, student, &served, &ticket) == KC_GET_HIT && served == body->version, mode,
		  "the cache serves it");

	older = kc_body_new(body->data, body->len, body->version - 1);
	check(kc_cache_purge_views(cache) >= 1, mode, "the views are gone again, the fence stays");
	check(lookup(cache, student, &served, &ticket) == KC_GET_MISS, mode, "a reader misses");
	check(kc_cache_store(cache, KC_VIEW_HOME, student, ticket, older, KC_FILL_REPLICA) == 0, mode,
		  "a replica's body below the fence is refused");
	check(kc_cache_store(cache, KC_VIEW_HOME, student, ticket, body, KC_FILL_REPLICA) == 1, mode,
		  "a replica's body at the fence is stored");

done:
	kc_body_unref(body);
	kc_body_unref(older);
	kc_cache_destroy(cache);
}

int
main(int argc, char **argv)
{
	const char *dburl = getenv("KC_DATABASE_URL");
	const char *redisurl = getenv("KC_REDIS_URL");
	const char *student = argc > 1 ? argv[1] : NULL;
	kc_db	   *db;

	if (!dburl || !redisurl || !student)
	{
		fprintf(stderr, "usage: KC_DATABASE_URL=... KC_REDIS_URL=... test_cache_race <student>\n");
		return 2;
	}
	kc_log_set_level(KC_LOG_ERROR);
	db = kc_db_create(dburl, 1, 5000, "postgres");
	if (!db)
	{
		printf("not ok - race: setup\n");
		return 1;
	}
	play(db, dburl, redisurl, student, 0, "redis");
	play(db, dburl, redisurl, student, 16, "in-process cache");
	play_lost_fence(db, redisurl, student);
	kc_db_destroy(db);
	printf("# race: %d failed\n", failures);
	return failures ? 1 : 0;
}
