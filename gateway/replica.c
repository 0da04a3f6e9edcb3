/*
 * replica.c - cache misses read on hot standbys (see replica.h).
 *
 * Each replica is a pool of its own (db.c: the same prepared statements,
 * fail-fast while it is down, one log line when it goes and comes back), so a
 * replica that is down costs a request nothing but a skipped slot. Replicas
 * are taken in turn; the first that answers decides, and an answer below the
 * version needed sends the request to the primary rather than to another
 * replica, which is no more likely to have replayed further.
 */
#include "replica.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache_local.h"
#include "log.h"
#include "metrics.h"

#define MAX_REPLICAS 16

struct kc_replicas
{
	int			n;
	kc_db	   *db[MAX_REPLICAS];
	_Atomic unsigned next;
};

kc_replicas *
kc_replicas_create(const char *urls, int size, int stmt_timeout_ms, char *err, size_t errlen)
{
	kc_replicas *r;
	char	   *copy,
			   *save = NULL;
	bool		uri = strncmp(urls, "postgres", 8) == 0;

	err[0] = '\0';
	if (urls[strspn(urls, " \t")] == '\0')
		return NULL;
	r = calloc(1, sizeof(*r));
	copy = strdup(urls);
	if (!r || !copy)
	{
		free(r);
		free(copy);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	/* URIs hold no blanks; a key=value string does, and is one replica */
	for (char *u = uri ? strtok_r(copy, " \t", &save) : copy; u && r->n < MAX_REPLICAS;
		 u = uri ? strtok_r(NULL, " \t", &save) : NULL)
	{
		r->db[r->n] = kc_db_create(u, size, stmt_timeout_ms, "replica");
		if (!r->db[r->n])
		{
			snprintf(err, errlen, "out of memory");
			free(copy);
			kc_replicas_destroy(r);
			return NULL;
		}
		r->n++;
	}
	free(copy);
	return r;
}

void
kc_replicas_destroy(kc_replicas *r)
{
	if (!r)
		return;
	for (int i = 0; i < r->n; i++)
		kc_db_destroy(r->db[i]);
	free(r);
}

kc_body *
kc_replicas_read(kc_replicas *r, kc_db_stmt stmt, const char *student, long long need)
{
	const char *params[1] = {student};
	unsigned	first = atomic_fetch_add(&r->next, 1);

	for (int i = 0; i < r->n; i++)
	{
		kc_db	   *db = r->db[(first + (unsigned) i) % (unsigned) r->n];
		PGresult   *res;
		kc_db_status st = kc_db_exec(db, stmt, 1, params, &res, NULL, 0);
		long long	version;
		kc_body    *body;

		if (st == KC_DB_UNAVAILABLE)
			continue;			/* down: the pool said so once; try the next */
		if (st != KC_DB_OK)
			break;				/* e.g. a student the replay has not brought yet */
		version = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
		body = version >= need ?
			kc_body_new(PQgetvalue(res, 0, 0), (size_t) PQgetlength(res, 0, 0), version) : NULL;
		PQclear(res);
		if (!body)
			kc_metrics_add(KC_M_REPLICA_BEHIND, 1);
		return body;
	}
	kc_metrics_add(KC_M_REPLICA_BEHIND, 1);
	return NULL;
}
