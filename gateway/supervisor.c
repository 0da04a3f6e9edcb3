/*
 * supervisor.c - the process that binds the gateway's port and keeps N
 * children serving it (--processes N; supervisor.h says why).
 *
 * Start: the shared metrics segment, one listening socket per child (all
 * SO_REUSEPORT on the same address) and the feed's socket (feed.h), then the
 * forks: the N children and, as process N + 1, the listener process that
 * feeds them every event (the only one that LISTENs, catches up and
 * invalidates Redis). The listener process is restarted like a child. The supervisor runs no
 * thread and opens no connection: a fork copies only this process. Then it
 * waits for signals: SIGCHLD reaps a child, logs why it ended and forks its
 * successor on the same socket (connections that arrived meanwhile wait in
 * that socket's queue), after a pause that doubles with each death in the
 * window; too many deaths stop the gateway. SIGTERM/SIGINT go to every child,
 * which drains as a single gateway does; a child still running drain-timeout
 * + 5 s later is killed.
 */
#include "supervisor.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "feed.h"
#include "log.h"
#include "metrics.h"

#define FIRST_PAUSE_MS 100
#define LONGEST_PAUSE_MS 5000

typedef struct child
{
	pid_t		pid;			/* 0: not running */
	double		restart_at;		/* monotonic seconds; 0: no restart due */
} child;

static double now_s(void);
static int	listen_socket(const kc_config *cfg, int port, char *err, size_t errlen);
static pid_t spawn(int index, int nchildren, const int *fds, int feed_fd, const sigset_t *old_mask,
				   bool restart);
