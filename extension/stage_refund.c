/*
 * stage_refund.c
 *      PURCHASE_REFUNDED -> the purchase ended, its trainer freed, its future
 *      sessions cancelled, then PURCHASE_CANCELLED.
 *
 * A refund that arrives before the purchase exists needs nothing: the
 * purchase stage only creates purchases of succeeded payments.
 *
 * Sessions that have started stay scheduled, and every scheduled session
 * must lie inside its allocation's booking (extension/schema/
 * 15_session_bookings.sql): the booking keeps their times and gives up the
 * rest, and goes when none is left.  The bookings are locked first, in a
 * statement of their own: sessions the sessions stage was making for them
 * are then committed and seen by the refund's statement, which cancels them.
 * 0.1.0's bookings (a row per session, until ALTER EXTENSION kc_flow UPDATE)
 * are all deleted, as 0.1.0 did.
 */
#include "kc_flow.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"

/*
 * The booking of the cancelled allocations al: since 0.2.0 trimmed to their
 * sessions that started and stay scheduled, deleted when they have none.
 */
#define STARTED_SQL \
	"SELECT tstzrange(s.starts_at, s.ends_at) AS during FROM kc_flow.tutoring_sessions s" \
	" WHERE s.allocation_id = al.id AND s.status = 'scheduled' AND s.starts_at <= now()"
#define RELEASE_BOOKING_SQL \
	" bk AS (DELETE FROM kc_flow.trainer_bookings b USING al WHERE b.allocation_id = al.id" \
	"         AND (" STARTED_SQL " LIMIT 1) IS NULL)," \
	" bt AS (UPDATE kc_flow.trainer_bookings b SET during = k.during" \
	"          FROM al CROSS JOIN LATERAL (SELECT range_agg(st.during) AS during FROM (" STARTED_SQL ") st) k" \
	"         WHERE b.allocation_id = al.id AND k.during IS NOT NULL),"
#define RELEASE_BOOKING_0_1_0_SQL \
	" bk AS (DELETE FROM kc_flow.trainer_bookings b USING al WHERE b.allocation_id = al.id),"

#define REFUND_SQL(release) \
	"WITH pu AS (" \
	"  UPDATE kc_flow.student_course_purchases pu SET is_active = false, ended_at = now()" \
	"    FROM kc_flow.events e" \
	"   WHERE e.id = $1 AND pu.payment_id = e.correlation_id AND pu.is_active" \
	"  RETURNING pu.id, pu.payment_id, pu.student_id)," \
	" al AS (" \
	"  UPDATE kc_flow.trainer_allocations a SET status = 'cancelled', updated_at = now()" \
	"    FROM pu WHERE a.purchase_id = pu.id AND a.status IN ('pending', 'approved', 'active')" \
	"  RETURNING a.id)," \
	release \
	" se AS (" \
	"  UPDATE kc_flow.tutoring_sessions s SET status = 'cancelled'" \
	"    FROM al WHERE s.allocation_id = al.id AND s.status = 'scheduled' AND s.starts_at > now()" \
	"  RETURNING s.id)," \
	" wake AS (" \
	"  UPDATE kc_flow.event_queue SET run_after = now()" \
	"   WHERE consumer = 'allocation' AND deferrals > 0 AND EXISTS (SELECT 1 FROM al))" \
	" SELECT pu.payment_id, pu.student_id," \
	"        jsonb_build_object('purchase_id', pu.id, 'payment_id', pu.payment_id," \
	"          'cancelled_sessions', (SELECT count(*) FROM se))::text" \
	"   FROM pu"

/* Locks the bookings of the live allocations of the refunded payment (event $1). */
#define LOCK_BOOKINGS_SQL \
	"SELECT 1 FROM kc_flow.trainer_bookings b" \
	"  JOIN kc_flow.trainer_allocations a ON a.id = b.allocation_id" \
	"  JOIN kc_flow.student_course_purchases pu ON pu.id = a.purchase_id" \
	"  JOIN kc_flow.events e ON pu.payment_id = e.correlation_id" \
	" WHERE e.id = $1 AND pu.is_active AND a.status IN ('approved', 'active')" \
	" ORDER BY b.allocation_id FOR UPDATE OF b"

KcfOutcome
kcf_stage_refund(const KcfEvent *event, KcfStageResult *result pg_attribute_unused())
{
	static SPIPlanPtr plans[2];
	static const char *const sql[2] = {
		REFUND_SQL(RELEASE_BOOKING_0_1_0_SQL), REFUND_SQL(RELEASE_BOOKING_SQL)
	};
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(event->id)};
	bool		per_allocation = kcf_bookings_per_allocation();
	bool		isnull;

	if (per_allocation)
	{
		static SPIPlanPtr lock = NULL;

		kcf_plan(&lock, LOCK_BOOKINGS_SQL, 1, types);
		kcf_exec(lock, values, NULL, 0);
	}
	kcf_plan(&plans[per_allocation], sql[per_allocation], 1, types);
	if (kcf_exec(plans[per_allocation], values, NULL, 1) > 0)
		(void) kcf_emit("PURCHASE_CANCELLED", kcf_get_datum(0, 1, &isnull),
									  kcf_get_datum(0, 2, &isnull), kcf_get_text(0, 3));
	return KCF_DONE;
}
