/*
 * feed_process.c - the listener process of a gateway of several processes
 * (feed.h): forked by the supervisor beside the children, it runs the
 * gateway's one listener (LISTEN, catch-up, Redis invalidation) and hands
 * its events to the children through the feed. It serves no HTTP. SIGTERM
 * or SIGINT stop it; the supervisor restarts it when it dies, on the same
 * feed socket, and the children reconnect.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>

#include "feed.h"
#include "log.h"

int
kc_feed_process_main(const kc_config *cfg, int feed_fd)
{
	sigset_t	sigs;
	int			sig = 0;
	char		err[512];
	kc_cache   *cache;
	kc_feed    *feed;
	kc_listener *l;

	prctl(PR_SET_NAME, "kc-gw-listener");	/* how ps and the tests tell it from the children */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	/* the listener's catch-up and health poll share one connection; the sync's ping another */
	cache = kc_cache_create(cfg->redis_url, 2, cfg->cache_ttl, err, sizeof(err));
	if (!cache)
	{
		kc_logf(KC_LOG_ERROR, "listener process: %s", err);
		return 2;
	}
	feed = kc_feed_start(feed_fd, cache);
	l = feed ? kc_listener_start(cfg->database_url, cache, kc_feed_on_event, kc_feed_on_skip,
								 kc_feed_on_rewind, feed) : NULL;
	if (!l)
	{
		kc_logf(KC_LOG_ERROR, "listener process: cannot start its threads");
		kc_feed_stop(feed);
		kc_cache_destroy(cache);
		return 1;
	}
	kc_feed_attach(feed, l);
	kc_logf(KC_LOG_INFO, "listener process: feeding the gateway's processes");
	while (sigwait(&sigs, &sig) != 0 || (sig != SIGTERM && sig != SIGINT))
		;
	kc_feed_attach(feed, NULL);
	kc_listener_stop(l);
	kc_feed_stop(feed);
	kc_cache_destroy(cache);
	kc_logf(KC_LOG_INFO, "listener process stopped");
	return 0;
}
