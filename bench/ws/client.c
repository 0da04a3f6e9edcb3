/*
 * bench/ws/client.c - the load generator of bench/ws/run.sh: holds many WebSocket connections
 * to kc-gateway (one per student) on one epoll set, and measures delivery latency. Each event's
 * payload carries "t", the emitter's clock_timestamp() inside the emitting transaction, so
 * receive time minus t is commit-to-delivery latency (plus the few microseconds between the
 * emit and the commit, and this client's own delay). Both clocks are the host's CLOCK_REALTIME.
 *
 * Connections are opened CONCURRENCY at a time and spread over the loopback source addresses
 * given (one address has about 28,000 ephemeral ports towards one server port), bound with
 * IP_BIND_ADDRESS_NO_PORT so that the port is chosen per destination. The token of each
 * student is an HS256 JWT (sub, exp two hours ahead) signed with SECRET, as the gateway's
 * --issue-token makes it. The handshake is written and read here; after it, wslay frames the
 * socket: it answers pings with masked pongs, as a browser would, and hands this file whole
 * messages. The epoll set is level-triggered; a socket costs its descriptor, a struct and its
 * wslay context.
 *
 * A process holds at most what its open-files limit allows; run.sh starts as many as the
 * connections need, each with its slice of the students (FIRST, COUNT).
 *
 * usage: client PORT SECRET STUDENTS_FILE FIRST COUNT READY_FILE STOP_FILE LAT_FILE [SOURCE_ADDR ...]
 * Writes the number of open connections to READY_FILE once all are open (or failed), keeps
 * them until STOP_FILE exists, writes every event received to LAT_FILE, one a line: its latency
 * (ms), its log position and when it was received (s since the epoch), then prints one JSON
 * line with the counts.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <jwt.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <wslay/wslay.h>

#define CONCURRENCY 512			/* handshakes in progress at once */
#define MAX_ERRORS 16			/* distinct connect error texts kept */
#define EVENT_PREFIX "{\"type\":\"event\""

enum state { CONNECTING, HANDSHAKE, OPEN };

typedef struct conn
{
	int			fd;
	enum state	state;
	bool		close_frame;	/* the server sent a close frame */
	bool		eof;			/* the server closed the socket */
	bool		want_out;		/* watched for EPOLLOUT (a pong waits) */
	char	   *student;		/* until the request is sent */
	uint8_t    *buf;			/* bytes read but not yet consumed */
	size_t		len;
	size_t		off;
	wslay_event_context_ptr ctx;
} conn;

static struct
{
	int			port;
	const char *secret;
	int			epfd;
	conn	  **by_fd;
	int			max_fd;
	long		open, failed, closed, events, pings;
	double		first_event, last_event;
	struct
	{
		double		lat;		/* receive time minus the payload's t (s) */
		double		at;			/* receive time, CLOCK_REALTIME (s) */
		long long	id;			/* the event's log position */
	}		   *lat;
	size_t		nlat, caplat;
	struct
	{
		char	   *why;
		long		n;
	}			errors[MAX_ERRORS];
	int			nerrors;
} g;

static double now_s(void);
static void note_error(const char *why);
static void start_connect(char *student, const char *source);
static void on_ready(conn *c, uint32_t ev);
static bool read_handshake(conn *c);
static void fail(conn *c, const char *why);
static char *request(const char *student);
static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user);
static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *user);
static int	genmask_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *user);
static void msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg, void *user);
static double cpu_s(void);
static void print_result(double connect_s, double connect_cpu_s);

static const struct wslay_event_callbacks callbacks = {
	recv_cb, send_cb, genmask_cb, NULL, NULL, NULL, msg_cb
};

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
note_error(const char *why)
{
	int			i;

	g.failed++;
	for (i = 0; i < g.nerrors; i++)
		if (strcmp(g.errors[i].why, why) == 0)
		{
			g.errors[i].n++;
			return;
		}
	if (g.nerrors < MAX_ERRORS)
	{
		g.errors[g.nerrors].why = strdup(why);
		g.errors[g.nerrors++].n = 1;
	}
}

