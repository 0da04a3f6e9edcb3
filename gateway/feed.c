/*
 * feed.c - the listener process's side of the feed (feed.h): the socket the
 * supervisor binds, the children it accepts, and the messages it sends them.
 *
 * The listener thread calls kc_feed_on_event/on_skip/on_rewind; the feed's
 * own thread accepts children, greets each with the position the stream has
 * reached, and every 50 ms sends the listener's state when it changed.
 * Every send happens under one lock, so a child sees the messages in the
 * order the listener produced them, and a state read under that lock is
 * never sent after an event that came later. The events of one catch-up
 * batch (kc_event_note.more) go to each child in one sendmmsg at the
 * batch's end: a child's reader wakes once per batch, not once per event,
 * and the listener is not preempted by six readers between two events of a
 * batch. Whatever else is sent (a state, a greeting, a skip, a rewind)
 * sends the events held so far first, so the order stays the listener's.
 * Sends never block: a child whose socket buffer is full is dropped (it
 * reconnects and refetches).
 * For /readyz, it marks a dropped child in the shared metrics segment, and
 * every tick since when each child is behind what it handed out (metrics.h).
 */
#define _GNU_SOURCE
#include "feed.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "metrics.h"

#define MAX_CHILDREN 64
#define STATE_TICK_MS 50
#define SNDBUF (4 * 1024 * 1024)
/* ticks of history (12.8 s): longer than the 5 s /readyz allows a child to be behind */
#define HISTORY 256
/* the events of a batch held for one sendmmsg: at most this many, of at most this many bytes */
#define BATCH_MSGS 64
#define BATCH_BYTES (64 * 1024)

struct kc_feed
{
	int			listen_fd;
	kc_cache   *cache;
	_Atomic(kc_listener *) listener;
	pthread_t	thread;
	int			wake[2];
	_Atomic bool stop;
	pthread_mutex_t lock;		/* everything below, and every send */
	int			kids[MAX_CHILDREN];	/* their sockets */
	int			kid_pids[MAX_CHILDREN];	/* their pids (SO_PEERCRED), to mark a dropped one */
	int			nkids;
	long long	sent;			/* the position the stream has reached */
	bool		sent_any;
	char		state[64];		/* the last state sent */
	char	   *buf;			/* KC_FEED_MAX_MSG: one message being built */
	char	   *batch;			/* BATCH_BYTES: the batch's messages held, back to back */
	size_t		batch_len;
	struct iovec batch_iov[BATCH_MSGS];
	int			batch_n;
	long long	batch_last;		/* the log position of the last event held */
	bool		warned_buffer;	/* feed thread only */
	/* every tick, how far the stream had reached and when (ms): a ring of HISTORY */
	long long	hist_pos[HISTORY];
	long long	hist_ms[HISTORY];
	long long	hist_n;			/* samples taken since the last rewind */
};

static struct sockaddr_un feed_addr;
static socklen_t feed_addr_len;
static char feed_name[64];

static void drop(kc_feed *f, int i, const char *why);
static void flush_batch(kc_feed *f);
static void broadcast(kc_feed *f, const char *msg, size_t len);
static void state_text(kc_feed *f, char *out, size_t len);
static bool greet(kc_feed *f, int fd);
static void send_state(kc_feed *f);
static void note_behind(kc_feed *f);
static void *feed_main(void *arg);

