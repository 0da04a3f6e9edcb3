/*
 * feed.h - one listener for a gateway of several processes (--processes N).
 *
 * The supervisor forks, beside the N children that serve HTTP and the
 * WebSockets, one listener process: it alone LISTENs, runs the catch-up
 * (listen.c, catchup.c: one events_since query per notification, one Redis
 * invalidation per batch, the Cache INVALIDATED lines) and hands every event,
 * in log order and after its invalidation, to the children over the feed: a
 * Unix SOCK_SEQPACKET socket the supervisor bound before the forks, so that it
 * outlives a restart of the listener process. Each child reads the feed on a
 * thread of its own (listen_follow.c) in place of a listener: it invalidates
 * the event in its in-process cache, frames it and writes it to its sockets.
 *
 * Messages, one per datagram, fields separated by NUL bytes:
 *   H pos connected synced lag_us      hello (pos -1: the listener has not tried its first catch-up)
 *   S connected synced lag_us          the listener's state, when it changes (checked every 50 ms)
 *   E synced prev id version has_corr, then type, student, correlation id, created_at, payload
 *   K floor head                       events up to head will not come (a trim): refetch
 *   R end                              the log was rewound to end: refetch
 * lag_us is -1 when unknown. "synced" is the listener process's cache state
 * when the message was sent: a child uses Redis only while the listener says
 * synced (every event it was handed is then invalidated there). "prev" is
 * the listener's position before the event: a child that was handed less (it
 * joined a listener that started past it) tells its sockets to refetch, and
 * one that was handed nothing yet starts there.
 *
 * A child too slow to take a message (its socket buffer full) is dropped; it
 * reconnects and its sockets refetch what it missed. For /readyz, the listener
 * process marks a dropped child and how far it has handed out, and each child
 * what it applied, in the shared metrics segment (metrics.h). A child is only
 * accepted from a process of the same user (SO_PEERCRED).
 */
#ifndef KC_FEED_H
#define KC_FEED_H

#include <stddef.h>

#include "cache.h"
#include "config.h"
#include "listen.h"

typedef struct kc_feed kc_feed;

/*
 * The supervisor, before the forks: binds and listens on the feed's socket,
 * named after this process's pid in the abstract namespace; -1 with err.
 */
int			kc_feed_listen(char *err, size_t errlen);
/* The feed's address as kc_feed_listen named it, for the children (copied by fork). */
const char *kc_feed_address(void);

/*
 * The listener process: serves the children that connect to listen_fd.
 * The events come from a listener started with the kc_feed_on_* callbacks and
 * f as their argument, then handed to kc_feed_attach. NULL on out of memory.
 */
kc_feed    *kc_feed_start(int listen_fd, kc_cache *cache);
/* l NULL: detaches the listener, before it is stopped. */
void		kc_feed_attach(kc_feed *f, kc_listener *l);
void		kc_feed_stop(kc_feed *f);
void		kc_feed_on_event(const kc_event_note *ev, void *arg);
void		kc_feed_on_skip(long long floor_pos, long long head, void *arg);
void		kc_feed_on_rewind(long long end, void *arg);

/*
 * The listener process's whole life (feed_process.c), on the feed socket the
 * supervisor bound; returns its exit status.
 */
int			kc_feed_process_main(const kc_config *cfg, int feed_fd);

/* The largest message: an event's payload beyond this is not handed over whole (see feed.c). */
#define KC_FEED_MAX_MSG (256 * 1024)

#endif
