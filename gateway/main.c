/*
 * main.c - kc-gateway: configuration, start-up, signal handling, shutdown.
 *
 * With --processes N the supervisor (supervisor.c) binds the port and forks N
 * children right after the configuration is read, and the listener process
 * (feed.h); each child then starts as below, on the socket it was given, its
 * listener reading the listener process's feed.
 *
 * Start-up order: config -> open-files limit -> pools (lazy connections) ->
 * WebSocket hub -> listener thread (it syncs the cache before requests may use
 * it, and feeds the hub) -> HTTP server. SIGTERM/SIGINT drain the HTTP server
 * (WebSockets are closed with 1001 first), then stop the listener and free
 * everything.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "auth.h"
#include "auth_cache.h"
#include "cache.h"
#include "config.h"
#include "db.h"
#include "feed.h"
#include "http.h"
#include "listen.h"
#include "log.h"
#include "metrics.h"
#include "replica.h"
#include "supervisor.h"
#include "websocket.h"

/*
 * Reads dir/name into *page (NULL when it cannot: logged as what, not fatal).
 * The pages are read once, at start, so every request serves them from memory.
 */
static void
load_page(const char *dir, const char *name, const char *what, char **page, size_t *len)
{
	char		path[4096];
	FILE	   *f;
	long		size;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "rb");
	if (!f)
	{
		kc_logf(KC_LOG_WARN, "%s %s not readable: %s", what, path, strerror(errno));
		return;
	}
	if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) > 0 && size < (1 << 22) &&
		fseek(f, 0, SEEK_SET) == 0)
	{
		*page = malloc((size_t) size);
		if (*page && fread(*page, 1, (size_t) size, f) == (size_t) size)
			*len = (size_t) size;
		else
		{
			free(*page);
			*page = NULL;
		}
	}
	fclose(f);
}

/*
 * Every socket holds a descriptor: the soft open-files limit is lifted to the
 * hard one, and the hard one to --open-files (or to what the WebSockets and
 * the HTTP connections need) when that is allowed (root); else a warning says
 * what is short.
 */
static void
raise_open_files(const kc_config *cfg)
{
	struct rlimit rl;
	rlim_t		want = cfg->open_files > 0 ? (rlim_t) cfg->open_files :
		(rlim_t) cfg->ws_max_connections + KC_HTTP_MAX_CONNECTIONS + 64;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	if (rl.rlim_max < want)
	{
		struct rlimit up = {want, want};

		if (setrlimit(RLIMIT_NOFILE, &up) == 0)
			rl = up;
	}
	if (rl.rlim_cur < rl.rlim_max)
	{
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur < want)
		kc_logf(KC_LOG_WARN, "open-files limit %llu is below the %llu wanted for %d WebSockets: "
				"raise the hard limit (ulimit -Hn, or run as root; fs.nr_open bounds it)",
				(unsigned long long) rl.rlim_cur, (unsigned long long) want, cfg->ws_max_connections);
}

static int
issue_token(const kc_config *cfg)
{
	char	   *tok = kc_auth_issue(cfg->jwt_secret, cfg->issue_token, cfg->token_role, cfg->token_ttl);

	if (!tok)
	{
		fprintf(stderr, "kc-gateway: cannot sign a token\n");
		return 1;
	}
	printf("%s\n", tok);
	free(tok);
	return 0;
}