/* A signed token for student and the HTTP upgrade request carrying it (malloc'd). */
static char *
request(const char *student)
{
	jwt_t	   *jwt = NULL;
	char	   *tok,
			   *req = NULL;
	uint8_t		raw[16];
	char		key[25];

	if (jwt_new(&jwt) != 0)
		return NULL;
	if (jwt_add_grant(jwt, "sub", student) == 0 &&
		jwt_add_grant_int(jwt, "exp", (long) time(NULL) + 7200) == 0 &&
		jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *) g.secret, strlen(g.secret)) == 0 &&
		(tok = jwt_encode_str(jwt)) != NULL)
	{
		if (getrandom(raw, sizeof(raw), 0) != sizeof(raw))
			memset(raw, 0x5a, sizeof(raw));
		EVP_EncodeBlock((unsigned char *) key, raw, sizeof(raw));
		if (asprintf(&req, "GET /api/v1/ws?access_token=%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
					 "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
					 "Sec-WebSocket-Version: 13\r\n\r\n", tok, g.port, key) < 0)
			req = NULL;
		free(tok);
	}
	jwt_free(jwt);
	return req;
}

/* A non-blocking socket from source towards the gateway, watched for its connect. */
static void
start_connect(char *student, const char *source)
{
	struct sockaddr_in src = {.sin_family = AF_INET},
				dst = {.sin_family = AF_INET, .sin_port = htons(g.port)};
	int			one = 1,
				fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	conn	   *c;
	struct epoll_event ev = {.events = EPOLLOUT};

	if (fd < 0)
	{
		note_error(strerror(errno));
		return;
	}
	inet_pton(AF_INET, source, &src.sin_addr);
	inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr);
	setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *) &src, sizeof(src)) != 0 ||
		(connect(fd, (struct sockaddr *) &dst, sizeof(dst)) != 0 && errno != EINPROGRESS) ||
		fd >= g.max_fd || !(c = calloc(1, sizeof(*c))))
	{
		note_error(fd >= g.max_fd ? "descriptor beyond the open-files limit" : strerror(errno));
		close(fd);
		return;
	}
	c->fd = fd;
	c->state = CONNECTING;
	c->student = student;
	g.by_fd[fd] = c;
	ev.data.ptr = c;
	epoll_ctl(g.epfd, EPOLL_CTL_ADD, fd, &ev);
}

/* Drops c; an open connection counts as closed by the server, any other as failed (why). */
static void
fail(conn *c, const char *why)
{
	epoll_ctl(g.epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	g.by_fd[c->fd] = NULL;
	if (c->state == OPEN)
	{
		g.open--;
		g.closed++;
	}
	else
		note_error(why);
	if (c->ctx)
		wslay_event_context_free(c->ctx);
	free(c->buf);
	free(c);
}

/*
 * Reads the server's handshake answer into c->buf; true once c is open (the bytes after the
 * answer stay in c->buf for wslay), false while it is incomplete or when c was dropped.
 */
static bool
read_handshake(conn *c)
{
	uint8_t		chunk[4096];
	ssize_t		n = recv(c->fd, chunk, sizeof(chunk), 0);
	uint8_t    *end;
	char	   *eol,
				line[128];

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return false;
	if (n <= 0)
	{
		fail(c, n == 0 ? "closed by the server" : strerror(errno));
		return false;
	}
	c->buf = realloc(c->buf, c->len + n + 1);
	memcpy(c->buf + c->len, chunk, n);
	c->len += n;
	c->buf[c->len] = '\0';
	end = memmem(c->buf, c->len, "\r\n\r\n", 4);
	if (!end)
		return false;
	eol = strstr((char *) c->buf, "\r\n");
	snprintf(line, sizeof(line), "%.*s", (int) (eol - (char *) c->buf), (char *) c->buf);
	if (!strstr(line, " 101 "))
	{
		fail(c, line);
		return false;
	}
	if (wslay_event_context_client_init(&c->ctx, &callbacks, c) != 0)
	{
		fail(c, "out of memory");
		return false;
	}
	c->off = end + 4 - c->buf;
	if (c->off == c->len)		/* nothing after the answer: the buffer goes */
	{
		free(c->buf);
		c->buf = NULL;
		c->off = c->len = 0;
	}
	c->state = OPEN;
	g.open++;
	return true;
}

/* The socket c is readable or writable (ev): moves it through connect, handshake and frames. */
static void
on_ready(conn *c, uint32_t ev)
{
	struct epoll_event mod = {.data.ptr = c};

	if (c->state == CONNECTING)
	{
		int			err = 0;
		socklen_t	len = sizeof(err);
		char	   *req;

		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
		if (err)
		{
			fail(c, strerror(err));
			return;
		}
		if (!(req = request(c->student)))
		{
			fail(c, "cannot sign a token");
			return;
		}
		/* a few hundred bytes: fits an empty send buffer */
		if (send(c->fd, req, strlen(req), MSG_NOSIGNAL) != (ssize_t) strlen(req))
		{
			free(req);
			fail(c, "request not sent whole");
			return;
		}
		free(req);
		c->state = HANDSHAKE;
		c->student = NULL;
		mod.events = EPOLLIN;
		epoll_ctl(g.epfd, EPOLL_CTL_MOD, c->fd, &mod);
		return;
	}
	if (c->state == HANDSHAKE && !read_handshake(c))
		return;
	if ((ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) || c->off < c->len)
	{
		if (wslay_event_recv(c->ctx) != 0 || c->eof)
		{
			fail(c, "closed by the server");
			return;
		}
		if (c->close_frame)
		{
			fail(c, "close frame");
			return;
		}
	}
	if (wslay_event_want_write(c->ctx) && wslay_event_send(c->ctx) != 0)
	{
		fail(c, "send failed");
		return;
	}
	/* a pong that did not fit waits for EPOLLOUT */
	if (c->want_out != (wslay_event_want_write(c->ctx) != 0))
	{
		c->want_out = !c->want_out;
		mod.events = EPOLLIN | (c->want_out ? EPOLLOUT : 0);
		epoll_ctl(g.epfd, EPOLL_CTL_MOD, c->fd, &mod);
	}
}

static ssize_t
recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
	conn	   *c = user;
	ssize_t		n;

	if (c->off < c->len)		/* what followed the handshake answer first */
	{
		n = c->len - c->off < len ? c->len - c->off : len;
		memcpy(buf, c->buf + c->off, n);
		c->off += n;
		if (c->off == c->len)
		{
			free(c->buf);
			c->buf = NULL;
			c->off = c->len = 0;
		}
		return n;
	}
	n = recv(c->fd, buf, len, 0);
	if (n > 0)
		return n;
	if (n == 0)
		c->eof = true;
	wslay_event_set_error(ctx, n < 0 && (errno == EAGAIN || errno == EINTR) ?
						  WSLAY_ERR_WOULDBLOCK : WSLAY_ERR_CALLBACK_FAILURE);
	return -1;
}

