/*
 * ws_conn.c - one WebSocket connection of the hub on the wire (see
 * ws_hub_int.h), and the messages the hub sends.
 *
 * A wslay server context frames, masks/unmasks, validates (UTF-8 of text,
 * masked client frames, sizes) and runs the close handshake; this file only
 * moves bytes between it and the socket and keeps the socket's interest with
 * the loop in step. It never decides what to send or when to give up on a
 * peer: ws_stream.c does.
 *
 * The context costs about 8.5 KiB (wslay keeps a 4 KiB input and a 4 KiB
 * output buffer in it), which would be most of an idle socket's memory. So a
 * connection has one only while it is busy: it is created when the socket
 * turns readable or something is queued, and freed when nothing is queued or
 * half sent, no close is under way, and the bytes read so far end on a frame
 * boundary outside a fragmented message (kc_ws_inframe follows the frame
 * lengths for that). A fresh context is then in the same state as the old.
 */
#include "ws_hub_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#include "log.h"
#include "metrics.h"

static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
					   void *user);
static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
					   void *user);
static void msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
				   void *user);
static void follow_frames(kc_ws_inframe *in, const uint8_t *p, size_t n);
static bool ensure_ctx(kc_ws_conn *c);
static bool quiet(kc_ws_conn *c);
static void queue_waiting_close(kc_ws_conn *c);

static const struct wslay_event_callbacks callbacks = {
	recv_cb, send_cb, NULL, NULL, NULL, NULL, msg_cb
};

kc_ws_msg *
kc_ws_msg_new(const char *text, size_t len, long long id, const char *student)
{
	kc_ws_msg  *m = malloc(sizeof(*m) + len + 1);

	if (!m)
		return NULL;
	m->next = NULL;
	m->refs = 1;
	m->id = id;
	snprintf(m->student, sizeof(m->student), "%s", student ? student : "");
	m->len = len;
	memcpy(m->text, text, len);
	m->text[len] = '\0';
	return m;
}

void
kc_ws_msg_unref(kc_ws_msg *m)
{
	if (m && --m->refs == 0)
		free(m);
}

void
kc_ws_msg_free_list(kc_ws_msg *m)
{
	while (m)
	{
		kc_ws_msg  *next = m->next;

		kc_ws_msg_unref(m);
		m = next;
	}
}

/* ---- wslay callbacks ---------------------------------------------------- */

static ssize_t
recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
	kc_ws_conn *c = user;
	ssize_t		n;

	if (c->extra_off < c->extra_len)
	{
		size_t		take = c->extra_len - c->extra_off;

		if (take > len)
			take = len;
		memcpy(buf, c->extra + c->extra_off, take);
		c->extra_off += take;
		if (c->extra_off == c->extra_len)
		{
			free(c->extra);
			c->extra = NULL;
			c->extra_len = c->extra_off = 0;
		}
		follow_frames(&c->in, buf, take);
		return (ssize_t) take;
	}
	n = recv(c->fd, buf, len, 0);
	if (n > 0)
	{
		follow_frames(&c->in, buf, (size_t) n);
		return n;
	}
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
	else
		wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
	return -1;
}

static ssize_t
send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *user)
{
	kc_ws_conn *c = user;
	ssize_t		n = send(c->fd, data, len,
						 MSG_NOSIGNAL | MSG_DONTWAIT | ((flags & WSLAY_MSG_MORE) ? MSG_MORE : 0));

	if (n >= 0)
		return n;
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
	else
		wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
	return -1;
}

/* Any complete message (data or control) proves the peer is alive. */
static void
msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg, void *user)
{
	kc_ws_conn *c = user;

	c->heard = true;
}

/* Advances the frame tracker over n bytes handed to wslay. */
static void
follow_frames(kc_ws_inframe *in, const uint8_t *p, size_t n)
{
	while (n > 0)
	{
		size_t		need,
					take;

		if (in->left > 0)
		{
			take = in->left < n ? (size_t) in->left : n;
			in->left -= take;
			p += take;
			n -= take;
			continue;
		}
		/* a header: 2 bytes, then 0, 2 or 8 of length, then 4 of mask if set */
		in->head[in->head_len++] = *p++;
		n--;
		if (in->head_len < 2)
			continue;
		need = 2 + ((in->head[1] & 0x7f) == 126 ? 2 : (in->head[1] & 0x7f) == 127 ? 8 : 0) +
			((in->head[1] & 0x80) ? 4 : 0);
		if (in->head_len < need)
			continue;
		if ((in->head[1] & 0x7f) == 126)
			in->left = ((uint64_t) in->head[2] << 8) | in->head[3];
		else if ((in->head[1] & 0x7f) == 127)
		{
			in->left = 0;
			for (int i = 2; i < 10; i++)
				in->left = (in->left << 8) | in->head[i];
		}
		else
			in->left = in->head[1] & 0x7f;
		if ((in->head[0] & 0x0f) < 8)	/* data or continuation: FIN ends the message */
			in->fragmented = (in->head[0] & 0x80) == 0;
		in->head_len = 0;
	}
}

static bool
ensure_ctx(kc_ws_conn *c)
{
	if (c->ctx)
		return true;
	if (wslay_event_context_server_init(&c->ctx, &callbacks, c) != 0)
	{
		c->ctx = NULL;
		return false;
	}
	wslay_event_config_set_max_recv_msg_length(c->ctx, (uint64_t) c->hub->lim.max_frame);
	return true;
}

