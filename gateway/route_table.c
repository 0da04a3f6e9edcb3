/*
 * route_table.c - every route of kc-gateway in one table, and the router
 * that reads it (see routes.h for what a row means and who reads it).
 *
 * Adding a route: write its function (routes_*.c), add its row here. The
 * daemon checks method, token, student id and access from the row before the
 * function runs; /metrics counts the route under its label; docs/gateway.md
 * lists the same rows.
 */
#include "routes.h"

#include <string.h>

#define READ "GET, HEAD, OPTIONS"	/* the read routes; OPTIONS is the CORS preflight */

const kc_route kc_routes[] = {
	/* label, path, alias, methods, token, student, flags, handler */
	{"home", "/api/v1/students/{student}/home", NULL, READ,
	KC_AUTH_TOKEN, KC_STUDENT_PATH, KC_ROUTE_CACHED, kc_route_home},
	{"learning", "/api/v1/students/{student}/learning", NULL, READ,
	KC_AUTH_TOKEN, KC_STUDENT_PATH, KC_ROUTE_CACHED, kc_route_learning},
	{"sessions", "/api/v1/students/{student}/sessions", NULL, READ,
	KC_AUTH_TOKEN, KC_STUDENT_PATH, 0, kc_route_sessions},
	{"events_recent", "/api/v1/events/recent", NULL, READ,
	KC_AUTH_TOKEN, KC_STUDENT_QUERY, 0, kc_route_events_recent},
	{"healthz", "/healthz", NULL, READ,
	KC_AUTH_NONE, KC_STUDENT_NONE, 0, kc_route_healthz},
	{"readyz", "/readyz", NULL, READ,
	KC_AUTH_NONE, KC_STUDENT_NONE, 0, kc_route_readyz},
	{"metrics", "/metrics", NULL, READ,
	KC_AUTH_NONE, KC_STUDENT_NONE, 0, kc_route_metrics},
	{"static", "/", "/index.html", READ,
	KC_AUTH_NONE, KC_STUDENT_NONE, 0, kc_route_static},
	{"ws", "/api/v1/ws", NULL, "GET",
	KC_AUTH_TOKEN_OR_QUERY, KC_STUDENT_QUERY, 0, kc_route_ws},
	{"demo_purchase", "/api/v1/demo/purchase", NULL, "POST, OPTIONS",
	KC_AUTH_TOKEN, KC_STUDENT_QUERY, KC_ROUTE_DEMO, kc_route_demo_purchase},
	/* the operator console: a page that holds no data, and the admin routes it reads */
	{"admin_console", "/admin", "/admin.html", READ,
	KC_AUTH_NONE, KC_STUDENT_NONE, 0, kc_route_admin_page},
	{"admin_payment", "/api/v1/admin/payments/{id}", NULL, READ,
	KC_AUTH_ADMIN, KC_STUDENT_NONE, 0, kc_route_admin_payment},
	{"admin_search", "/api/v1/admin/search", NULL, READ,
	KC_AUTH_ADMIN, KC_STUDENT_NONE, 0, kc_route_admin_search},
	{"admin_stats", "/api/v1/admin/stats", NULL, READ,
	KC_AUTH_ADMIN, KC_STUDENT_NONE, 0, kc_route_admin_stats},
	{"admin_retry", "/api/v1/admin/dead-letters/{id}/retry", NULL, "POST, OPTIONS",
	KC_AUTH_ADMIN, KC_STUDENT_NONE, 0, kc_route_admin_retry},
	/* the last row: every path no other row matches */
	{"unknown", NULL, NULL, NULL,
	KC_AUTH_NONE, KC_STUDENT_NONE, 0, kc_route_not_found},
};

const int	kc_route_count = sizeof(kc_routes) / sizeof(kc_routes[0]);

_Static_assert(sizeof(kc_routes) / sizeof(kc_routes[0]) <= KC_ROUTES_MAX,
			   "more routes than the metrics have room for: raise KC_ROUTES_MAX");

#define STUDENT_SEGMENT "{student}"
#define ID_SEGMENT "{id}"

/*
 * Matches path against a pattern. A {student} segment is copied to m (or
 * flagged when not a uuid); an {id} segment is copied as sent (or flagged when
 * too long), for its route to check. Either must be non-empty and holds no '/'.
 */
static bool
path_matches(const char *pattern, const char *path, kc_match *m)
{
	const char *seg = strchr(pattern, '{');
	bool		student;
	const char *suffix;
	const char *id;
	const char *slash;
	size_t		prefix_len;
	size_t		idlen;
	char		raw[40];

	if (!seg)
		return strcmp(pattern, path) == 0;
	student = strncmp(seg, STUDENT_SEGMENT, strlen(STUDENT_SEGMENT)) == 0;
	prefix_len = (size_t) (seg - pattern);
	suffix = seg + strlen(student ? STUDENT_SEGMENT : ID_SEGMENT);
	if (strncmp(path, pattern, prefix_len) != 0)
		return false;
	id = path + prefix_len;
	slash = strchr(id, '/');
	if (*suffix == '\0')
	{
		/* the segment ends the path */
		if (slash || *id == '\0')
			return false;
		idlen = strlen(id);
	}
	else
	{
		if (!slash || slash == id || strcmp(slash, suffix) != 0)
			return false;
		idlen = (size_t) (slash - id);
	}
	if (!student)
	{
		m->param_too_long = idlen >= sizeof(m->param);
		if (!m->param_too_long)
		{
			memcpy(m->param, id, idlen);
			m->param[idlen] = '\0';
		}
		return true;
	}
	if (idlen >= sizeof(raw))
	{
		m->bad_id = true;
		return true;
	}
	memcpy(raw, id, idlen);
	raw[idlen] = '\0';
	m->bad_id = !kc_uuid_normalize(raw, m->student);
	if (m->bad_id)
		m->student[0] = '\0';
	return true;
}

void
kc_route_match(const char *path, kc_match *m)
{
	memset(m, 0, sizeof(*m));
	for (int i = 0; i < kc_route_count - 1; i++)
	{
		const kc_route *r = &kc_routes[i];

		if (path_matches(r->path, path, m) || (r->alias && strcmp(r->alias, path) == 0))
		{
			m->route = r;
			break;
		}
	}
	if (!m->route)
		m->route = &kc_routes[kc_route_count - 1];
}
