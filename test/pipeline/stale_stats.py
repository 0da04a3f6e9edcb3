"""stale_stats: the workers stop seq-scanning tables that were VACUUMed empty.

A VACUUM ANALYZE while the pipeline's tables are empty (a fresh install, or
vacuumdb -Z after pg_upgrade) records them as known-empty, and the workers'
prepared plans scan them sequentially.  With autovacuum off (this test's
cluster: test/suites/30_pipeline.sh), only worker 0's check of tables that
outgrew their statistics (extension/table_stats.c) can ANALYZE them and have
the plans made anew.  A first burst of purchases fills the tables; they must
be analyzed by the time it has run through, and a second burst must not scan
them sequentially.  Prints TAP lines."""
import time

from kcflow_test import World, connect, finish, one, ok, rows, run, wait_quiet, wait_workers

BURST = 800
# the tables every purchase reads by key; without the fix each is scanned several times per purchase
TABLES = ("student_course_purchases", "trainer_allocations", "trainer_bookings")


def confirm(conn, payments):
    with conn.cursor() as cur:
        for p in payments:
            cur.execute("UPDATE kc_flow.payments SET status = 'succeeded' WHERE id = %s", (p,))


def sessions_generated(conn, n, timeout=60.0):
    """Waits until n payments have their sessions, reading none of TABLES; returns True if so."""
    start = time.time()
    while time.time() - start < timeout:
        if one(conn, "SELECT count(*) FROM kc_flow.events WHERE event_type = 'SESSIONS_GENERATED'") >= n:
            return True
        time.sleep(0.1)
    return False


def seq_scans(conn):
    """Sequential scans of TABLES as the cumulative statistics count them, once every
    backend flushed its counters (the workers do at least once a second when idle; this
    test's own session keeps them up to 10 s unless told)."""
    run(conn, "SELECT pg_stat_force_next_flush()")
    time.sleep(2)
    run(conn, "SELECT pg_stat_clear_snapshot()")
    return dict(rows(conn, "SELECT relname, seq_scan FROM pg_stat_user_tables"
                           " WHERE schemaname = 'kc_flow' AND relname = ANY(%s)", (list(TABLES),)))


def main():
    conn = connect()
    ok(wait_workers(conn), "stale stats: the workers run")
    ok(one(conn, "SHOW autovacuum") == "off", "stale stats: autovacuum is off in this cluster")
    # twice the trainers' places the payments need: a student's weekly slot may find the
    # trainers with a place left all booked at that hour, and the allocation waits
    world = World(conn, trainers=2 * BURST // 10, students=2 * BURST, capacity=20)
    payments = world.payments()
    run(conn, "VACUUM ANALYZE")
    vacuumed = one(conn, "SELECT now()")
    ok(one(conn, "SELECT bool_and(reltuples = 0) FROM pg_class WHERE oid = ANY(%s::regclass[])",
           (["kc_flow." + t for t in TABLES],)),
       "stale stats: VACUUM ANALYZE records the empty tables as known-empty")

    confirm(conn, payments[:BURST])
    ok(wait_quiet(conn, world.course, BURST, timeout=60) is not None, "stale stats: the first burst runs through")
    stale = rows(conn, """SELECT c.relname, c.reltuples FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid
                           WHERE s.schemaname = 'kc_flow' AND c.relname = ANY(%s)
                             AND (s.last_analyze IS NULL OR s.last_analyze <= %s)""", (list(TABLES), vacuumed))
    ok(not stale, "stale stats: worker 0 analyzed the tables the burst filled", stale)

    # between the two counts this session reads none of TABLES: only the workers' scans count
    before = seq_scans(conn)
    confirm(conn, payments[BURST:])
    ok(sessions_generated(conn, 2 * BURST), "stale stats: the second burst runs through")
    after = seq_scans(conn)
    ok(wait_quiet(conn, world.course, 2 * BURST, timeout=30) is not None,
       "stale stats: every payment has its allocation and sessions")
    scans = {t: after[t] - before[t] for t in TABLES}
    ok(max(scans.values()) <= BURST // 20,
       "stale stats: %d purchases scan none of %s sequentially (at most %d scans each, %d seen)"
       % (BURST, ", ".join(TABLES), BURST // 20, max(scans.values())), scans)
    finish()


if __name__ == "__main__":
    main()