int
kc_feed_listen(char *err, size_t errlen)
{
	int			fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	snprintf(feed_name, sizeof(feed_name), "kc-gateway-feed.%d", (int) getpid());
	memset(&feed_addr, 0, sizeof(feed_addr));
	feed_addr.sun_family = AF_UNIX;
	/* abstract: sun_path[0] is NUL, nothing to unlink */
	memcpy(feed_addr.sun_path + 1, feed_name, strlen(feed_name));
	feed_addr_len = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + 1 + strlen(feed_name));
	if (fd < 0 || bind(fd, (struct sockaddr *) &feed_addr, feed_addr_len) != 0 ||
		listen(fd, MAX_CHILDREN) != 0)
	{
		snprintf(err, errlen, "cannot listen on the feed socket @%s: %s", feed_name, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

const char *
kc_feed_address(void)
{
	return feed_name;
}

kc_feed *
kc_feed_start(int listen_fd, kc_cache *cache)
{
	kc_feed    *f = calloc(1, sizeof(*f));

	if (!f)
		return NULL;
	f->listen_fd = listen_fd;
	f->cache = cache;
	f->buf = malloc(KC_FEED_MAX_MSG);
	f->batch = malloc(BATCH_BYTES);
	pthread_mutex_init(&f->lock, NULL);
	if (!f->buf || !f->batch || pipe(f->wake) != 0)
	{
		free(f->buf);
		free(f->batch);
		free(f);
		return NULL;
	}
	if (pthread_create(&f->thread, NULL, feed_main, f) != 0)
	{
		close(f->wake[0]);
		close(f->wake[1]);
		free(f->buf);
		free(f->batch);
		free(f);
		return NULL;
	}
	return f;
}

void
kc_feed_attach(kc_feed *f, kc_listener *l)
{
	/* under the lock: once detached (NULL), the feed's thread no longer reads the old one */
	pthread_mutex_lock(&f->lock);
	atomic_store(&f->listener, l);
	pthread_mutex_unlock(&f->lock);
}

void
kc_feed_stop(kc_feed *f)
{
	if (!f)
		return;
	atomic_store(&f->stop, true);
	if (write(f->wake[1], "x", 1) < 0)
		kc_logf(KC_LOG_WARN, "cannot wake the feed thread");
	pthread_join(f->thread, NULL);
	for (int i = 0; i < f->nkids; i++)
		close(f->kids[i]);
	close(f->wake[0]);
	close(f->wake[1]);
	pthread_mutex_destroy(&f->lock);
	free(f->buf);
	free(f->batch);
	free(f);
}

/* Under the lock: closes child i; it reconnects, and its sockets refetch what it missed. */
static void
drop(kc_feed *f, int i, const char *why)
{
	kc_logline	l;

	kc_log_begin(&l, KC_LOG_WARN, "feed: dropping a gateway process (it reconnects, its sockets refetch)");
	kc_log_str(&l, "reason", why);
	kc_log_int(&l, "childPid", f->kid_pids[i]);
	kc_log_end(&l);
	/* marked before the close: the child cannot reconnect, resync and clear it first */
	kc_metrics_feed_dropped(f->kid_pids[i]);
	close(f->kids[i]);
	f->nkids--;
	f->kids[i] = f->kids[f->nkids];
	f->kid_pids[i] = f->kid_pids[f->nkids];
}

/*
 * Under the lock: the events held go to every child, one sendmmsg each (a
 * child that cannot take them all is dropped), and the stream's position
 * moves past them.
 */
static void
flush_batch(kc_feed *f)
{
	struct mmsghdr msgs[BATCH_MSGS];

	if (f->batch_n == 0)
		return;
	memset(msgs, 0, sizeof(msgs));
	for (int k = 0; k < f->batch_n; k++)
	{
		msgs[k].msg_hdr.msg_iov = &f->batch_iov[k];
		msgs[k].msg_hdr.msg_iovlen = 1;
	}
	for (int i = 0; i < f->nkids; i++)
	{
		int			n = sendmmsg(f->kids[i], msgs, (unsigned) f->batch_n, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n != f->batch_n)
			drop(f, i--, n >= 0 || errno == EAGAIN ? "its socket buffer is full" : strerror(errno));
	}
	f->sent = f->batch_last;
	f->sent_any = true;
	f->batch_n = 0;
	f->batch_len = 0;
}

/* Under the lock: msg to every child, after the events held. */
static void
broadcast(kc_feed *f, const char *msg, size_t len)
{
	flush_batch(f);
	for (int i = 0; i < f->nkids; i++)
	{
		if (send(f->kids[i], msg, len, MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t) len)
			drop(f, i--, errno == EAGAIN ? "its socket buffer is full" : strerror(errno));
	}
}

/* Under the lock: "connected synced lag_us" of the listener as now. */
static void
state_text(kc_feed *f, char *out, size_t len)
{
	kc_listener *l = atomic_load(&f->listener);
	double		lag = 0;
	bool		lag_known = l && kc_listener_lag(l, &lag);

	snprintf(out, len, "%d %d %lld", l && kc_listener_connected(l), kc_cache_usable(f->cache),
			 lag_known ? (long long) (lag * 1e6) : -1LL);
}

void
kc_feed_on_event(const kc_event_note *ev, void *arg)
{
	kc_feed    *f = arg;
	kc_listener *l = atomic_load(&f->listener);
	/* the listener raises its watermark after this call: it is the position before ev */
	long long	prev = l ? kc_listener_watermark(l) : 0;
	int			n;

	pthread_mutex_lock(&f->lock);
	n = snprintf(f->buf, KC_FEED_MAX_MSG, "E %d %lld %lld %lld %d%c%s%c%s%c%s%c%s%c%s",
				 kc_cache_usable(f->cache), prev, ev->id, ev->version, ev->correlation_id != NULL, 0,
				 ev->type, 0, ev->student_id, 0, ev->correlation_id ? ev->correlation_id : "", 0,
				 ev->created_at ? ev->created_at : "", 0, ev->payload ? ev->payload : "null");
	if (n >= KC_FEED_MAX_MSG)
	{
		/* too large to hand over: the sockets refetch instead */
		kc_logf(KC_LOG_WARN, "feed: event at log position %lld is larger than %d bytes: sockets told to refetch",
				ev->id, KC_FEED_MAX_MSG);
		n = snprintf(f->buf, KC_FEED_MAX_MSG, "K %lld %lld", prev, ev->id);
	}
	if ((size_t) n + 1 > BATCH_BYTES)
	{
		/* larger than a batch holds: alone, after the events held */
		broadcast(f, f->buf, (size_t) n + 1);
		f->sent = ev->id;
		f->sent_any = true;
	}
	else
	{
		if (f->batch_n == BATCH_MSGS || f->batch_len + (size_t) n + 1 > BATCH_BYTES)
			flush_batch(f);
		memcpy(f->batch + f->batch_len, f->buf, (size_t) n + 1);
		f->batch_iov[f->batch_n].iov_base = f->batch + f->batch_len;
		f->batch_iov[f->batch_n++].iov_len = (size_t) n + 1;
		f->batch_len += (size_t) n + 1;
		f->batch_last = ev->id;
		if (!ev->more)
			flush_batch(f);
	}
	pthread_mutex_unlock(&f->lock);
}

void
kc_feed_on_skip(long long floor_pos, long long head, void *arg)
{
	kc_feed    *f = arg;
	char		msg[64];
	int			n = snprintf(msg, sizeof(msg), "K %lld %lld", floor_pos, head);

	pthread_mutex_lock(&f->lock);
	broadcast(f, msg, (size_t) n + 1);
	f->sent = head;
	f->sent_any = true;
	pthread_mutex_unlock(&f->lock);
}

void
kc_feed_on_rewind(long long end, void *arg)
{
	kc_feed    *f = arg;
	char		msg[32];
	int			n = snprintf(msg, sizeof(msg), "R %lld", end);

	pthread_mutex_lock(&f->lock);
	broadcast(f, msg, (size_t) n + 1);
	f->sent = end;
	f->sent_any = true;
	f->hist_n = 0;				/* the positions before the rewind say nothing of those after */
	pthread_mutex_unlock(&f->lock);
}

/* Accepts a child: only a process of this user; false when none was waiting. */
static bool
accept_child(kc_feed *f)
{
	int			fd = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	struct ucred cred;
	socklen_t	len = sizeof(cred);
	int			size = SNDBUF;

	if (fd < 0)
		return false;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.uid != geteuid())
	{
		kc_logf(KC_LOG_WARN, "feed: refusing a connection from another user");
		close(fd);
		return true;
	}
	/*
	 * The buffer is how long a child may fall behind before it is dropped:
	 * 4 MiB holds about 6,500 events of 500 bytes. Without CAP_NET_ADMIN the
	 * kernel caps it at net.core.wmem_max (Debian: 208 KiB, about 330 events).
	 */
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(size)) != 0)
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
	len = sizeof(size);
	if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, &len) == 0 && size < SNDBUF && !f->warned_buffer)
	{
		kc_logf(KC_LOG_WARN, "feed: a child's socket buffer is %d bytes, not %d: a child that falls "
				"behind by more is dropped sooner (raise net.core.wmem_max)", size, SNDBUF);
		f->warned_buffer = true;
	}
	pthread_mutex_lock(&f->lock);
	/* the events held go to the others first: the greeting's position is past them */
	flush_batch(f);
	if (f->nkids == MAX_CHILDREN)
	{
		kc_logf(KC_LOG_WARN, "feed: more than %d gateway processes connected", MAX_CHILDREN);
		close(fd);
	}
	else if (!greet(f, fd))
		close(fd);
	else
	{
		f->kid_pids[f->nkids] = (int) cred.pid;
		f->kids[f->nkids++] = fd;
	}
	pthread_mutex_unlock(&f->lock);
	return true;
}

