/*
 * test_ws_hub.c - the WebSocket hub (gateway/ws_hub.h) driven through its
 * inbox, with one end of a socket pair as the connection and the test reading
 * the frames at the other end. The inbox is one FIFO, so "registered, then an
 * event, then the replay" happens in exactly that order: the event is kept
 * aside during the replay and follows it, deterministically.
 *
 * Checked: the per-socket bound (--ws-queue) counts events, not the hello
 * ahead of them: a replay one event short of the bound plus one event kept
 * aside is delivered whole and the socket stays open; one event more is
 * closed with 1008, the close frame after the events queued before it.
 * Posting without waking (ws_hub.c): the event loop handles a quiet post at
 * its next turn only, in order with the posts around it; the hub still wakes
 * at once for an event of a student with a socket, and the events of other
 * students posted quietly before it are handled first.
 * Prints one "ok - name" / "not ok - name" line per check (the suite format).
 */
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#include "clock.h"
#include "evloop.h"
#include "log.h"
#include "ws_hub.h"

#include "../lib/tap_check.h"

#define QUEUE 4
#define STUDENT "11111111-1111-4111-8111-111111111111"
#define OTHER "22222222-2222-4222-8222-222222222222"

static long long
no_position(void *arg)
{
	return 0;
}

/* Reads n bytes within timeout_ms; false on timeout or end of stream. */
static int
read_full(int fd, uint8_t *p, size_t n, int timeout_ms)
{
	while (n > 0)
	{
		struct pollfd pf = {fd, POLLIN, 0};
		ssize_t		got;

		if (poll(&pf, 1, timeout_ms) != 1)
			return 0;
		got = read(fd, p, n);
		if (got <= 0)
			return 0;
		p += got;
		n -= (size_t) got;
	}
	return 1;
}

/*
 * One server frame (unmasked, under 64 KiB): its opcode, the payload in buf
 * (NUL-terminated, cut to cap); -1 when none comes within timeout_ms.
 */
static int
read_frame(int fd, char *buf, size_t cap, int timeout_ms)
{
	uint8_t		head[4];
	size_t		len;
	char		skip[256];

	if (!read_full(fd, head, 2, timeout_ms))
		return -1;
	len = head[1] & 0x7f;
	if (len == 126)
	{
		if (!read_full(fd, head + 2, 2, timeout_ms))
			return -1;
		len = ((size_t) head[2] << 8) | head[3];
	}
	for (size_t done = 0; done < len;)
	{
		size_t		take = len - done < sizeof(skip) ? len - done : sizeof(skip);

		if (!read_full(fd, (uint8_t *) skip, take, timeout_ms))
			return -1;
		if (done < cap - 1)
			memcpy(buf + done, skip, done + take < cap - 1 ? take : cap - 1 - done);
		done += take;
	}
	buf[len < cap - 1 ? len : cap - 1] = '\0';
	return head[0] & 0x0f;
}

static kc_ws_msg *
event_of(long long id, const char *student)
{
	char		text[64];
	int			n = snprintf(text, sizeof(text), "{\"type\":\"event\",\"id\":%lld}", id);

	return kc_ws_msg_new(text, (size_t) n, id, student);
}

static kc_ws_msg *
event(long long id)
{
	return event_of(id, STUDENT);
}

/* ---- the event loop's quiet post ---------------------------------------- */

typedef struct probe_msg
{
	kc_evmsg	link;
	int			n;
} probe_msg;

static pthread_mutex_t probe_lock = PTHREAD_MUTEX_INITIALIZER;
static int	probe_seen[4];
static int	probe_count;
static kc_evloop *probe_loop;

static void
probe_fd(void *arg, void *data, int ready)
{
}

static void
probe_on_msg(void *arg, kc_evmsg *m)
{
	pthread_mutex_lock(&probe_lock);
	if (probe_count < 4)
		probe_seen[probe_count++] = ((probe_msg *) m)->n;
	pthread_mutex_unlock(&probe_lock);
	if (((probe_msg *) m)->n < 0)
		kc_evloop_quit(probe_loop);
	free(m);
}

static void
probe_nothing(void *arg)
{
}

static void
probe_drop(void *arg, kc_evmsg *m)
{
	free(m);
}

static const kc_evloop_handlers probe_handlers = {
	probe_fd, probe_on_msg, probe_nothing, probe_nothing, probe_nothing, probe_drop
};

static void
probe_post(kc_evloop *lp, int n, bool quiet)
{
	probe_msg  *m = calloc(1, sizeof(*m));

	m->n = n;
	if (!(quiet ? kc_evloop_post_quiet(lp, &m->link) : kc_evloop_post(lp, &m->link)))
		free(m);
}

static int
probe_seen_count(void)
{
	int			n;

	pthread_mutex_lock(&probe_lock);
	n = probe_count;
	pthread_mutex_unlock(&probe_lock);
	return n;
}

/* A loop whose tick is 10 s away: a quiet post waits for the next ringing one. */
static void
test_quiet_post(void)
{
	kc_evloop  *lp = kc_evloop_create(&probe_handlers, NULL, 10000);
	int			seen;

	probe_loop = lp;
	if (!lp || !kc_evloop_start(lp, "test-loop"))
	{
		check(false, "evloop: starts");
		return;
	}
	usleep(50 * 1000);			/* the loop waits in epoll */
	probe_post(lp, 1, true);
	usleep(200 * 1000);
	seen = probe_seen_count();
	check(seen == 0, "evloop: a quiet post does not wake the loop");
	probe_post(lp, 2, false);
	for (int i = 0; i < 100 && probe_seen_count() < 2; i++)
		usleep(10 * 1000);
	check(probe_seen_count() == 2 && probe_seen[0] == 1 && probe_seen[1] == 2,
		  "evloop: the next ringing post wakes it, and the quiet one is handled first");
	probe_post(lp, -1, false);
	kc_evloop_join(lp);
	kc_evloop_free(lp);
}

