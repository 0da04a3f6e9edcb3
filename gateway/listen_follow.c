/*
 * listen_follow.c - a child's listener in a gateway of several processes:
 * one thread that reads the listener process's feed (feed.h) in place of
 * LISTEN and the catch-up, and gives the child's subscriber (the WebSocket
 * hub) what a listener of its own would: the events in log order, after
 * their invalidation (in Redis by the listener process, here in this
 * process's cache), the skips and the rewinds.
 *
 * The child's cache is usable only while the feed is up, the listener
 * process says it is synced, and the Redis this process reaches holds a
 * watermark at or past the last event handed over here (so every event
 * handed over is invalidated there): it goes unsynced (flushing its
 * in-process views) the moment any of these fails, and synced again once all
 * hold. It reports "connected" (for /readyz) while the feed is up and the
 * listener process holds LISTEN and has tried its first catch-up, and it
 * publishes the position it applied in the shared metrics segment, so that
 * /readyz on any child can tell it is behind or dropped (metrics.h).
 *
 * The child's own cursor (the watermark, the hub's position) is the last
 * event handed over. A message whose "prev" is past it (a listener process
 * that started past this child, say after another gateway of a fleet raised
 * the Redis watermark) makes the sockets refetch, as a trim does; events at
 * or below it (a restarted listener process replays from the Redis
 * watermark) are not handed over twice.
 */
#define _GNU_SOURCE
#include "listen_int.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "feed.h"
#include "log.h"
#include "metrics.h"

#define TICK_MS 100
#define RETRY_MS 100
#define SYNC_RETRY_MS 100

/* What this child knows of the listener process, on its connection. */
typedef struct upstream
{
	bool		greeted;
	bool		connected;
	bool		synced;
	double		last_sync_try;
} upstream;

static double
mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double) ts.tv_sec + ts.tv_nsec / 1e9;
}

static bool
nap(kc_listener *l, int ms)
{
	struct pollfd p = {l->wake[0], POLLIN, 0};

	poll(&p, 1, ms);
	return !atomic_load(&l->stop);
}

/* Publishes connected; the gauge follows. */
static void
set_connected(kc_listener *l, bool on)
{
	if (atomic_exchange(&l->connected, on) != on)
		kc_metrics_set(KC_G_LISTEN_CONNECTED, on ? 1 : 0);
}

/* "connected synced lag_us" of a hello or a state message. */
static void
take_state(kc_listener *l, upstream *up, const char *s)
{
	int			connected,
				synced;
	long long	lag_us;

	if (sscanf(s, "%d %d %lld", &connected, &synced, &lag_us) != 3)
		return;
	up->connected = connected != 0;
	up->synced = synced != 0;
	if (!up->synced)
		kc_cache_set_unsynced(l->cache);
	atomic_store(&l->lag_us, lag_us < 0 ? 0 : lag_us);
	atomic_store(&l->lag_known, lag_us >= 0);
	set_connected(l, up->greeted && up->connected);
}

/* Events up to head will not come: the sockets that were sent less refetch. */
static void
skip_to(kc_listener *l, long long floor_pos, long long head)
{
	if (head <= atomic_load(&l->watermark))
		return;
	kc_cache_set_unsynced(l->cache);	/* synced again by the next message that says so */
	if (l->on_skip)
		l->on_skip(floor_pos, head, l->arg);
	atomic_store(&l->watermark, head);
}

/* An event message past its header; false when malformed. */
static bool
take_event(kc_listener *l, upstream *up, const char *msg, size_t len)
{
	int			synced,
				has_corr;
	long long	prev;
	kc_event_note ev;
	const char *f[5];
	const char *p = msg + strlen(msg) + 1;

	if (sscanf(msg, "E %d %lld %lld %lld %d", &synced, &prev, &ev.id, &ev.version, &has_corr) != 5)
		return false;
	for (int i = 0; i < 5; i++)
	{
		if (p >= msg + len)
			return false;
		f[i] = p;
		p += strlen(p) + 1;
	}
	ev.type = f[0];
	ev.student_id = f[1];
	ev.correlation_id = has_corr ? f[2] : NULL;
	ev.created_at = f[3][0] ? f[3] : NULL;
	ev.payload = f[4];
	ev.more = false;
	/* the listener process handed it over with Redis away: requests must bypass Redis */
	up->synced = synced != 0;
	if (!up->synced)
		kc_cache_set_unsynced(l->cache);
	kc_cache_invalidate_local(l->cache, ev.student_id);
	if (atomic_load(&l->watermark) == 0)
		atomic_store(&l->watermark, prev);	/* handed nothing yet: the stream starts here */
	else if (prev > atomic_load(&l->watermark))
		skip_to(l, atomic_load(&l->watermark), prev);
	if (ev.id <= atomic_load(&l->watermark))
		return true;			/* handed over before (a restarted listener process replays) */
	if (l->on_event)
		l->on_event(&ev, l->arg);
	atomic_store(&l->watermark, ev.id);
	return true;
}

