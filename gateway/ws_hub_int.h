/*
 * ws_hub_int.h - the inside of the WebSocket hub (ws_hub.h), shared by the
 * files that make it up, on the event loop of evloop.c:
 *
 *   ws_hub.c     the front: what other threads call, start and stop, the inbox
 *   ws_stream.c  on the hub thread: who gets which event, replay, liveness,
 *                slow consumers (1008), the close of a connection
 *   ws_conn.c    one connection's RFC 6455 side: wslay, socket I/O, close
 *                frames, pings; and the hub's messages
 *
 * Nothing outside these files includes it.
 */
#ifndef KC_WS_HUB_INT_H
#define KC_WS_HUB_INT_H

#include <stdatomic.h>
#include <stdint.h>
#include <wslay/wslay.h>

#include "evloop.h"
#include "ws_hub.h"

#define KC_WS_BUCKETS 16384		/* power of two */
/*
 * Slots of the hub's interest counts (power of two): 512 KiB a process. At
 * 17,000 sockets a process, about 12% of the events of a student without a
 * socket there share a slot with one that has and wake the hub all the same.
 */
#define KC_WS_INTEREST_SLOTS (1 << 17)
#define KC_WS_CLOSE_GRACE_S 5.0 /* a peer gets this long to answer our close */

typedef enum kc_ws_state
{
	KC_WS_REPLAYING,
	KC_WS_LIVE,
	KC_WS_CLOSING
} kc_ws_state;

/*
 * Where the bytes read from a client stand in its frames (RFC 6455 5.2): only
 * the lengths are followed, wslay does the rest. Between two frames, with no
 * fragmented message open, wslay holds nothing that a fresh context would not.
 */
typedef struct kc_ws_inframe
{
	uint8_t		head[14];		/* the header read so far */
	uint8_t		head_len;
	bool		fragmented;		/* a data message is waiting for its last frame */
	uint64_t	left;			/* payload bytes of the current frame still to come */
} kc_ws_inframe;

/* A connection's place on the hub's clocks (see kc_ws_hub below). */
typedef enum kc_ws_clock
{
	KC_WS_CLOCK_NONE,
	KC_WS_CLOCK_QUIET,			/* ordered by last_rx: due for a ping */
	KC_WS_CLOCK_PINGED,			/* ordered by ping_at: due for the drop */
	KC_WS_CLOCK_CLOSING			/* each has its own deadline */
} kc_ws_clock;

/*
 * One socket. Idle, it is this struct and its descriptor: the wslay context
 * (two 4 KiB buffers) exists only while something is being sent or a client
 * frame is half read, and is freed as soon as the connection is quiet again.
 */
struct kc_ws_conn
{
	kc_ws_hub  *hub;
	int			fd;				/* ours (a duplicate of libmicrohttpd's): closed on kill */
	int			interest;		/* KC_EV_* registered with the loop */
	char		student[37];
	uint8_t		state;			/* kc_ws_state */
	uint8_t		clock;			/* kc_ws_clock */
	bool		all;			/* every student's events */
	bool		dead;			/* socket closed */
	bool		awaiting_ready; /* an HTTP thread still holds a pointer */
	bool		dirty;			/* has output to try */
	bool		heard;			/* a message came in since the hub last looked */
	bool		overflow;		/* the replay's keep-aside list filled up */
	long long	after;			/* -1: none given */
	long long	last_sent;		/* id of the last event queued */
	long long	rewound_to;		/* > 0: the log was rewound to it during the replay */
	int			lead;			/* queued ahead of every event (the hello...): off the bound */
	double		last_rx;		/* last sign of life (or the start) */
	double		ping_at;
	double		deadline;		/* CLOSING: give up then */
	wslay_event_context_ptr ctx;	/* NULL while quiet */
	char	   *close_reason;	/* a close frame waiting for the messages ahead of it */
	uint16_t	close_code;
	kc_ws_inframe in;
	kc_ws_msg **pending;		/* live events kept during the replay */
	int			npending;
	int			cap_pending;
	char	   *extra;			/* bytes MHD read past the request, until consumed */
	size_t		extra_len;
	size_t		extra_off;
	kc_ws_conn *bnext,
			   *bprev;			/* bucket (or firehose) chain */
	kc_ws_conn *tnext,
			   *tprev;			/* the clock list it is on */
	kc_ws_conn *dnext;			/* dirty list */
	kc_ws_conn *gnext;			/* grave list: freed at the end of the loop turn */
};

