/*
 * route_param.c - the {id} segment of the request a thread is serving
 * (routes.h: kc_route_param). The router records it when it matches a path,
 * and the route function reads it: http.c routes and serves a request in one
 * call on one thread, and a route function gets the request, not the match.
 * Apart from the route table so that route functions depend on this alone.
 */
#include "routes.h"

#include <string.h>

static __thread char param[KC_PARAM_MAX];
static __thread bool param_too_long;

void
kc_route_param_set(const char *p)
{
	param_too_long = p == NULL;
	param[0] = '\0';
	if (p)
	{
		strncpy(param, p, sizeof(param) - 1);
		param[sizeof(param) - 1] = '\0';
	}
}

const char *
kc_route_param(void)
{
	return param_too_long ? NULL : param;
}
