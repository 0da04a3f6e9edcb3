/*
 * routes.h - one function per route of DESIGN.md §7. http.c has already
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

/* routes_ops.c */
void		kc_route_healthz(kc_request *req, kc_response *resp);
void		kc_route_readyz(kc_request *req, kc_response *resp);
void		kc_route_metrics(kc_request *req, kc_response *resp);
void		kc_route_static(kc_request *req, kc_response *resp);

/* routes_demo.c (only with --demo) */
void		kc_route_demo_purchase(kc_request *req, kc_response *resp);

/* Parses a decimal integer in [min,max]; false when absent-but-invalid. */
bool		kc_parse_int_param(const char *s, long long min, long long max, long long *out);

#endif
