/*
 * evloop.c - the event loop of evloop.h.
 *
 * A turn: wait in epoll until a descriptor is ready, a post rings the inbox's
 * eventfd or the next tick is due; hand every message of the inbox to on_msg
 * (also those posted quietly, without ringing, since the last turn), then
 * every ready descriptor to on_fd, run the tick when due, then after_turn. When the user
 * has asked to quit, on_exit runs, the inbox closes, and what was posted but
 * never handled goes to on_drop.
 */
#define _GNU_SOURCE
#include "evloop.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include "log.h"

#define EPOLL_BATCH 256

struct kc_evloop
{
	const kc_evloop_handlers *h;
	void	   *arg;
	int			tick_ms;
	int			ep;
	int			efd;			/* the inbox's doorbell */
	pthread_t	thread;
	pthread_mutex_t lock;		/* guards head, tail, exited */
	kc_evmsg   *head,
			   *tail;
	bool		exited;			/* the thread is gone: nothing more is taken */
	/* loop thread only */
	double		now;
	bool		quit;
};

static double mono_now(void);
static void drain_inbox(kc_evloop *lp, bool rung);
static void close_inbox(kc_evloop *lp);
static void *loop_main(void *arg);

static double
mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double) ts.tv_sec + ts.tv_nsec / 1e9;
}

kc_evloop *
kc_evloop_create(const kc_evloop_handlers *handlers, void *arg, int tick_ms)
{
	kc_evloop  *lp = calloc(1, sizeof(*lp));
	struct epoll_event ev;

	if (!lp)
		return NULL;
	lp->h = handlers;
	lp->arg = arg;
	lp->tick_ms = tick_ms;
	lp->now = mono_now();
	lp->ep = epoll_create1(EPOLL_CLOEXEC);
	lp->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	ev.events = EPOLLIN;
	ev.data.ptr = NULL;			/* the inbox; watched descriptors have data */
	if (lp->ep < 0 || lp->efd < 0 || epoll_ctl(lp->ep, EPOLL_CTL_ADD, lp->efd, &ev) != 0)
	{
		if (lp->ep >= 0)
			close(lp->ep);
		if (lp->efd >= 0)
			close(lp->efd);
		free(lp);
		return NULL;
	}
	pthread_mutex_init(&lp->lock, NULL);
	return lp;
}

bool
kc_evloop_start(kc_evloop *lp, const char *name)
{
	if (pthread_create(&lp->thread, NULL, loop_main, lp) != 0)
		return false;
	pthread_setname_np(lp->thread, name);	/* how top, perf and the tests tell it */
	return true;
}

void
kc_evloop_join(kc_evloop *lp)
{
	pthread_join(lp->thread, NULL);
}

void
kc_evloop_free(kc_evloop *lp)
{
	if (!lp)
		return;
	close(lp->ep);
	close(lp->efd);
	pthread_mutex_destroy(&lp->lock);
	free(lp);
}

static bool
post(kc_evloop *lp, kc_evmsg *m, bool ring)
{
	uint64_t	one = 1;
	bool		ok;

	m->next = NULL;
	pthread_mutex_lock(&lp->lock);
	ok = !lp->exited;
	if (ok)
	{
		if (lp->tail)
			lp->tail->next = m;
		else
			lp->head = m;
		lp->tail = m;
	}
	pthread_mutex_unlock(&lp->lock);
	if (ok && ring && write(lp->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		kc_logf(KC_LOG_WARN, "event loop: eventfd write: %s", strerror(errno));
	return ok;
}

bool
kc_evloop_post(kc_evloop *lp, kc_evmsg *m)
{
	return post(lp, m, true);
}

bool
kc_evloop_post_quiet(kc_evloop *lp, kc_evmsg *m)
{
	return post(lp, m, false);
}

void
kc_evloop_quit(kc_evloop *lp)
{
	lp->quit = true;
}

double
kc_evloop_now(kc_evloop *lp)
{
	return lp->now;
}

static bool
epoll_set(kc_evloop *lp, int op, int fd, void *data, int interest)
{
	struct epoll_event ev;

	ev.events = ((interest & KC_EV_READ) ? EPOLLIN : 0) | ((interest & KC_EV_WRITE) ? EPOLLOUT : 0);
	ev.data.ptr = data;
	return epoll_ctl(lp->ep, op, fd, &ev) == 0;
}

bool
kc_evloop_watch(kc_evloop *lp, int fd, void *data, int interest)
{
	return epoll_set(lp, EPOLL_CTL_ADD, fd, data, interest);
}

bool
kc_evloop_change(kc_evloop *lp, int fd, void *data, int interest)
{
	return epoll_set(lp, EPOLL_CTL_MOD, fd, data, interest);
}

void
kc_evloop_unwatch(kc_evloop *lp, int fd)
{
	epoll_ctl(lp->ep, EPOLL_CTL_DEL, fd, NULL);
}

/* Takes the whole inbox at once and hands it over in order; rung: clears the doorbell first. */
static void
drain_inbox(kc_evloop *lp, bool rung)
{
	kc_evmsg   *m;
	uint64_t	v;

	if (rung && read(lp->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		kc_logf(KC_LOG_WARN, "event loop: eventfd read: %s", strerror(errno));
	pthread_mutex_lock(&lp->lock);
	m = lp->head;
	lp->head = lp->tail = NULL;
	pthread_mutex_unlock(&lp->lock);
	while (m)
	{
		kc_evmsg   *next = m->next;

		lp->h->on_msg(lp->arg, m);
		m = next;
	}
}

/* The thread is leaving: nothing can be posted any more, and what was posted is dropped. */
static void
close_inbox(kc_evloop *lp)
{
	kc_evmsg   *m;

	pthread_mutex_lock(&lp->lock);
	lp->exited = true;
	m = lp->head;
	lp->head = lp->tail = NULL;
	pthread_mutex_unlock(&lp->lock);
	while (m)
	{
		kc_evmsg   *next = m->next;

		lp->h->on_drop(lp->arg, m);
		m = next;
	}
}

static void *
loop_main(void *arg)
{
	kc_evloop  *lp = arg;
	struct epoll_event evs[EPOLL_BATCH];
	double		next_tick = mono_now() + lp->tick_ms / 1000.0;

	while (!lp->quit)
	{
		int			timeout = (int) ((next_tick - mono_now()) * 1000) + 1;
		int			n = epoll_wait(lp->ep, evs, EPOLL_BATCH, timeout < 0 ? 0 : timeout);
		bool		rung = false;

		lp->now = mono_now();
		for (int i = 0; i < n; i++)
			rung |= evs[i].data.ptr == NULL;
		/* rung or not: quiet posts wait for whatever turn comes next */
		drain_inbox(lp, rung);
		for (int i = 0; i < n; i++)
		{
			if (evs[i].data.ptr != NULL)
				lp->h->on_fd(lp->arg, evs[i].data.ptr,
							 ((evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) ? KC_EV_READ : 0) |
							 ((evs[i].events & EPOLLOUT) ? KC_EV_WRITE : 0));
		}
		if (lp->now >= next_tick)
		{
			lp->h->on_tick(lp->arg);
			next_tick = lp->now + lp->tick_ms / 1000.0;
		}
		lp->h->after_turn(lp->arg);
	}
	lp->h->on_exit(lp->arg);
	close_inbox(lp);
	return NULL;
}