/* Nothing in flight either way: the context can go. */
static bool
quiet(kc_ws_conn *c)
{
	return c->state != KC_WS_CLOSING && c->extra == NULL &&
		c->in.head_len == 0 && c->in.left == 0 && !c->in.fragmented &&
		!wslay_event_want_write(c->ctx) && wslay_event_get_queued_msg_count(c->ctx) == 0;
}

/* ---- a connection ------------------------------------------------------- */

kc_ws_conn *
kc_ws_conn_new(kc_ws_hub *h, int fd, const char *student, long long after,
			   const char *extra, size_t extra_len)
{
	kc_ws_conn *c = calloc(1, sizeof(*c));

	if (c && extra_len > 0)
	{
		c->extra = malloc(extra_len);
		if (!c->extra)
		{
			free(c);
			return NULL;
		}
		memcpy(c->extra, extra, extra_len);
		c->extra_len = extra_len;
	}
	if (!c)
		return NULL;
	c->hub = h;
	c->fd = fd;
	c->all = student == NULL;
	snprintf(c->student, sizeof(c->student), "%s", student ? student : "");
	c->after = after;
	c->awaiting_ready = true;
	return c;
}

void
kc_ws_conn_free(kc_ws_conn *c)
{
	free(c->close_reason);
	free(c->pending);
	free(c->extra);
	free(c);
}

bool
kc_ws_conn_attach(kc_ws_conn *c)
{
	if (!kc_evloop_watch(c->hub->loop, c->fd, c, KC_EV_READ))
	{
		kc_logf(KC_LOG_WARN, "websocket: epoll_ctl: %s", strerror(errno));
		return false;
	}
	c->interest = KC_EV_READ;
	return true;
}

void
kc_ws_conn_detach(kc_ws_conn *c)
{
	if (c->interest)
		kc_evloop_unwatch(c->hub->loop, c->fd);
	c->interest = 0;
	if (c->ctx)
		wslay_event_context_free(c->ctx);
	c->ctx = NULL;
	close(c->fd);
	c->fd = -1;
}

bool
kc_ws_conn_pump(kc_ws_conn *c, bool readable)
{
	int			want;

	readable = readable || c->extra != NULL;
	if (!c->ctx && !readable)
		return true;			/* quiet: nothing to read or send */
	if (!ensure_ctx(c))
		return false;
	if (readable && wslay_event_recv(c->ctx) != 0)
		return false;
	if (wslay_event_want_write(c->ctx) && wslay_event_send(c->ctx) != 0)
		return false;
	if (c->close_reason)
	{
		queue_waiting_close(c);
		if (wslay_event_want_write(c->ctx) && wslay_event_send(c->ctx) != 0)
			return false;
	}
	want = (wslay_event_want_read(c->ctx) ? KC_EV_READ : 0) |
		(wslay_event_want_write(c->ctx) ? KC_EV_WRITE : 0);
	if (want == 0)
		return false;			/* close handshake done (or both sides shut) */
	if (quiet(c))
	{
		wslay_event_context_free(c->ctx);
		c->ctx = NULL;
	}
	if (want != c->interest)
	{
		if (!kc_evloop_change(c->hub->loop, c->fd, c, want))
			return false;
		c->interest = want;
	}
	return true;
}

bool
kc_ws_conn_queue_text(kc_ws_conn *c, const char *text, size_t len)
{
	struct wslay_event_msg m = {WSLAY_TEXT_FRAME, (const uint8_t *) text, len};

	if (!ensure_ctx(c) || wslay_event_queue_msg(c->ctx, &m) != 0)
		return false;
	kc_metrics_add(KC_M_WS_MESSAGES, 1);
	return true;
}

size_t
kc_ws_conn_queued(kc_ws_conn *c)
{
	return c->ctx ? wslay_event_get_queued_msg_count(c->ctx) : 0;
}

bool
kc_ws_conn_queue_close(kc_ws_conn *c, uint16_t code, const char *reason)
{
	if (!ensure_ctx(c))
		return false;
	if (wslay_event_get_queued_msg_count(c->ctx) == 0)
		return wslay_event_queue_close(c->ctx, code, (const uint8_t *) reason, strlen(reason)) == 0;
	free(c->close_reason);
	c->close_reason = strdup(reason);
	c->close_code = code;
	return c->close_reason != NULL;
}

/*
 * The close frame that waited for the messages ahead of it, once they are
 * sent. When wslay has closed already (the peer's close was answered), it is
 * dropped.
 */
static void
queue_waiting_close(kc_ws_conn *c)
{
	if (wslay_event_get_queued_msg_count(c->ctx) > 0)
		return;
	wslay_event_queue_close(c->ctx, c->close_code, (const uint8_t *) c->close_reason,
							strlen(c->close_reason));
	free(c->close_reason);
	c->close_reason = NULL;
}

bool
kc_ws_conn_queue_ping(kc_ws_conn *c)
{
	struct wslay_event_msg ping = {WSLAY_PING, (const uint8_t *) "kc", 2};

	return ensure_ctx(c) && wslay_event_queue_msg(c->ctx, &ping) == 0;
}
