/*
 * routes_demo.c - POST /api/v1/demo/purchase?course=&student= (only with
 * --demo / KC_DEMO=on; otherwise the route does not exist: 404).
 *
 * The "buy a course" button of the demo page: it records a pending payment
 * for req->student (the caller; an admin, or anyone when auth is off, names
 * the student) and confirms it, in one transaction, exactly as a payment
 * provider's webhook would; the pipeline and the WebSocket push do the rest. Without course= it
 * picks the first published course the student has not bought; the weekly
 * slot (two weekdays, a start between 08:00 and 19:45 in the student's zone)
 * is drawn at random so that repeated demos rarely collide. It uses a
 * connection of its own, since the request pool runs read-only statements.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "routes.h"

static const char purchase_sql[] =
	"WITH s AS (SELECT id, timezone FROM kc_flow.students WHERE id = $1::uuid), "
	"c AS (SELECT id FROM kc_flow.courses c WHERE c.is_published "
	"        AND ($2::uuid IS NULL OR c.id = $2::uuid) "
	"        AND NOT EXISTS (SELECT 1 FROM kc_flow.student_course_purchases p "
	"                         WHERE p.student_id = $1::uuid AND p.course_id = c.id AND p.is_active) "
	"      ORDER BY c.title, c.id LIMIT 1), "
	"p AS (SELECT c.id AS course_id, kc_flow.create_payment(s.id, c.id, 10, "
	"        jsonb_build_object('weekdays', jsonb_build_array(1 + (random() * 2)::int, 4 + (random() * 2)::int), "
	"                           'start', lpad((8 + (random() * 11)::int)::text, 2, '0') || ':' || "
	"                                    (ARRAY['00', '15', '30', '45'])[1 + (random() * 3)::int], "
	"                           'timezone', s.timezone), 0, 'USD', '{\"demo\": true}') AS payment_id "
	"      FROM s, c) "
	"SELECT json_build_object('student_id', $1::uuid, 'course_id', p.course_id, 'payment_id', p.payment_id, "
	"       'event_id', kc_flow.confirm_payment(p.payment_id))::text, "
	"       (SELECT count(*) FROM s) "
	"FROM p";

void
kc_route_demo_purchase(kc_request *req, kc_response *resp)
{
	const char *course_s = kc_req_query(req, "course");
	char		course[37];
	const char *params[2];
	char		err[256];
	PGconn	   *conn;
	PGresult   *r;

	if (!req->student[0])
	{
		kc_resp_error(resp, 400, "bad_request", "student must be a uuid");
		return;
	}
	if (course_s && *course_s && !kc_uuid_normalize(course_s, course))
	{
		kc_resp_error(resp, 400, "bad_request", "course must be a uuid");
		return;
	}
	params[0] = req->student;
	params[1] = course_s && *course_s ? course : NULL;
	conn = kc_db_connect_raw(req->app->cfg->database_url, "kc-gateway-demo", err, sizeof(err));
	if (!conn)
	{
		kc_resp_unavailable(resp, req->app);
		return;
	}
	r = PQexecParams(conn, purchase_sql, 2, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(r) != PGRES_TUPLES_OK)
	{
		kc_logf(KC_LOG_WARN, "demo purchase failed: %s", PQresultErrorMessage(r));
		kc_resp_error(resp, 500, "internal", "the purchase failed");
	}
	else if (PQntuples(r) == 0)
		kc_resp_error(resp, 409, "conflict", "unknown student, or no course left to buy");
	else
	{
		char	   *body = strdup(PQgetvalue(r, 0, 0));

		if (!body)
			kc_resp_error(resp, 500, "internal", "out of memory");
		else
		{
			kc_logf(KC_LOG_INFO, "demo purchase: %s", body);
			resp->cache_control = "no-store";
			kc_resp_body(resp, 200, "application/json", body, strlen(body));
		}
	}
	PQclear(r);
	PQfinish(conn);
}