/*
 * A live socket of STUDENT (resumed at after, nothing to replay): each of
 * rounds events of STUDENT, every one after a few of OTHER posted before it,
 * must reach the socket within ms_max (the hub's tick is 100 ms: a hub left
 * asleep would take up to that). Returns how many did, in order.
 */
static int
prompt_events(kc_ws_hub *h, long long after, int rounds, double ms_max)
{
	int			sv[2];
	kc_ws_conn *c;
	char		buf[256];
	int			ok = 0;
	long long	id = after;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
		return -1;
	c = kc_ws_hub_register(h, sv[0], STUDENT, after, NULL, 0);
	if (!c)
	{
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	kc_ws_hub_ready(h, c, NULL, KC_WS_REPLAY_DONE);
	if (read_frame(sv[1], buf, sizeof(buf), 500) != 1 || !strstr(buf, "\"type\":\"hello\""))
	{
		close(sv[1]);
		return -1;
	}
	usleep(50 * 1000);			/* the hub asleep between two ticks */
	for (int r = 0; r < rounds; r++)
	{
		char		want[64];
		long long	t0;

		for (int k = 0; k < 3; k++)
			kc_ws_hub_post_event(h, event_of(++id, OTHER));
		t0 = kc_monotonic_ms();
		kc_ws_hub_post_event(h, event(++id));
		snprintf(want, sizeof(want), "{\"type\":\"event\",\"id\":%lld}", id);
		if (read_frame(sv[1], buf, sizeof(buf), 500) != 1 || strcmp(buf, want) != 0)
			break;
		if (kc_monotonic_ms() - t0 > ms_max)
		{
			printf("# event %lld took %lld ms\n", id, kc_monotonic_ms() - t0);
			break;
		}
		ok++;
		usleep(37 * 1000);
	}
	close(sv[1]);
	return ok;
}

/*
 * A connection resuming at after: a replay of events after+1..after+QUEUE-1,
 * and the kept events after it posted while the replay is read (the hub drops
 * ids it was posted before: each call takes its own range). Returns the number
 * of events received in order; sets *hello when the hello came first and
 * *close_code (0: no close within the wait).
 */
static int
resume(kc_ws_hub *h, long long after, int kept, int *close_code, int *hello)
{
	int			sv[2];
	kc_ws_conn *c;
	kc_ws_msg  *replay = NULL;
	char		buf[256];
	int			op,
				events = 0;

	*close_code = 0;
	*hello = 0;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
		return -1;
	c = kc_ws_hub_register(h, sv[0], STUDENT, after, NULL, 0);
	if (!c)
	{
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	for (int i = 0; i < kept; i++)
		kc_ws_hub_post_event(h, event(after + QUEUE + i));
	for (long long id = after + QUEUE - 1; id > after; id--)
	{
		kc_ws_msg  *m = event(id);

		m->next = replay;
		replay = m;
	}
	kc_ws_hub_ready(h, c, replay, KC_WS_REPLAY_DONE);
	while ((op = read_frame(sv[1], buf, sizeof(buf), 500)) >= 0)
	{
		char		want[64];

		if (op == 8)
		{
			*close_code = (((uint8_t) buf[0]) << 8) | (uint8_t) buf[1];
			break;
		}
		if (op != 1)
			continue;
		if (strstr(buf, "\"type\":\"hello\""))
		{
			*hello = events == 0;
			continue;
		}
		snprintf(want, sizeof(want), "{\"type\":\"event\",\"id\":%lld}", after + events + 1);
		if (strcmp(buf, want) != 0)
			break;
		events++;
	}
	close(sv[1]);
	return events;
}

int
main(void)
{
	kc_ws_limits lim = {16, QUEUE, 30, 10, 4096};
	kc_ws_hub  *h;
	int			code,
				hello,
				n;

	kc_log_set_level(KC_LOG_ERROR);
	test_quiet_post();
	h = kc_ws_hub_start(&lim, no_position, NULL);
	check(h != NULL, "ws hub: starts");
	if (!h)
		return 1;
	n = resume(h, 0, 1, &code, &hello);
	check(hello && n == QUEUE && code == 0,
		  "ws hub: a replay of ws-queue - 1 events and one kept aside: hello, all ws-queue events, "
		  "the socket kept (the hello does not count against the bound)");
	if (n != QUEUE || code != 0)
		printf("# hello %d, %d events, close code %d\n", hello, n, code);
	n = resume(h, 100, 2, &code, &hello);
	check(hello && n == QUEUE && code == 1008,
		  "ws hub: one event more than ws-queue waiting: the bound's worth delivered, then 1008");
	if (n != QUEUE || code != 1008)
		printf("# hello %d, %d events, close code %d\n", hello, n, code);
	n = prompt_events(h, 1000, 8, 30);
	check(n == 8, "ws hub: an event of a student with a socket wakes the hub at once, after the "
		  "other students' events posted quietly before it (8 of 8 within 30 ms)");
	kc_ws_hub_stop(h, 200);
	kc_ws_hub_free(h);
	printf("# ws hub: %d failed\n", failures);
	return failures ? 1 : 0;
}
