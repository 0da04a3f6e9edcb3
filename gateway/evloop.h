/*
 * evloop.h - an event loop on a thread of its own: one epoll set
 * (level-triggered), a periodic tick, and an inbox other threads post to (a
 * locked FIFO plus an eventfd). Like redis's ae.c it knows file descriptors,
 * timers and callbacks, nothing of what flows through them; the WebSocket
 * hub (ws_hub.c) is its user.
 *
 * Every callback runs on the loop thread. Posting is the only call other
 * threads make; messages are handed over in the order they were posted.
 */
#ifndef KC_EVLOOP_H
#define KC_EVLOOP_H

#include <stdbool.h>

typedef struct kc_evloop kc_evloop;

/* A posted message: the first member of the poster's own struct. */
typedef struct kc_evmsg
{
	struct kc_evmsg *next;
} kc_evmsg;

/* Interest in, and readiness of, a file descriptor. */
#define KC_EV_READ 1			/* readiness: also hang-up and error */
#define KC_EV_WRITE 2

/* What the user of a loop gives it; arg is the one given to kc_evloop_create. */
typedef struct kc_evloop_handlers
{
	/* fd of data is ready (a mask of KC_EV_*). */
	void		(*on_fd) (void *arg, void *data, int ready);
	/* One posted message; the handler owns it. */
	void		(*on_msg) (void *arg, kc_evmsg *m);
	/* Every tick_ms. */
	void		(*on_tick) (void *arg);
	/* After every turn (ready descriptors, messages, tick). */
	void		(*after_turn) (void *arg);
	/* The loop is ending (kc_evloop_quit); messages can still arrive until it returns. */
	void		(*on_exit) (void *arg);
	/* A message posted but never to be handled, because the loop ended; the handler owns it. */
	void		(*on_drop) (void *arg, kc_evmsg *m);
} kc_evloop_handlers;

/* NULL when out of memory or descriptors; handlers must outlive the loop. */
kc_evloop  *kc_evloop_create(const kc_evloop_handlers *handlers, void *arg, int tick_ms);
/* Starts the loop's thread, named name (15 bytes at most); false when it could not. */
bool		kc_evloop_start(kc_evloop *lp, const char *name);
/* Waits for the thread to end (after kc_evloop_quit). */
void		kc_evloop_join(kc_evloop *lp);
/* Frees a loop whose thread never started or has been joined. */
void		kc_evloop_free(kc_evloop *lp);

/* Any thread: queues m for on_msg; false (m not taken) once the loop has ended. */
bool		kc_evloop_post(kc_evloop *lp, kc_evmsg *m);
/*
 * The same without waking the loop: m is handled, in posting order with the
 * others, at the loop's next turn, whatever ends its wait (a descriptor, a
 * post, or the tick at the latest).
 */
bool		kc_evloop_post_quiet(kc_evloop *lp, kc_evmsg *m);

/* Loop thread: the loop ends after this turn. */
void		kc_evloop_quit(kc_evloop *lp);
/* Loop thread: the monotonic time, in seconds, at the start of this turn. */
double		kc_evloop_now(kc_evloop *lp);

/* Loop thread: watches fd for interest (KC_EV_*), reported with data (not NULL). */
bool		kc_evloop_watch(kc_evloop *lp, int fd, void *data, int interest);
bool		kc_evloop_change(kc_evloop *lp, int fd, void *data, int interest);
void		kc_evloop_unwatch(kc_evloop *lp, int fd);

#endif