/*
 * Under the lock: greets a child just accepted with the position the stream
 * has reached (-1 while the listener has not tried its first catch-up: its
 * position means nothing yet) and the state; false when it could not be sent.
 */
static bool
greet(kc_feed *f, int fd)
{
	kc_listener *l = atomic_load(&f->listener);
	char		state[64];
	char		msg[96];
	long long	pos = -1;
	int			n;

	if (l && kc_listener_connected(l))
		pos = f->sent_any ? f->sent : kc_listener_watermark(l);
	state_text(f, state, sizeof(state));
	n = snprintf(msg, sizeof(msg), "H %lld %s", pos, state);
	return send(fd, msg, (size_t) n + 1, MSG_DONTWAIT | MSG_NOSIGNAL) == n + 1;
}

/* Under the lock: the listener's state to every child, when it changed. */
static void
send_state(kc_feed *f)
{
	char		state[64];
	char		msg[96];
	int			n;

	state_text(f, state, sizeof(state));
	if (strcmp(state, f->state) == 0)
		return;
	n = snprintf(msg, sizeof(msg), "S %s", state);
	broadcast(f, msg, (size_t) n + 1);
	memcpy(f->state, state, sizeof(state));
}

/*
 * Under the lock, every tick: samples how far the stream has reached and
 * publishes, for each child (metrics.h), since when it is behind: the first
 * sample past the position it applied. The event after that position was
 * handed out at or before that time, so the delay /readyz reads is never more
 * than the child's own (it may be one tick less, or the history's length when
 * the child is further behind). A child that applied nothing yet (not greeted
 * since it started) counts as not listening instead (processes_listening).
 */
