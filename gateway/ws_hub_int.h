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
#define KC_WS_CLOSE_GRACE_S 5.0 /* a peer gets this long to answer our close */

typedef enum kc_ws_state
{
	KC_WS_REPLAYING,
	KC_WS_LIVE,
	KC_WS_CLOSING
} kc_ws_state;

struct kc_ws_conn
{
	kc_ws_hub  *hub;
	int			fd;
	void	   *handle;			/* released to MHD on close */
	char		student[37];
	bool		all;			/* every student's events */
	long long	after;			/* -1: none given */
	long long	last_sent;		/* id of the last event queued */
	kc_ws_state state;
	wslay_event_context_ptr ctx;
	int			interest;		/* KC_EV_* registered with the loop */
	bool		dead;			/* socket released */
	bool		awaiting_ready; /* an HTTP thread still holds a pointer */
	bool		dirty;			/* has output to try */
	bool		ping_out;
	double		last_rx;
	double		ping_at;
	double		deadline;		/* CLOSING: give up then */
	kc_ws_msg **pending;		/* live events kept during the replay */
	int			npending;
	int			cap_pending;
	bool		overflow;
	char	   *extra;			/* bytes MHD read past the request */
	size_t		extra_len;
	size_t		extra_off;
	kc_ws_conn *bnext,
			   *bprev;			/* bucket (or firehose) chain */
	kc_ws_conn *anext,
			   *aprev;			/* every live connection */
	kc_ws_conn *dnext;			/* dirty list */
	kc_ws_conn *gnext;			/* grave list: freed at the end of the loop turn */
};

struct kc_ws_hub
{
	kc_ws_limits lim;
	kc_ws_release_fn release;
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
	long long	pos;			/* highest event id received */
	kc_ws_conn *buckets[KC_WS_BUCKETS];
	kc_ws_conn *firehose;
	kc_ws_conn *all;
	kc_ws_conn *dirty;
	kc_ws_conn *grave;
};

/* ws_stream.c, hub thread */
void		kc_ws_stream_add(kc_ws_hub *h, kc_ws_conn *c);
void		kc_ws_stream_ready(kc_ws_hub *h, kc_ws_conn *c, kc_ws_msg *msgs, kc_ws_replay how);
void		kc_ws_stream_event(kc_ws_hub *h, kc_ws_msg *m);
void		kc_ws_stream_io(kc_ws_hub *h, kc_ws_conn *c, int ready);
void		kc_ws_stream_tick(kc_ws_hub *h);
void		kc_ws_stream_close(kc_ws_hub *h, kc_ws_conn *c, uint16_t code, const char *reason,
							   double grace);
void		kc_ws_stream_kill(kc_ws_hub *h, kc_ws_conn *c);
/* Tries the output of every connection that has some, then frees the dead. */
void		kc_ws_stream_flush(kc_ws_hub *h);

/* ws_conn.c */
kc_ws_conn *kc_ws_conn_new(kc_ws_hub *h, int fd, void *handle, const char *student,
						   long long after, const char *extra, size_t extra_len);
void		kc_ws_conn_free(kc_ws_conn *c);
/* Starts the protocol and watches the socket; false when it cannot. */
bool		kc_ws_conn_attach(kc_ws_conn *c);
/* Stops watching the socket and ends the protocol (the socket itself is the owner's). */
void		kc_ws_conn_detach(kc_ws_conn *c);
/* Reads what is there, writes what can go; false when the connection is over. */
bool		kc_ws_conn_pump(kc_ws_conn *c, bool readable);
bool		kc_ws_conn_queue_text(kc_ws_conn *c, const char *text, size_t len);
size_t		kc_ws_conn_queued(kc_ws_conn *c);
void		kc_ws_conn_queue_close(kc_ws_conn *c, uint16_t code, const char *reason);
void		kc_ws_conn_queue_ping(kc_ws_conn *c);
void		kc_ws_msg_unref(kc_ws_msg *m);

#endif
