/*
 * websocket.h - GET /api/v1/ws?after={id} (docs/design.md §8): the HTTP side of the
 * WebSocket route. It checks the handshake and the token, answers 101 through
 * libmicrohttpd's upgrade, reads the replay from the event log and hands the
 * socket to the hub (ws_hub.c), which owns it from then on. It also turns the
 * listener's events into messages for the hub.
 */
#ifndef KC_WEBSOCKET_H
#define KC_WEBSOCKET_H

#include "http.h"
#include "listen.h"

struct MHD_Response;

/* Starts the hub of app (app->ws); false when it cannot. */
bool		kc_ws_start(kc_app *app);
/* Closes every WebSocket with 1001 (waiting up to timeout_ms), stops the hub. */
void		kc_ws_shutdown(kc_app *app, int timeout_ms);
void		kc_ws_free(kc_app *app);

/* The listener's subscriber (arg: the kc_app): one event, already invalidated. */
void		kc_ws_on_event(const kc_event_note *ev, void *arg);

/*
 * The WebSocket route. Returns the response to queue with *code (101 to
 * upgrade, 426 for a wrong protocol version), or NULL with an error in resp.
 * *state gets what the upgrade needs; the caller frees it with
 * kc_ws_state_free once the connection is over.
 */
struct MHD_Response *kc_ws_accept(kc_request *req, const char *method, kc_response *resp,
								  unsigned int *code, void **state);
void		kc_ws_state_free(void *state);

/* True when key is a valid Sec-WebSocket-Key: the base64 of 16 bytes. */
bool		kc_ws_key_valid(const char *key);

/* Builds the "event" message of docs/design.md §8 (malloc'd, NUL-terminated). */
char	   *kc_ws_event_json(long long id, const char *type, const char *correlation_id,
							 long long version, const char *created_at, const char *payload,
							 size_t *len);

#endif