static ssize_t
send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *user)
{
	conn	   *c = user;
	ssize_t		n = send(c->fd, data, len, MSG_NOSIGNAL);

	if (n >= 0)
		return n;
	wslay_event_set_error(ctx, errno == EAGAIN || errno == EINTR ?
						  WSLAY_ERR_WOULDBLOCK : WSLAY_ERR_CALLBACK_FAILURE);
	return -1;
}

static int
genmask_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *user)
{
	return getrandom(buf, len, 0) == (ssize_t) len ? 0 : -1;
}

/* A whole message: an event's latency is noted; pings (wslay answers them) are counted. */
static void
msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg, void *user)
{
	conn	   *c = user;
	double		now;
	cJSON	   *doc,
			   *t,
			   *id;

	if (arg->opcode == WSLAY_PING)
		g.pings++;
	else if (arg->opcode == WSLAY_CONNECTION_CLOSE)
		c->close_frame = true;
	else if (arg->opcode == WSLAY_TEXT_FRAME && arg->msg_length >= strlen(EVENT_PREFIX) &&
			 memcmp(arg->msg, EVENT_PREFIX, strlen(EVENT_PREFIX)) == 0)
	{
		now = now_s();
		doc = cJSON_ParseWithLength((const char *) arg->msg, arg->msg_length);
		t = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(doc, "payload"), "t");
		id = cJSON_GetObjectItemCaseSensitive(doc, "id");
		if (cJSON_IsNumber(t) && t->valuedouble != 0)
		{
			if (g.nlat == g.caplat)
			{
				g.caplat = g.caplat ? g.caplat * 2 : 65536;
				g.lat = realloc(g.lat, g.caplat * sizeof(*g.lat));
			}
			g.lat[g.nlat].lat = now - t->valuedouble;
			g.lat[g.nlat].at = now;
			g.lat[g.nlat++].id = cJSON_IsNumber(id) ? (long long) id->valuedouble : 0;
		}
		cJSON_Delete(doc);
		g.events++;
		if (g.first_event == 0)
			g.first_event = now;
		g.last_event = now;
	}
}

/* CPU seconds (user and system) this process has used so far. */
static double
cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/*
 * The one JSON line run.sh gathers: counts, and CPU seconds in all (client_cpu_s) and until
 * every connection was open (connect_cpu_s; the difference is what holding them and reading
 * the events cost).
 */
