/*
 * routes.h - one function per route of docs/design.md §7. http.c has already
 * checked method, authentication and (for student routes) access; each
 * function fills resp and never fails without an answer.
 */
#ifndef KC_ROUTES_H
#define KC_ROUTES_H

#include "http.h"

/* routes_student.c */
void		kc_route_home(kc_request *req, kc_response *resp);
void		kc_route_learning(kc_request *req, kc_response *resp);
void		kc_route_sessions(kc_request *req, kc_response *resp);

/* routes_events.c */
void		kc_route_events_recent(kc_request *req, kc_response *resp);

/* The query of /events/recent once checked against the caller. */
typedef struct kc_events_query
{
	long long	after;			/* default 0 */
	long long	limit;			/* 1..1000, default 100 */
	char		student[37];	/* lower-case uuid; empty: every student's events */
} kc_events_query;

/*
 * Checks the raw query parameters of /events/recent (each may be NULL) for
 * principal p: 0 when valid, else 400 or 403 with *msg. A student always gets
 * their own id in q->student.
 */
int			kc_events_query_check(const char *after, const char *limit, const char *student,
								  const kc_principal *p, kc_events_query *q, const char **msg);

/* routes_ops.c */
void		kc_route_healthz(kc_request *req, kc_response *resp);
void		kc_route_readyz(kc_request *req, kc_response *resp);
void		kc_route_metrics(kc_request *req, kc_response *resp);
void		kc_route_static(kc_request *req, kc_response *resp);

/* routes_demo.c (only with --demo) */
void		kc_route_demo_purchase(kc_request *req, kc_response *resp);

#endif