int
main(int argc, char **argv)
{
	kc_config	cfg;
	kc_app		app;
	char		err[512];
	sigset_t	sigs;
	int			sig = 0;
	int			child = 0;
	int			listen_fd = -1;

	switch (kc_config_load(&cfg, argc, argv, err, sizeof(err)))
	{
		case KC_CONFIG_EXIT:
			kc_config_free(&cfg);
			return 0;
		case KC_CONFIG_ERROR:
			fprintf(stderr, "kc-gateway: %s\n", err);
			kc_config_free(&cfg);
			return 2;
		case KC_CONFIG_OK:
			break;
	}
	if (cfg.issue_token[0])
	{
		int			rc = issue_token(&cfg);

		kc_config_free(&cfg);
		return rc;
	}
	kc_log_set_level(cfg.log_level);
	if (cfg.processes > 1)
	{
		/* the supervisor stays in kc_supervise; each child goes on below as a whole gateway */
		int			rc = kc_supervise(&cfg, &child, &listen_fd);

		if (rc < 0 && child == cfg.processes + 1)
			rc = kc_feed_process_main(&cfg, listen_fd);
		if (rc >= 0)
		{
			kc_config_free(&cfg);
			return rc;
		}
	}

	/* signals are taken synchronously by this thread; every other thread inherits the mask */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	memset(&app, 0, sizeof(app));
	app.cfg = &cfg;
	app.listen_fd = listen_fd;
	if (!cfg.auth)
	{
		kc_logf(KC_LOG_WARN, "AUTHENTICATION IS OFF (KC_AUTH=off): every student's data is served to anyone; local demos only");
		fprintf(stderr, "\n*** kc-gateway: AUTHENTICATION IS OFF - never run like this outside a local demo ***\n\n");
	}
	load_page(cfg.static_dir, "index.html", "demo page", &app.index_html, &app.index_len);
	load_page(cfg.static_dir, "admin.html", "operator console", &app.admin_html, &app.admin_len);
	app.db = kc_db_create(cfg.database_url, cfg.pg_pool, cfg.pg_timeout_ms, "postgres");
	/* one extra Redis connection for the listener */
	app.cache = kc_cache_create(cfg.redis_url, cfg.redis_pool + 1, cfg.cache_ttl, err, sizeof(err));
	if (!app.db || !app.cache || !kc_cache_enable_local(app.cache, cfg.local_cache) ||
		!kc_auth_cache_init(cfg.token_cache))
	{
		fprintf(stderr, "kc-gateway: %s\n", app.cache ? "out of memory" : err);
		return 2;
	}
	app.replicas = kc_replicas_create(cfg.replica_url, cfg.pg_pool, cfg.pg_timeout_ms, err, sizeof(err));
	if (!app.replicas && err[0])
	{
		fprintf(stderr, "kc-gateway: %s\n", err);
		return 2;
	}
	raise_open_files(&cfg);
	if (!kc_ws_start(&app))
	{
		fprintf(stderr, "kc-gateway: cannot start the WebSocket thread\n");
		return 1;
	}
	if (child > 0)
		app.listener = kc_listener_follow(kc_feed_address(), app.cache, kc_ws_on_event, kc_ws_on_skip,
										  kc_ws_on_rewind, &app);
	else
		app.listener = kc_listener_start(cfg.database_url, app.cache, kc_ws_on_event, kc_ws_on_skip,
										 kc_ws_on_rewind, &app);
	if (!app.listener)
	{
		fprintf(stderr, "kc-gateway: cannot start the listener thread\n");
		return 1;
	}
	if (!kc_http_start(&app, err, sizeof(err)))
	{
		fprintf(stderr, "kc-gateway: %s\n", err);
		kc_listener_stop(app.listener);
		return 1;
	}
	kc_metrics_set_serving(true);
	{
		kc_logline	l;

		kc_log_begin(&l, KC_LOG_INFO, "kc-gateway listening");
		kc_log_str(&l, "listen", cfg.listen);
		if (child > 0)
			kc_log_int(&l, "processes", cfg.processes);
		kc_log_int(&l, "threads", cfg.threads);
		kc_log_bool(&l, "auth", cfg.auth);
		kc_log_int(&l, "cacheTtl", cfg.cache_ttl);
		kc_log_int(&l, "localCache", cfg.local_cache);
		kc_log_bool(&l, "replicas", app.replicas != NULL);
		kc_log_int(&l, "tokenCache", cfg.token_cache);
		kc_log_end(&l);
	}

	while (sigwait(&sigs, &sig) != 0 || (sig != SIGTERM && sig != SIGINT))
		;
	kc_logf(KC_LOG_INFO, "signal %d: draining (up to %d s)", sig, cfg.drain_timeout);
	kc_metrics_set_serving(false);
	kc_http_drain_and_stop(&app, cfg.drain_timeout);
	kc_listener_stop(app.listener);
	kc_ws_free(&app);
	kc_cache_destroy(app.cache);
	kc_replicas_destroy(app.replicas);
	kc_auth_cache_free();
	kc_db_destroy(app.db);
	free(app.index_html);
	free(app.admin_html);
	kc_config_free(&cfg);
	kc_logf(KC_LOG_INFO, "kc-gateway stopped");
	return 0;
}