/* A doubly linked list through tnext/tprev, oldest first. */
typedef struct kc_ws_list
{
	kc_ws_conn *head,
			   *tail;
} kc_ws_list;

struct kc_ws_hub
{
	kc_ws_limits lim;
	kc_ws_position_fn position;
	void	   *position_arg;
	kc_evloop  *loop;
	bool		started;
	_Atomic int count;
	_Atomic bool stopping;
	/* hub thread only */
	bool		stop_req;
	double		stop_deadline;
	int			stop_timeout_ms;
	long long	pos;			/* highest event id received (since the last rewind) */
	kc_ws_conn *buckets[KC_WS_BUCKETS];
	kc_ws_conn *firehose;
	/*
	 * Written by the hub thread as it links and unlinks connections, read by
	 * the thread that posts events: how many connections are linked per slot
	 * of a student's hash, and to the firehose. An event whose student's slot
	 * counts none is posted without waking the hub (ws_hub.c).
	 */
	_Atomic unsigned *interest;
	_Atomic int firehose_n;
	/*
	 * Every attached connection is on one clock list, so the tick looks only
	 * at the heads that are due instead of walking 100,000 sockets.
	 */
	kc_ws_list	quiet;
	kc_ws_list	pinged;
	kc_ws_list	closing;
	kc_ws_conn *dirty;
	kc_ws_conn *grave;
};

/* ws_interest.c, hub thread: c was linked (delta 1) or unlinked (-1): the interest counts follow. */
void		kc_ws_interest_add(kc_ws_hub *h, const kc_ws_conn *c, int delta);

/* ws_interest.c, any thread: whether a socket of the hub may want student's events. */
bool		kc_ws_interest_wanted(kc_ws_hub *h, const char *student);

/* ws_stream.c, hub thread */
void		kc_ws_stream_add(kc_ws_hub *h, kc_ws_conn *c);
void		kc_ws_stream_ready(kc_ws_hub *h, kc_ws_conn *c, kc_ws_msg *msgs, kc_ws_replay how);
void		kc_ws_stream_event(kc_ws_hub *h, kc_ws_msg *m);
/* Events up to head will not come: live connections behind it get "refetch" and go on past it. */
void		kc_ws_stream_refetch(kc_ws_hub *h, long long floor_pos, long long head);
/* The log was rewound to end: every connection gets "refetch" and goes on past end. */
void		kc_ws_stream_rewind(kc_ws_hub *h, long long end);
void		kc_ws_stream_io(kc_ws_hub *h, kc_ws_conn *c, int ready);
void		kc_ws_stream_tick(kc_ws_hub *h);
void		kc_ws_stream_close(kc_ws_hub *h, kc_ws_conn *c, uint16_t code, const char *reason,
							   double grace);
void		kc_ws_stream_kill(kc_ws_hub *h, kc_ws_conn *c);
/* No connection is left on any clock. */
bool		kc_ws_stream_empty(kc_ws_hub *h);
/* Tries the output of every connection that has some, then frees the dead. */
void		kc_ws_stream_flush(kc_ws_hub *h);

/* ws_conn.c */
kc_ws_conn *kc_ws_conn_new(kc_ws_hub *h, int fd, const char *student, long long after,
						   const char *extra, size_t extra_len);
void		kc_ws_conn_free(kc_ws_conn *c);
/* Watches the socket; false when it cannot. */
bool		kc_ws_conn_attach(kc_ws_conn *c);
/* Stops watching the socket, ends the protocol and closes the socket. */
void		kc_ws_conn_detach(kc_ws_conn *c);
/* Reads what is there, writes what can go; false when the connection is over. */
bool		kc_ws_conn_pump(kc_ws_conn *c, bool readable);
/* The queue_ calls create the wslay context when needed: false when out of memory. */
bool		kc_ws_conn_queue_text(kc_ws_conn *c, const char *text, size_t len);
size_t		kc_ws_conn_queued(kc_ws_conn *c);
/*
 * A close frame, sent after the messages already queued (wslay alone would
 * send it ahead of them, and nothing after it).
 */
bool		kc_ws_conn_queue_close(kc_ws_conn *c, uint16_t code, const char *reason);
bool		kc_ws_conn_queue_ping(kc_ws_conn *c);
void		kc_ws_msg_unref(kc_ws_msg *m);

#endif
