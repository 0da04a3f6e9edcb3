/*
 * routes_student.c - GET /api/v1/students/{id}/home, /learning and /sessions.
 *
 * home and learning go through the cache protocol of docs/design.md §6:
 *   usable cache, hit   -> body from this process (--local-cache) or Redis  HIT
 *   usable cache, miss  -> kc_flow.student_home(id), then a fenced fill  MISS
 *   cache not usable or Redis failing -> Postgres only           BYPASS
 * A client that was pushed an event names its version (?min_version=V or the
 * KC-Min-Version header; docs/design.md §6, version tokens): a cached view older
 * than V is not answered, the request reads Postgres as on a miss, so a gateway
 * whose listener is behind another's never shows a view older than a push.
 * The ETag is "v{version}" of the body, so a client's If-None-Match turns into a
 * 304 without sending the body again. sessions is paginated and never cached.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache_local.h"
#include "log.h"
#include "metrics.h"
#include "parse.h"
#include "replica.h"
#include "routes.h"

/* One below bigint's largest: any version a student's views can reach. */
#define MAX_VERSION 9223372036854775806LL

static double
ms_since(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double) (now.tv_sec - start->tv_sec) * 1e3 + (now.tv_nsec - start->tv_nsec) / 1e6;
}

static void
log_cache(kc_log_level level, const char *msg, const char *student, kc_view view,
		  const char *reason, bool existed, long long version, double ms)
{
	kc_logline	l;
	char		key[128];

	if (!kc_log_enabled(level))
		return;
	kc_cache_key(key, sizeof(key), view, student);
	kc_log_begin(&l, level, msg);
	kc_log_str(&l, "studentId", student);
	kc_log_str(&l, "cacheKey", key);
	kc_log_str(&l, "reason", reason);
	kc_log_bool(&l, "existedBefore", existed);
	if (version >= 0)
		kc_log_int(&l, "version", version);
	kc_log_ms(&l, "durationMs", ms);
	kc_log_end(&l);
}

/*
 * Reads the version the request needs into req->min_version: the larger of
 * ?min_version= and the KC-Min-Version header, 0 when neither is given; false
 * with a 400 in resp when either is not a non-negative integer.
 */
static bool
read_min_version(kc_request *req, kc_response *resp)
{
	const char *sources[2] = {kc_req_query(req, "min_version"), kc_req_header(req, "KC-Min-Version")};
	long long	v;

	req->min_version = 0;
	for (int i = 0; i < 2; i++)
	{
		if (!sources[i])
			continue;
		if (!kc_parse_int_param(sources[i], 0, MAX_VERSION, &v))
		{
			kc_resp_error(resp, 400, "bad_request",
						  i == 0 ? "min_version must be a non-negative integer"
						  : "KC-Min-Version must be a non-negative integer");
			return false;
		}
		if (v > req->min_version)
			req->min_version = v;
	}
	return true;
}

/* Answers 304 when the client already holds this version, else 200 with body (one reference, taken over). */
static void
answer_view(kc_request *req, kc_response *resp, kc_body *body)
{
	snprintf(resp->etag, sizeof(resp->etag), "\"v%lld\"", body->version);
	resp->cache_control = "private, no-cache";
	if (kc_etag_matches(kc_req_header(req, "If-None-Match"), resp->etag))
	{
		kc_body_unref(body);
		kc_resp_static(resp, 304, NULL, NULL, 0);
		return;
	}
	kc_resp_shared(resp, 200, "application/json", body);
}

/*
 * A miss read on a replica: answered (true) only when the replica's view is
 * at least min_version and the fenced fill stored it, i.e. no invalidation
 * the replica has not replayed yet raised the fence above it. Otherwise the
 * caller reads the primary.
 */
static bool
serve_from_replica(kc_request *req, kc_response *resp, kc_view view, uint64_t ticket,
				   const struct timespec *start)
{
	kc_app	   *app = req->app;
	kc_body    *body = kc_replicas_read(app->replicas, view == KC_VIEW_HOME ? KC_STMT_HOME : KC_STMT_LEARNING,
										req->student, req->min_version);

	if (!body)
		return false;
	if (kc_cache_store(app->cache, view, req->student, ticket, body, KC_FILL_REPLICA) != 1)
	{
		kc_metrics_add(KC_M_REPLICA_BEHIND, 1);
		kc_body_unref(body);
		return false;
	}
	kc_metrics_add(KC_M_FILLS, 1);
	kc_metrics_add(KC_M_REPLICA_READS, 1);
	log_cache(KC_LOG_INFO, "Cache SET", req->student, view, "filled_from_replica", false, body->version,
			  ms_since(start));
	kc_metrics_cache(req->route, KC_CACHE_OUT_MISS);
	resp->x_cache = "MISS";
	answer_view(req, resp, body);
	return true;
}

