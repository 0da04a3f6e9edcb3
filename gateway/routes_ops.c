/*
 * routes_ops.c - operational routes: /healthz (the process answers),
 * /readyz (Postgres answers, LISTEN is up, not draining, and the catch-up is
 * at most READY_MAX_LAG_S behind the log; Redis and cache state are reported
 * but not required: without Redis the gateway still serves, bypassing the
 * cache; a 503 says why in "reason"; with --processes N, also every process
 * serving and listening, none dropped from the listener process's feed and
 * not resynced or more than READY_MAX_LAG_S behind what it handed out, and
 * which one answered), /metrics (Prometheus text,
 * the sum of every process), / (the demo page), and
 * the 404 of every path the route table does not know.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "listen.h"
#include "metrics.h"
#include "routes.h"

/* the catch-up may be this far behind the newest committed event and still be ready */
#define READY_MAX_LAG_S 5.0
/* the largest body of /readyz (the reasons included) */
#define READY_BODY_MAX 768

void
kc_route_healthz(kc_request *req, kc_response *resp)
{
	static const char ok[] = "{\"status\":\"ok\"}";

	resp->cache_control = "no-store";
	kc_resp_static(resp, 200, "application/json", ok, sizeof(ok) - 1);
}

void
kc_route_readyz(kc_request *req, kc_response *resp)
{
	kc_app	   *app = req->app;
	PGresult   *res = NULL;
	bool		pg = kc_db_exec(app->db, KC_STMT_PING, 0, NULL, &res, NULL, 0) == KC_DB_OK;
	bool		redis = kc_cache_redis_up(app->cache);
	bool		listening = kc_listener_connected(app->listener);
	bool		synced = kc_cache_usable(app->cache);
	bool		draining = atomic_load(&app->draining);
	double		lag = 0;
	bool		lag_known = kc_listener_lag(app->listener, &lag);
	int			procs = kc_metrics_processes();
	int			serving = kc_metrics_processes_serving();
	int			procs_listening = (int) kc_metrics_gauge(KC_G_LISTEN_CONNECTED);
	struct timespec now;
	kc_feed_laggard behind;
	bool		laggard;
	char		laggard_text[128];
	const char *reason;
	bool		ready;

	clock_gettime(CLOCK_MONOTONIC, &now);
	laggard = procs > 1 &&
		kc_metrics_feed_laggard(READY_MAX_LAG_S, (long long) now.tv_sec * 1000 + now.tv_nsec / 1000000, &behind);
	if (laggard && behind.dropped)
		snprintf(laggard_text, sizeof(laggard_text),
				 "process %d (pid %d) was dropped from the feed and has not resynced", behind.index, behind.pid);
	else if (laggard)
		snprintf(laggard_text, sizeof(laggard_text),
				 "process %d (pid %d) is %.1f s behind the events the listener process handed out",
				 behind.index, behind.pid, behind.behind_s);
	reason = draining ? "draining" : !pg ? kc_db_down_reason(app->db) :
		!listening ? "listen connection down" :
		lag_known && lag > READY_MAX_LAG_S ? "catch-up behind the newest committed event" :
		procs > 1 && serving < procs ? "a process of the gateway is not serving (restarting)" :
		procs > 1 && procs_listening < procs ? "a process of the gateway has no listen connection" :
		laggard ? laggard_text : NULL;
	ready = reason == NULL;
	char		lag_text[32] = "null";
	char		procs_text[96] = "";
	char	   *body = malloc(READY_BODY_MAX);
	int			n;

	PQclear(res);
	if (!body)
	{
		kc_resp_error(resp, 500, "internal", "out of memory");
		return;
	}
	if (lag_known)
		snprintf(lag_text, sizeof(lag_text), "%.3f", lag);
	if (procs > 1)
		snprintf(procs_text, sizeof(procs_text),
				 ",\"process\":%d,\"processes\":%d,\"processes_serving\":%d,\"processes_listening\":%d",
				 kc_metrics_process_index(), procs, serving, procs_listening);
	n = snprintf(body, READY_BODY_MAX,
				 "{\"status\":\"%s\",\"postgres\":%s,\"redis\":%s,\"listen\":%s,"
				 "\"cache_synced\":%s,\"draining\":%s,\"watermark\":%lld,\"catchup_lag_seconds\":%s%s%s%s%s}",
				 ready ? "ready" : "not_ready", pg ? "true" : "false",
				 redis ? "true" : "false", listening ? "true" : "false",
				 synced ? "true" : "false", draining ? "true" : "false",
				 kc_listener_watermark(app->listener), lag_text, procs_text,
				 reason ? ",\"reason\":\"" : "", reason ? reason : "", reason ? "\"" : "");
	resp->cache_control = "no-store";
	kc_resp_body(resp, ready ? 200 : 503, "application/json", body, (size_t) n);
	if (!ready)
		resp->retry_after = app->cfg->retry_after;
}

void
kc_route_metrics(kc_request *req, kc_response *resp)
{
	size_t		len = 0;
	char	   *text = kc_metrics_render(&len);

	if (!text)
	{
		kc_resp_error(resp, 500, "internal", "out of memory");
		return;
	}
	resp->cache_control = "no-store";
	kc_resp_body(resp, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
}

void
kc_route_static(kc_request *req, kc_response *resp)
{
	kc_app	   *app = req->app;

	if (!app->index_html)
	{
		kc_resp_error(resp, 404, "not_found", "the demo page is not installed (see --static-dir)");
		return;
	}
	resp->cache_control = "no-cache";
	kc_resp_static(resp, 200, "text/html; charset=utf-8", app->index_html, app->index_len);
}

void
kc_route_not_found(kc_request *req, kc_response *resp)
{
	kc_resp_error(resp, 404, "not_found", "no such route");
}
