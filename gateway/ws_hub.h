/*
 * ws_hub.h - the WebSocket hub: one thread with one epoll set that owns every
 * upgraded connection (RFC 6455 framing by wslay), fans events out to the
 * connections of their student, pings idle peers, drops dead ones, closes slow
 * consumers (1008) and, on shutdown, closes everyone with 1001.
 *
 * Other threads talk to the hub only through its inbox (a locked FIFO plus an
 * eventfd): the listener posts events (in gap-free id order, after their cache
 * invalidation), the HTTP threads post new connections and their replays.
 * Because the inbox is one FIFO, an event posted after a connection was
 * registered is seen by that connection, and an event posted before it was
 * already visible to the connection's replay query: see websocket.c.
 *
 * The hub thread is an event loop (evloop.c); ws_hub_int.h says which of
 * ws_hub.c, ws_stream.c and ws_conn.c does what.
 */
#ifndef KC_WS_HUB_H
#define KC_WS_HUB_H

#include <stdbool.h>
#include <stddef.h>

typedef struct kc_ws_hub kc_ws_hub;
typedef struct kc_ws_conn kc_ws_conn;

/* One server->client text message; replay lists are chained through next. */
typedef struct kc_ws_msg
{
	struct kc_ws_msg *next;
	int			refs;			/* touched by the hub thread only */
	long long	id;				/* event id (0: not an event) */
	char		student[37];	/* whose event ("" for none) */
	size_t		len;
	char		text[];
} kc_ws_msg;

typedef struct kc_ws_limits
{
	int			max_connections;	/* refused (503) above */
	int			queue;			/* events queued per connection before 1008 */
	int			ping_interval_s;	/* ping a peer silent this long */
	int			pong_timeout_s; /* then drop it when silent this much longer */
	int			max_frame;		/* largest client message accepted (1009 above) */
} kc_ws_limits;

/* The id up to which every event has been posted (the listener's watermark). */
typedef long long (*kc_ws_position_fn) (void *arg);

/* How a replay ended; sent with kc_ws_hub_ready. */
typedef enum kc_ws_replay
{
	KC_WS_REPLAY_DONE = 0,		/* every event up to the log's settled end */
	KC_WS_REPLAY_TRUNCATED,		/* queue-full of events; more remain: 1008 after them */
	KC_WS_REPLAY_FAILED			/* Postgres unavailable: close 1013 (try again later) */
} kc_ws_replay;

kc_ws_hub  *kc_ws_hub_start(const kc_ws_limits *limits, kc_ws_position_fn position,
							 void *position_arg);
/* Closes every connection with 1001 (waits up to timeout_ms), stops the thread. */
void		kc_ws_hub_stop(kc_ws_hub *h, int timeout_ms);
void		kc_ws_hub_free(kc_ws_hub *h);

/* Allocates a message of len bytes of text (refs = 1); NULL on out of memory. */
kc_ws_msg  *kc_ws_msg_new(const char *text, size_t len, long long id, const char *student);
void		kc_ws_msg_free_list(kc_ws_msg *m);

/* Any thread: posts one event (ownership of m passes to the hub). */
void		kc_ws_hub_post_event(kc_ws_hub *h, kc_ws_msg *m);

/*
 * Any thread: the events up to head will not be posted (a trim removed them,
 * floor_pos the log's floor): every live connection that was sent less gets a
 * "refetch" message and goes on past head.
 */
void		kc_ws_hub_refetch(kc_ws_hub *h, long long floor_pos, long long head);

/*
 * Any thread: the log was rewound (a failover that lost commits, a restored
 * database) and now ends at end, below ids already posted. Every connection
 * is sent {"type":"refetch","reason":"rewound",...} and then the events past
 * end only; a connection still replaying gets it after its hello in place of
 * the replay. False when it could not be posted (out of memory, hub gone).
 */
bool		kc_ws_hub_post_rewind(kc_ws_hub *h, long long end);

/*
 * Any thread: hands an upgraded socket to the hub, which owns the descriptor
 * from then on and closes it at the end. student NULL: every student's events
 * (admins). after < 0: no replay, the stream starts at the hub's current
 * position. extra is data read past the HTTP request (copied). Returns NULL
 * when the hub is full or stopping (the caller keeps and closes fd).
 */
kc_ws_conn *kc_ws_hub_register(kc_ws_hub *h, int fd, const char *student, long long after,
							   const char *extra, size_t extra_len);
/* Any thread: the replay of a registered connection is complete (takes msgs). */
void		kc_ws_hub_ready(kc_ws_hub *h, kc_ws_conn *c, kc_ws_msg *msgs, kc_ws_replay how);

/* Open connections (reserved ones included). */
int			kc_ws_hub_count(kc_ws_hub *h);
bool		kc_ws_hub_full(kc_ws_hub *h);

#endif
