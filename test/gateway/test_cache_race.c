/*
 * test_cache_race.c - the stale-refill race of docs/design.md §6, reproduced
 * deterministically with the gateway's own cache and database code against a
 * real Postgres and Redis:
 *
 *   reader: reads student_home at version v           (cache miss)
 *   writer: commits a change (version v+1), invalidates (fence := v+1)
 *   reader: tries to fill the cache with the version-v body -> must be refused
 *
 * Usage: test_cache_race <student uuid>, with KC_DATABASE_URL and KC_REDIS_URL set.
 * The student must exist and must not be cached yet.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "db.h"
#include "log.h"

static int failures;

static void
check(int cond, const char *name)
{
	printf("%s - %s\n", cond ? "ok" : "not ok", name);
	if (!cond)
		failures++;
}

/* Reads the home view through the gateway's prepared statement. */
static char *
read_home(kc_db *db, const char *student, long long *version)
{
	const char *params[1] = {student};
	PGresult   *res;
	char		msg[256];
	char	   *body;

	if (kc_db_exec(db, KC_STMT_HOME, 1, params, &res, msg, sizeof(msg)) != KC_DB_OK)
	{
		printf("# read failed: %s\n", msg);
		return NULL;
	}
	body = strdup(PQgetvalue(res, 0, 0));
	*version = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
	PQclear(res);
	return body;
}

/* Commits a version bump for student, as a pipeline stage would; returns the new version. */
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
	r = PQexecParams(c, "INSERT INTO kc_flow.cache_versions (student_id, version) VALUES ($1, 1) "
					 "ON CONFLICT (student_id) DO UPDATE SET version = kc_flow.cache_versions.version + 1 "
					 "RETURNING version", 1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(r) == PGRES_TUPLES_OK)
		v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	else
		printf("# bump failed: %s\n", PQresultErrorMessage(r));
	PQclear(r);
	PQfinish(c);
	return v;
}

int
main(int argc, char **argv)
{
	const char *dburl = getenv("KC_DATABASE_URL");
	const char *redisurl = getenv("KC_REDIS_URL");
	const char *student = argc > 1 ? argv[1] : NULL;
	char		err[256];
	kc_db	   *db;
	kc_cache   *cache;
	long long	v_old,
				v_new,
				v_now,
				v_cached = -1;
	char	   *old_body,
			   *new_body,
			   *cached = NULL;
	size_t		len;
	int			mask = 0;

	if (!dburl || !redisurl || !student)
	{
		fprintf(stderr, "usage: KC_DATABASE_URL=... KC_REDIS_URL=... test_cache_race <student>\n");
		return 2;
	}
	kc_log_set_level(KC_LOG_ERROR);
	db = kc_db_create(dburl, 1, 5000);
	cache = kc_cache_create(redisurl, 1, 300, err, sizeof(err));
	if (!db || !cache)
	{
		printf("not ok - race: setup (%s)\n", err);
		return 1;
	}

	old_body = read_home(db, student, &v_old);
	check(old_body != NULL, "race: reader reads the home view at version v");
	check(kc_cache_get(cache, KC_VIEW_HOME, student, &v_cached, &cached, &len) == KC_GET_MISS,
		  "race: the view is not cached yet (a miss)");

	v_new = bump_version(dburl, student);
	check(v_new == v_old + 1, "race: a writer commits version v+1");
	check(kc_cache_invalidate(cache, student, v_new, &mask) == 1, "race: the invalidation for v+1 is applied");

	check(kc_cache_fill(cache, KC_VIEW_HOME, student, v_old, old_body, strlen(old_body)) == 0,
		  "race: the late fill of version v is refused by the fence");
	check(kc_cache_get(cache, KC_VIEW_HOME, student, &v_cached, &cached, &len) == KC_GET_MISS,
		  "race: no stale entry is in the cache after the refused fill");

	new_body = read_home(db, student, &v_now);
	check(new_body && v_now == v_new, "race: a new read sees version v+1");
	check(kc_cache_fill(cache, KC_VIEW_HOME, student, v_now, new_body, strlen(new_body)) == 1,
		  "race: a fill at the fence's version is stored");
	check(kc_cache_get(cache, KC_VIEW_HOME, student, &v_cached, &cached, &len) == KC_GET_HIT &&
		  v_cached == v_new && strcmp(cached, new_body) == 0, "race: the cache now holds version v+1");
	free(cached);
	cached = NULL;

	check(kc_cache_invalidate(cache, student, v_new, &mask) == 0,
		  "race: replaying the same invalidation is a no-op (idempotent catch-up)");
	check(kc_cache_get(cache, KC_VIEW_HOME, student, &v_cached, &cached, &len) == KC_GET_HIT,
		  "race: ...and keeps the fresh entry");
	free(cached);
	cached = NULL;
	check(kc_cache_fill(cache, KC_VIEW_HOME, student, v_old, old_body, strlen(old_body)) == 0,
		  "race: an older body never overwrites a newer entry");

	check(kc_cache_invalidate(cache, student, v_new + 1, &mask) == 1 && (mask & 1),
		  "race: the next invalidation deletes the entry (existedBefore)");
	check(kc_cache_get(cache, KC_VIEW_HOME, student, &v_cached, &cached, &len) == KC_GET_MISS,
		  "race: and the view is gone");

	free(old_body);
	free(new_body);
	kc_cache_destroy(cache);
	kc_db_destroy(db);
	printf("# race: %d failed\n", failures);
	return failures ? 1 : 0;
}