static void
serve_view(kc_request *req, kc_response *resp, kc_view view)
{
	kc_app	   *app = req->app;
	const char *student = req->student;
	const char *params[1] = {student};
	struct timespec start;
	kc_cache_outcome outcome = KC_CACHE_OUT_BYPASS;
	PGresult   *res;
	kc_db_status st;
	char		msg[512] = "";
	kc_body    *body = NULL;
	uint64_t	ticket = 0;

	if (!read_min_version(req, resp))
		return;
	clock_gettime(CLOCK_MONOTONIC, &start);
	if (kc_cache_usable(app->cache))
	{
		bool		local;
		kc_get_result g = kc_cache_lookup(app->cache, view, student, req->min_version,
										  &body, &ticket, &local);

		if (g == KC_GET_HIT)
		{
			if (kc_log_enabled(KC_LOG_DEBUG))	/* the hot path: no clock read for a line not written */
				log_cache(KC_LOG_DEBUG, "Cache HIT", student, view, local ? "cached_in_process" : "cached",
						  true, body->version, ms_since(&start));
			kc_metrics_cache(req->route, KC_CACHE_OUT_HIT);
			resp->x_cache = "HIT";
			answer_view(req, resp, body);
			return;
		}
		if (g == KC_GET_MISS || g == KC_GET_TOO_OLD)
		{
			outcome = KC_CACHE_OUT_MISS;
			log_cache(KC_LOG_DEBUG, "Cache MISS", student, view,
					  g == KC_GET_MISS ? "not_cached" : "older_than_min_version", g == KC_GET_TOO_OLD, -1,
					  ms_since(&start));
			if (app->replicas && serve_from_replica(req, resp, view, ticket, &start))
				return;
		}
	}
	st = kc_db_exec(app->db, view == KC_VIEW_HOME ? KC_STMT_HOME : KC_STMT_LEARNING,
					1, params, &res, msg, sizeof(msg));
	if (st != KC_DB_OK)
	{
		kc_resp_db_error(req, resp, st, "invalid parameter", msg);
		return;
	}
	body = kc_body_new(PQgetvalue(res, 0, 0), (size_t) PQgetlength(res, 0, 0),
					   strtoll(PQgetvalue(res, 0, 1), NULL, 10));
	PQclear(res);
	if (!body)
	{
		kc_resp_error(resp, 500, "internal", "out of memory");
		return;
	}

	if (outcome == KC_CACHE_OUT_MISS)
	{
		int			stored = kc_cache_store(app->cache, view, student, ticket, body, KC_FILL_PRIMARY);

		if (stored == 1)
		{
			kc_metrics_add(KC_M_FILLS, 1);
			log_cache(KC_LOG_INFO, "Cache SET", student, view, "filled_after_miss", false, body->version,
					  ms_since(&start));
		}
		else if (stored == 0)
		{
			kc_metrics_add(KC_M_FILLS_REFUSED, 1);
			log_cache(KC_LOG_INFO, "Cache SET", student, view, "refused_fence_ahead", false, body->version,
					  ms_since(&start));
		}
	}
	kc_metrics_cache(req->route, outcome);
	resp->x_cache = outcome == KC_CACHE_OUT_MISS ? "MISS" : "BYPASS";
	answer_view(req, resp, body);
}

void
kc_route_home(kc_request *req, kc_response *resp)
{
	serve_view(req, resp, KC_VIEW_HOME);
}

void
kc_route_learning(kc_request *req, kc_response *resp)
{
	serve_view(req, resp, KC_VIEW_LEARNING);
}

void
kc_route_sessions(kc_request *req, kc_response *resp)
{
	kc_sessions_query q;
	const char *bad = kc_sessions_query_check(kc_req_query(req, "status"), kc_req_query(req, "from"),
											  kc_req_query(req, "to"), kc_req_query(req, "after"),
											  kc_req_query(req, "limit"), &q);
	char		limit_buf[16];
	const char *params[6];
	PGresult   *res;
	kc_db_status st;
	char		msg[512] = "";
	size_t		len;
	char	   *body;

	if (bad)
	{
		kc_resp_error(resp, 400, "bad_request", bad);
		return;
	}
	snprintf(limit_buf, sizeof(limit_buf), "%lld", q.limit);
	params[0] = req->student;
	params[1] = q.status;
	params[2] = q.from;
	params[3] = q.to;
	params[4] = q.after;
	params[5] = limit_buf;
	st = kc_db_exec(req->app->db, KC_STMT_SESSIONS, 6, params, &res, msg, sizeof(msg));
	if (st != KC_DB_OK)
	{
		kc_resp_db_error(req, resp, st, "invalid from, to or after parameter", msg);
		return;
	}
	len = (size_t) PQgetlength(res, 0, 0);
	body = malloc(len + 1);
	if (body)
		memcpy(body, PQgetvalue(res, 0, 0), len + 1);
	PQclear(res);
	if (!body)
	{
		kc_resp_error(resp, 500, "internal", "out of memory");
		return;
	}
	resp->cache_control = "private, no-store";
	kc_resp_body(resp, 200, "application/json", body, len);
}
