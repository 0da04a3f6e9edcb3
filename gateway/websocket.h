/*
 * websocket.h - GET /api/v1/ws?after={id} (docs/design.md §8): the HTTP side of the
 * WebSocket route (kc_route_ws, a row of the route table, routes.h). It checks
 * the handshake, answers 101 through
 * libmicrohttpd's upgrade, reads the replay from the event log and hands the
 * socket to the hub (ws_hub.c), which owns it from then on. It also turns the
 * listener's events into messages for the hub.
 */
#ifndef KC_WEBSOCKET_H
#define KC_WEBSOCKET_H

#include "listen.h"
#include "request.h"

/* Starts the hub of app (app->ws); false when it cannot. */
bool		kc_ws_start(kc_app *app);
/* Closes every WebSocket with 1001 (waiting up to timeout_ms), stops the hub. */
void		kc_ws_shutdown(kc_app *app, int timeout_ms);
void		kc_ws_free(kc_app *app);

/* The listener's subscriber (arg: the kc_app): one event, already invalidated. */
void		kc_ws_on_event(const kc_event_note *ev, void *arg);
/* The listener skipped trimmed events: every live socket behind head is told to refetch. */
void		kc_ws_on_skip(long long floor_pos, long long head, void *arg);
/* The listener's kc_rewind_fn: every socket is told to refetch (ws_hub.h). */
void		kc_ws_on_rewind(long long end, void *arg);

/*
 * True when version ("a.b.c", MHD_get_version()'s form) is a libmicrohttpd
 * release whose upgrade hand-off was checked (websocket.c says what it needs).
 */
bool		kc_ws_mhd_checked(const char *version);

/* True when key is a valid Sec-WebSocket-Key: the base64 of 16 bytes. */
bool		kc_ws_key_valid(const char *key);

/* Builds the "event" message of docs/design.md §8 (malloc'd, NUL-terminated). */
char	   *kc_ws_event_json(long long id, const char *type, const char *correlation_id,
							 long long version, const char *created_at, const char *payload,
							 size_t *len);

#endif