static void
print_result(double connect_s, double connect_cpu_s)
{
	long		rss_kib = 0;
	char		line[256];
	FILE	   *f = fopen("/proc/self/status", "r");
	int			i;
	const char *p;

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld", &rss_kib) == 1)
			break;
	if (f)
		fclose(f);
	printf("{\"connections_open\": %ld, \"connect_failed\": %ld, \"connect_errors\": {",
		   g.open, g.failed);
	for (i = 0; i < g.nerrors; i++)
	{
		printf("%s\"", i ? ", " : "");
		for (p = g.errors[i].why; *p; p++)
			if (*p == '"' || *p == '\\')
				printf("\\%c", *p);
			else if ((unsigned char) *p >= 0x20)
				putchar(*p);
		printf("\": %ld", g.errors[i].n);
	}
	printf("}, \"connect_seconds\": %.1f, \"connect_cpu_s\": %.1f, \"events_received\": %ld, ",
		   connect_s, connect_cpu_s, g.events);
	if (g.first_event)
		printf("\"first_event\": %.6f, \"last_event\": %.6f, ", g.first_event, g.last_event);
	else
		printf("\"first_event\": null, \"last_event\": null, ");
	printf("\"pings_answered\": %ld, \"closed_by_server\": %ld, \"client_rss_mib\": %.1f, "
		   "\"client_cpu_s\": %.1f}\n", g.pings, g.closed, rss_kib / 1024.0, cpu_s());
	fflush(stdout);
}

int
main(int argc, char **argv)
{
	long		first,
				n,
				nxt = 0,
				nstudents = 0,
				i;
	const char *ready_file,
			   *stop_file,
			   *lat_file;
	const char *const *sources;
	const char *const default_source[] = {"127.0.0.1"};
	int			nsources;
	struct rlimit rl;
	FILE	   *f;
	char	  **students,
				id[64];
	struct epoll_event evs[4096];
	double		t0 = now_s(),
				now,
				next_check = 0,
				connect_s = 0,
				connect_cpu_s = 0;
	bool		ready = false;

	if (argc < 9)
	{
		fprintf(stderr, "usage: %s PORT SECRET STUDENTS_FILE FIRST COUNT READY_FILE STOP_FILE LAT_FILE [SOURCE_ADDR ...]\n", argv[0]);
		return 2;
	}
	g.port = atoi(argv[1]);
	g.secret = argv[2];
	first = atol(argv[4]);
	n = atol(argv[5]);
	ready_file = argv[6];
	stop_file = argv[7];
	lat_file = argv[8];
	sources = argc > 9 ? (const char *const *) argv + 9 : default_source;
	nsources = argc > 9 ? argc - 9 : 1;

	/* as many descriptors as the slice needs, within the hard limit */
	getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur < (rlim_t) n + 64)
	{
		rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > (rlim_t) n + 64 ? (rlim_t) n + 64 : rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	getrlimit(RLIMIT_NOFILE, &rl);
	g.max_fd = (int) rl.rlim_cur;
	g.by_fd = calloc(g.max_fd, sizeof(conn *));

	students = calloc(n > 0 ? n : 1, sizeof(char *));
	if (!(f = fopen(argv[3], "r")) || !students || !g.by_fd)
	{
		perror(argv[3]);
		return 1;
	}
	for (i = 0; nstudents < n && fscanf(f, "%63s", id) == 1; i++)
		if (i >= first)
			students[nstudents++] = strdup(id);
	fclose(f);

	g.epfd = epoll_create1(EPOLL_CLOEXEC);
	for (;;)
	{
		long		in_progress = nxt - g.open - g.failed - g.closed;
		int			k,
					ne;

		now = now_s();
		while (nxt < nstudents && in_progress < CONCURRENCY)
		{
			long		before = g.failed;

			start_connect(students[nxt], sources[(first + nxt) % nsources]);
			in_progress += g.failed == before;
			nxt++;
		}
		if (!ready && ((nxt >= nstudents && in_progress == 0) || now - t0 > 600))
		{
			connect_s = now - t0;
			connect_cpu_s = cpu_s();
			if ((f = fopen(ready_file, "w")))
			{
				fprintf(f, "%ld\n", g.open);
				fclose(f);
			}
			ready = true;
		}
		if (ready && now >= next_check)
		{
			if (access(stop_file, F_OK) == 0)
				break;
			next_check = now + 0.5;
		}
		ne = epoll_wait(g.epfd, evs, 4096, 50);
		for (k = 0; k < ne; k++)
			on_ready(evs[k].data.ptr, evs[k].events);
	}
	if ((f = fopen(lat_file, "w")))
	{
		for (i = 0; i < (long) g.nlat; i++)
			fprintf(f, "%.3f %lld %.6f\n", g.lat[i].lat * 1000, g.lat[i].id, g.lat[i].at);
		fclose(f);
	}
	print_result(connect_s, connect_cpu_s);
	_exit(0);
}