static void
note_behind(kc_feed *f)
{
	long long	now = kc_monotonic_ms();
	long long	sent = f->sent_any ? f->sent : 0;
	long long	first;

	f->hist_pos[f->hist_n % HISTORY] = sent;
	f->hist_ms[f->hist_n % HISTORY] = now;
	f->hist_n++;
	first = f->hist_n < HISTORY ? 0 : f->hist_n - HISTORY;
	for (int i = 1; i <= kc_metrics_feed_children(); i++)
	{
		long long	applied = kc_metrics_feed_position(i);
		long long	k = first;

		if (applied <= 0 || applied >= sent)
		{
			kc_metrics_feed_behind_since(i, 0);
			continue;
		}
		/* the newest sample is sent, past applied: the loop ends there at the latest */
		while (f->hist_pos[k % HISTORY] <= applied)
			k++;
		kc_metrics_feed_behind_since(i, f->hist_ms[k % HISTORY]);
	}
}

static void *
feed_main(void *arg)
{
	kc_feed    *f = arg;

	pthread_setname_np(pthread_self(), "kc-feed");
	while (!atomic_load(&f->stop))
	{
		struct pollfd p[2] = {{f->listen_fd, POLLIN, 0}, {f->wake[0], POLLIN, 0}};

		if (poll(p, 2, STATE_TICK_MS) > 0 && (p[0].revents & POLLIN))
			while (accept_child(f))
				;
		pthread_mutex_lock(&f->lock);
		flush_batch(f);			/* before the state: a child sees the messages in their order */
		/* a child that went away: its end reads as hung up */
		for (int i = 0; i < f->nkids; i++)
		{
			struct pollfd k = {f->kids[i], POLLIN, 0};

			if (poll(&k, 1, 0) > 0 && (k.revents & (POLLHUP | POLLERR | POLLIN)))
			{
				close(f->kids[i]);
				f->nkids--;
				f->kids[i] = f->kids[f->nkids];
				f->kid_pids[i--] = f->kid_pids[f->nkids];
			}
		}
		send_state(f);
		note_behind(f);
		pthread_mutex_unlock(&f->lock);
	}
	return NULL;
}
