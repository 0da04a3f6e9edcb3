/*
 * supervisor.h - kc-gateway as several processes on one port (--processes N).
 *
 * One process may hold only RLIMIT_NOFILE sockets; a gateway of N processes
 * holds N times that behind one address. The supervisor binds the port once
 * (one SO_REUSEPORT socket per child, so the kernel spreads connections evenly
 * and a restarting child's socket keeps its queue), forks N children that are
 * each a whole gateway, restarts a child that dies, and passes SIGTERM/SIGINT
 * on for a graceful stop. The children share their metrics (metrics.h).
 */
#ifndef KC_SUPERVISOR_H
#define KC_SUPERVISOR_H

#include "config.h"

/*
 * Runs the supervisor of cfg->processes children and the listener process
 * (feed.h). Returns -1 in each child, with *index (1..N) and *listen_fd
 * (bound and listening, for the HTTP server) set, and in the listener
 * process, with *index N + 1 and *listen_fd the feed's listening socket; in the supervisor, once every child has stopped, returns the exit
 * status of kc-gateway: 0 after SIGTERM/SIGINT, 1 when the port cannot be
 * bound or children keep dying (more than KC_SUPERVISOR_MAX_DEATHS within
 * KC_SUPERVISOR_WINDOW_S seconds).
 */
int			kc_supervise(const kc_config *cfg, int *index, int *listen_fd);

#define KC_SUPERVISOR_MAX_DEATHS 5
#define KC_SUPERVISOR_WINDOW_S 60

#endif