static void log_death(int index, pid_t pid, int status, double pause_s);
static int	stop_all(child *kids, int n, int timeout_s);

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double) ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A socket bound to cfg->listen_host:port and listening; -1 with err. */
static int
listen_socket(const kc_config *cfg, int port, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t	len;
	int			fd;
	int			on = 1;

	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, cfg->listen_host, &((struct sockaddr_in *) &ss)->sin_addr) == 1)
	{
		ss.ss_family = AF_INET;
		((struct sockaddr_in *) &ss)->sin_port = htons((uint16_t) port);
		len = sizeof(struct sockaddr_in);
	}
	else if (inet_pton(AF_INET6, cfg->listen_host, &((struct sockaddr_in6 *) &ss)->sin6_addr) == 1)
	{
		ss.ss_family = AF_INET6;
		((struct sockaddr_in6 *) &ss)->sin6_port = htons((uint16_t) port);
		len = sizeof(struct sockaddr_in6);
	}
	else
	{
		snprintf(err, errlen, "listen host \"%s\" is not an IP address", cfg->listen_host);
		return -1;
	}
	fd = socket(ss.ss_family, SOCK_STREAM, 0);
	if (fd < 0 ||
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0 ||
		bind(fd, (struct sockaddr *) &ss, len) != 0 ||
		listen(fd, SOMAXCONN) != 0 ||
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0)
	{
		snprintf(err, errlen, "cannot listen on %s: %s", cfg->listen, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

/*
 * Forks child index (nchildren + 1: the listener process). In the child: the
 * signal mask of before, death with the supervisor, only its own listening
 * socket (the listener process: only the feed's); returns 0. In the
 * supervisor: the child's pid (-1 when fork failed).
 */
static pid_t
spawn(int index, int nchildren, const int *fds, int feed_fd, const sigset_t *old_mask, bool restart)
{
	pid_t		parent = getpid();
	pid_t		pid = fork();

	if (pid != 0)
	{
		if (pid > 0)
			kc_metrics_child_born(index, (int) pid, restart);
		else
			kc_logf(KC_LOG_ERROR, "cannot fork child %d: %s", index, strerror(errno));
		return pid;
	}
	sigprocmask(SIG_SETMASK, old_mask, NULL);
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != parent)
		_exit(1);				/* the supervisor died before prctl */
	for (int i = 0; i < nchildren; i++)
		if (i != index - 1)
			close(fds[i]);
	if (index <= nchildren)
		close(feed_fd);
	kc_metrics_become_child(index);
	kc_log_set_process(index);
	return 0;
}

static void
log_death(int index, pid_t pid, int status, double pause_s)
{
	kc_logline	l;

	kc_log_begin(&l, KC_LOG_ERROR, pause_s >= 0 ? "child died: restarting it" : "child died");
	kc_log_int(&l, "child", index);
	kc_log_int(&l, "childPid", pid);
	if (WIFSIGNALED(status))
	{
		kc_log_int(&l, "signal", WTERMSIG(status));
		kc_log_str(&l, "reason", strsignal(WTERMSIG(status)));
		kc_log_bool(&l, "coreDumped", WCOREDUMP(status));
	}
	else
		kc_log_int(&l, "exitStatus", WEXITSTATUS(status));
	if (pause_s >= 0)
		kc_log_ms(&l, "restartInMs", pause_s * 1000);
	kc_log_end(&l);
}

/* SIGTERM to every child, SIGKILL to those still there after timeout_s; returns 0 when all exited 0. */
static int
stop_all(child *kids, int n, int timeout_s)
{
	double		deadline = now_s() + timeout_s;
	int			left = 0;
	int			rc = 0;
	bool		killed = false;

	for (int i = 0; i < n; i++)
		if (kids[i].pid > 0)
		{
			kill(kids[i].pid, SIGTERM);
			left++;
		}
	while (left > 0)
	{
		int			status;
		pid_t		pid = waitpid(-1, &status, WNOHANG);

		if (pid > 0)
		{
			for (int i = 0; i < n; i++)
				if (kids[i].pid == pid)
				{
					kids[i].pid = 0;
					kc_metrics_child_died(i + 1);
					left--;
					if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
					{
						log_death(i + 1, pid, status, -1);
						rc = 1;
					}
				}
			continue;
		}
		if (pid < 0 && errno != EINTR)
			break;
		if (!killed && now_s() > deadline)
		{
			kc_logf(KC_LOG_WARN, "%d children still running %d s after SIGTERM: killing them", left, timeout_s);
			for (int i = 0; i < n; i++)
				if (kids[i].pid > 0)
					kill(kids[i].pid, SIGKILL);
			killed = true;
		}
		usleep(20 * 1000);
	}
	return rc;
}

int
kc_supervise(const kc_config *cfg, int *index, int *listen_fd)
{
	int			n = cfg->processes;
	int			all = n + 1;	/* the children and the listener process */
	int		   *fds = calloc((size_t) n, sizeof(int));
	child	   *kids = calloc((size_t) all, sizeof(child));
	int			feed_fd;
	double	   *deaths = calloc(KC_SUPERVISOR_MAX_DEATHS + 1, sizeof(double));
	int			ndeaths = 0;
	int			port = cfg->listen_port;
	char		err[256];
	sigset_t	sigs;
	sigset_t	old_mask;
	int			rc = 0;

	kc_log_set_process(0);
	if (!fds || !kids || !deaths || !kc_metrics_share(n, true))
	{
		kc_logf(KC_LOG_ERROR, "cannot set up %d processes: out of memory", n);
		return 1;
	}
	for (int i = 0; i < n; i++)
	{
		fds[i] = listen_socket(cfg, port, err, sizeof(err));
		if (fds[i] < 0)
		{
			kc_logf(KC_LOG_ERROR, "%s", err);
			return 1;
		}
		if (port == 0)
		{
			/* --listen host:0: the others join the port the first one got */
			struct sockaddr_storage ss;
			socklen_t	len = sizeof(ss);

			getsockname(fds[0], (struct sockaddr *) &ss, &len);
			port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *) &ss)->sin_port :
						 ((struct sockaddr_in6 *) &ss)->sin6_port);
		}
	}

	feed_fd = kc_feed_listen(err, sizeof(err));
	if (feed_fd < 0)
	{
		kc_logf(KC_LOG_ERROR, "%s", err);
		return 1;
	}

	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGCHLD);
	sigprocmask(SIG_BLOCK, &sigs, &old_mask);
	for (int i = 0; i < all; i++)
	{
		kids[i].pid = spawn(i + 1, n, fds, feed_fd, &old_mask, false);
		if (kids[i].pid == 0)
		{
			*index = i + 1;
			goto in_child;
		}
		if (kids[i].pid < 0)
		{
			kids[i].pid = 0;
			rc = 1;
			break;
		}
	}
	if (rc == 0)
		kc_logf(KC_LOG_INFO, "kc-gateway supervisor: %d processes on %s (port %d) and a listener process",
				n, cfg->listen, port);

	while (rc == 0)
	{
		struct timespec tick = {0, 100 * 1000 * 1000};
		int			sig = sigtimedwait(&sigs, NULL, &tick);
		int			status;
		pid_t		pid;

		if (sig == SIGTERM || sig == SIGINT)
		{
			kc_logf(KC_LOG_INFO, "signal %d: stopping %d processes", sig, n);
			break;
		}
		while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
			for (int i = 0; i < all; i++)
			{
				double		t = now_s();
				double		pause;

				if (kids[i].pid != pid)
					continue;
				kids[i].pid = 0;
				kc_metrics_child_died(i + 1);
				/* the deaths of the last window, oldest first */
				while (ndeaths > 0 && t - deaths[0] > KC_SUPERVISOR_WINDOW_S)
					memmove(deaths, deaths + 1, (size_t) --ndeaths * sizeof(double));
				deaths[ndeaths++] = t;
				if (ndeaths > KC_SUPERVISOR_MAX_DEATHS)
				{
					log_death(i + 1, pid, status, -1);
					kc_logf(KC_LOG_ERROR, "%d children died within %d s: giving up",
							ndeaths, KC_SUPERVISOR_WINDOW_S);
					rc = 1;
					break;
				}
				pause = (FIRST_PAUSE_MS << (ndeaths - 1)) / 1000.0;
				if (pause > LONGEST_PAUSE_MS / 1000.0)
					pause = LONGEST_PAUSE_MS / 1000.0;
				log_death(i + 1, pid, status, pause);
				kids[i].restart_at = t + pause;
			}
		for (int i = 0; i < all && rc == 0; i++)
			if (kids[i].restart_at > 0 && now_s() >= kids[i].restart_at)
			{
				kids[i].restart_at = 0;
				kids[i].pid = spawn(i + 1, n, fds, feed_fd, &old_mask, true);
				if (kids[i].pid == 0)
				{
					*index = i + 1;
					goto in_child;
				}
				if (kids[i].pid < 0)
				{
					kids[i].pid = 0;
					rc = 1;
				}
			}
	}
	if (stop_all(kids, all, cfg->drain_timeout + 5) != 0 && rc == 0)
		kc_logf(KC_LOG_WARN, "a child did not stop cleanly");
	for (int i = 0; i < n; i++)
		close(fds[i]);
	close(feed_fd);
	free(fds);
	free(kids);
	free(deaths);
	kc_logf(KC_LOG_INFO, rc == 0 ? "kc-gateway stopped" : "kc-gateway stopped: its processes kept dying");
	return rc;

in_child:
	/* a child: the supervisor's bookkeeping was copied, not shared; only its socket stays */
	*listen_fd = *index <= n ? fds[*index - 1] : feed_fd;
	free(fds);
	free(kids);
	free(deaths);
	return -1;
}
