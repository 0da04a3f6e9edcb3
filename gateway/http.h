/*
 * http.h - the HTTP daemon of kc-gateway (libmicrohttpd): it starts and stops
 * the server, and runs every request through the checks its row of the route
 * table asks for (routes.h) before the route function. Routes see only
 * request.h.
 */
#ifndef KC_HTTP_H
#define KC_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "request.h"

/* HTTP connections libmicrohttpd holds at most (WebSockets leave it after their 101). */
#define KC_HTTP_MAX_CONNECTIONS 8192

/* Starts the daemon on cfg->listen; false with err on failure. */
bool		kc_http_start(kc_app *app, char *err, size_t errlen);
/* Stops accepting, waits up to timeout_s for requests in flight, stops. */
void		kc_http_drain_and_stop(kc_app *app, int timeout_s);

#endif
