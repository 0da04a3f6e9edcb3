/*
 * routes.h - the route table (route_table.c) and the route functions
 * (routes_*.c, websocket.c) of docs/design.md §7 and §8.
 *
 * One row per route: path, methods, who may call it, where its student comes
 * from, metrics label and handler. The router (kc_route_match), the daemon's
 * checks (http.c: 405, 401, 400, 403) and the metrics labels all read the
 * table, so adding a route is one row plus its function. A route function
 * runs only after those checks passed; it fills resp and never fails without
 * an answer.
 */
#ifndef KC_ROUTES_H
#define KC_ROUTES_H

#include "request.h"

typedef void (*kc_handler) (kc_request *req, kc_response *resp);

/* Whether a route needs a bearer token (only when auth is on). */
typedef enum kc_auth_rule
{
	KC_AUTH_NONE = 0,			/* anyone */
	KC_AUTH_TOKEN,				/* the Authorization header */
	KC_AUTH_TOKEN_OR_QUERY,		/* ... or ?access_token= (a browser's WebSocket cannot set headers) */
	KC_AUTH_ADMIN				/* a token (401 without, as KC_AUTH_TOKEN) with role admin: the
								 * route function refuses any other with 403 (kc_admin_only) */
} kc_auth_rule;

/* Where a route's student comes from; the access rule (kc_auth_scope) applies to it. */
typedef enum kc_student_from
{
	KC_STUDENT_NONE = 0,		/* the route is about no student */
	KC_STUDENT_PATH,			/* the {student} segment of the path: 400 unless a uuid */
	KC_STUDENT_QUERY			/* ?student=, optional: 400 unless absent or a uuid */
} kc_student_from;

#define KC_ROUTE_CACHED	0x1		/* served through the cache: outcomes counted per route */
#define KC_ROUTE_DEMO	0x2		/* exists only with --demo */

typedef struct kc_route
{
	const char *label;			/* metrics label and log name */
	const char *path;			/* exact, or with one {student} or {id} segment; NULL: no path (last row) */
	const char *alias;			/* another exact path of the route, or NULL */
	const char *methods;		/* allowed, as sent in Allow; NULL: any */
	kc_auth_rule auth;
	kc_student_from student;
	int			flags;			/* KC_ROUTE_* */
	kc_handler	handler;
} kc_route;

/* Rows of the table; the last one answers every path no other row matches. */
extern const kc_route kc_routes[];
extern const int kc_route_count;
#define KC_ROUTES_MAX 24		/* room in the metrics (metrics.c) */
#define KC_PARAM_MAX 65			/* an {id} segment is at most 64 bytes */

typedef struct kc_match
{
	const kc_route *route;
	bool		bad_id;			/* a {student} segment that is not a uuid */
	char		student[37];	/* the {student} segment, lower-case; "" when none or bad */
	bool		param_too_long; /* an {id} segment longer than KC_PARAM_MAX - 1 bytes */
	char		param[KC_PARAM_MAX];	/* the {id} segment as sent; "" when none or too long */
} kc_match;

/* The router: the row for a request path (no query string). */
void		kc_route_match(const char *path, kc_match *m);


/* routes_student.c */
void		kc_route_home(kc_request *req, kc_response *resp);
void		kc_route_learning(kc_request *req, kc_response *resp);
void		kc_route_sessions(kc_request *req, kc_response *resp);

/* routes_events.c */
void		kc_route_events_recent(kc_request *req, kc_response *resp);

/* routes_ops.c */
void		kc_route_healthz(kc_request *req, kc_response *resp);
void		kc_route_readyz(kc_request *req, kc_response *resp);
void		kc_route_metrics(kc_request *req, kc_response *resp);
void		kc_route_static(kc_request *req, kc_response *resp);
void		kc_route_not_found(kc_request *req, kc_response *resp);

/* routes_demo.c (only with --demo) */
void		kc_route_demo_purchase(kc_request *req, kc_response *resp);

/* routes_admin.c: the operator console (admin token; the page itself needs none) */
void		kc_route_admin_page(kc_request *req, kc_response *resp);
void		kc_route_admin_payment(kc_request *req, kc_response *resp);
void		kc_route_admin_search(kc_request *req, kc_response *resp);
void		kc_route_admin_stats(kc_request *req, kc_response *resp);
void		kc_route_admin_retry(kc_request *req, kc_response *resp);

/* websocket.c: the handshake, then a 101 through libmicrohttpd's upgrade (resp->prepared) */
void		kc_route_ws(kc_request *req, kc_response *resp);

#endif