static void
take_message(kc_listener *l, upstream *up, char *msg, size_t len)
{
	long long	a,
				b;

	msg[len - 1] = '\0';
	switch (msg[0])
	{
		case 'H':
			if (sscanf(msg, "H %lld", &a) != 1)
				break;
			up->greeted = true;
			if (a < 0)
				;				/* the listener process has not started: its events say where */
			else if (atomic_load(&l->watermark) == 0)
				atomic_store(&l->watermark, a);
			else if (a > atomic_load(&l->watermark))
				skip_to(l, atomic_load(&l->watermark), a);
			take_state(l, up, strchr(msg + 2, ' ') + 1);
			return;
		case 'S':
			take_state(l, up, msg + 2);
			return;
		case 'E':
			if (take_event(l, up, msg, len))
				return;
			break;
		case 'K':
			if (sscanf(msg, "K %lld %lld", &a, &b) != 2)
				break;
			skip_to(l, a, b);
			return;
		case 'R':
			if (sscanf(msg, "R %lld", &a) != 1)
				break;
			kc_cache_set_unsynced(l->cache);
			atomic_store(&l->watermark, a);
			if (l->on_rewind)
				l->on_rewind(a, l->arg);
			return;
	}
	kc_logf(KC_LOG_WARN, "feed: ignoring a malformed message: %.100s", msg);
}

/*
 * The cache goes synced again once the listener process says it is and the
 * Redis this process reaches has the invalidation of every event handed over
 * here applied (its watermark at or past this child's): a Redis this child
 * saw fail may have come back from an older dump before the listener process
 * noticed, and then it waits for that one's resync.
 */
static void
maybe_sync(kc_listener *l, upstream *up)
{
	unsigned long epoch;
	double		now = mono_s();
	long long	wm,
				wm_event;
	char		ident[KC_EVENT_IDENT_MAX];

	if (!up->greeted || !up->connected || !up->synced || kc_cache_usable(l->cache) ||
		now - up->last_sync_try < SYNC_RETRY_MS / 1000.0)
		return;
	up->last_sync_try = now;
	epoch = kc_cache_down_epoch(l->cache);
	if (kc_cache_get_watermark(l->cache, &wm, &wm_event, ident, sizeof(ident)) == 1 &&
		wm >= atomic_load(&l->watermark) && kc_cache_set_synced(l->cache, epoch))
		kc_logf(KC_LOG_INFO, "cache synced (fed by the listener process)");
}

/* Reads one feed connection until it ends or the listener stops. */
static void
serve_feed(kc_listener *l, int fd, char *buf)
{
	upstream	up = {0};

	while (!atomic_load(&l->stop))
	{
		struct pollfd p[2] = {{fd, POLLIN, 0}, {l->wake[0], POLLIN, 0}};
		struct timespec now;

		if (poll(p, 2, TICK_MS) < 0 && errno != EINTR)
			break;
		if (p[1].revents)
			break;
		if (p[0].revents)
		{
			ssize_t		n = recv(fd, buf, KC_FEED_MAX_MSG + 1, MSG_DONTWAIT);

			if (n <= 0 && !(n < 0 && (errno == EAGAIN || errno == EINTR)))
			{
				kc_logf(KC_LOG_WARN, "feed from the listener process lost: %s",
						n == 0 ? "closed" : strerror(errno));
				break;
			}
			if (n > 0)
			{
				take_message(l, &up, buf, (size_t) n);
				/* for /readyz: a greeting resyncs (it clears a drop's mark) */
				kc_metrics_feed_applied(atomic_load(&l->watermark), buf[0] == 'H');
			}
		}
		/* the listener process's state is as fresh as its last message: a poll's age counts from here */
		clock_gettime(CLOCK_MONOTONIC, &now);
		atomic_store(&l->lag_polled_ms, (long long) now.tv_sec * 1000 + now.tv_nsec / 1000000);
		maybe_sync(l, &up);
	}
}

static void *
follow_main(void *arg)
{
	kc_listener *l = arg;
	char	   *buf = malloc(KC_FEED_MAX_MSG + 1);
	struct sockaddr_un addr;
	socklen_t	alen;
	bool		warned = false;

	pthread_setname_np(pthread_self(), "kc-feed-follow");
	memset(&addr, 0, sizeof(addr));
	addr.sun_family = AF_UNIX;
	memcpy(addr.sun_path + 1, l->conninfo, strlen(l->conninfo));
	alen = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + 1 + strlen(l->conninfo));
	while (buf && !atomic_load(&l->stop))
	{
		int			fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

		if (fd < 0 || connect(fd, (struct sockaddr *) &addr, alen) != 0)
		{
			if (!warned)
				kc_logf(KC_LOG_WARN, "cannot reach the listener process's feed @%s: %s (retrying)",
						l->conninfo, strerror(errno));
			warned = true;
			if (fd >= 0)
				close(fd);
			nap(l, RETRY_MS);
			continue;
		}
		warned = false;
		serve_feed(l, fd, buf);
		close(fd);
		/* events may be missed from now on: requests bypass the cache */
		set_connected(l, false);
		atomic_store(&l->lag_known, false);
		kc_cache_set_unsynced(l->cache);
		if (!atomic_load(&l->stop))
		{
			kc_metrics_add(KC_M_LISTEN_RECONNECTS, 1);
			nap(l, RETRY_MS);
		}
	}
	if (!buf)
		kc_logf(KC_LOG_ERROR, "out of memory for the feed's buffer");
	free(buf);
	return NULL;
}

kc_listener *
kc_listener_follow(const char *feed, kc_cache *cache, kc_event_fn on_event, kc_skip_fn on_skip,
				   kc_rewind_fn on_rewind, void *arg)
{
	if (strlen(feed) > sizeof(((struct sockaddr_un *) 0)->sun_path) - 2)
		return NULL;
	return kc_listener_spawn(feed, cache, on_event, on_skip, on_rewind, arg, follow_main);
}
