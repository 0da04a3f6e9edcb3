"""queue_horizon: under a held xmin horizon the event queue's and the event log's
tables stop growing.

A session holds a REPEATABLE READ snapshot and a transaction id (as a forgotten
BEGIN does) while payments are confirmed at a steady rate for 30 s and the
workers run them through.  Every handled queue row is deleted, and no VACUUM
may remove a dead row while the horizon is held: a queue emptied row by row
grows the whole time.  The ring of queue tables (extension/queue_ring.c) is
rotated and truncated instead, so the size of its tables and indexes levels
off.  The event log (events, event_log, processed_events, log_rounds) grows with
every event and, kept for kc_flow.event_retention, was trimmed with DELETE; its
ring of tables (extension/log_ring.c) is truncated by age instead, so with a
10 s retention its size levels off after about 15 s.  Then, with the queue drained
and the horizon still held, a burst of payments: the workers' claims leave out the
ring's tables other than the current one instead of walking their dead index entries
at every batch.  Prints TAP lines;
bench/soak/run.sh measures the same for 10 minutes."""
import time

from kcflow_test import World, connect, one, ok, rows, run, wait_workers, wait_quiet, finish

RATE = 50
SECONDS = 30


def queue_bytes(conn):
    return one(conn, """SELECT coalesce(sum(pg_relation_size(c.oid)), 0)::bigint
                          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                         WHERE n.nspname = 'kc_flow' AND c.relname LIKE 'event_queue%%' AND c.relkind IN ('r', 'i')""")


RING_SLOTS = 3  # the queue ring's tables (KCF_RING_SLOTS)


def queue_generation(conn, ring):
    """The queue ring's generation, one more at each rotation (0 without the ring)."""
    return one(conn, "SELECT last_value FROM kc_flow.event_queue_generation") if ring else 0


# the log's relations, the 0.1.0/DELETE-trimmed tables included (their names have no slot)
LOG_RELATIONS = "^(events|event_log|processed_events|log_rounds)"
LOG_RETENTION = "10s"


def log_bytes(conn):
    return one(conn, """SELECT coalesce(sum(pg_relation_size(c.oid)), 0)::bigint
                          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                         WHERE n.nspname = 'kc_flow' AND c.relname ~ %s AND c.relkind IN ('r', 'i')""",
               (LOG_RELATIONS,))


def main():
    conn = connect()
    ok(wait_workers(conn), "queue horizon: the workers run")
    # a small rotation threshold, so that 30 s show several generations of the ring
    # (a library without the ring has no such setting: the test then shows the old queue)
    ring = one(conn, "SELECT count(*) > 0 FROM pg_settings WHERE name = 'kc_flow.queue_rotation_size'")
    if ring:
        run(conn, "ALTER SYSTEM SET kc_flow.queue_rotation_size = '16kB'")
    # a short retention, so that 30 s show the log's ring rotate (every 5 s) and empty its oldest tables
    run(conn, "ALTER SYSTEM SET kc_flow.event_retention = %s", (LOG_RETENTION,))
    run(conn, "SELECT pg_reload_conf()")
    n = RATE * SECONDS
    world = World(conn, trainers=n // 10, students=n, capacity=20)
    payments = world.payments()
    held = connect(autocommit=False)
    with held.cursor() as cur:
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cur.execute("SELECT pg_current_xact_id(), count(*) FROM kc_flow.courses")
    ok(one(conn, "SELECT backend_xmin IS NOT NULL FROM pg_stat_activity WHERE pid = %s", (held.get_backend_pid(),)),
       "queue horizon: a session holds the xmin horizon")
    sizes = []
    generation = queue_generation(conn, ring)
    t0 = time.time()
    with conn.cursor() as cur:
        for i, p in enumerate(payments):
            wait = t0 + i / RATE - time.time()
            if wait > 0:
                time.sleep(wait)
            cur.execute("UPDATE kc_flow.payments SET status = 'succeeded' WHERE id = %s", (p,))
            if i % (RATE // 2) == 0:
                sizes.append((time.time() - t0, queue_bytes(conn), log_bytes(conn),
                              queue_generation(conn, ring) - generation))
    quiet = wait_quiet(conn, world.course, n, timeout=120)
    ok(quiet is not None, "queue horizon: every payment ran through while the horizon was held")
    # the ring's size goes up and down as its tables fill and are truncated in turn; what
    # tells a bounded queue from a growing one is its floor: the smallest size seen in the
    # last 10 s against the smallest in the 10 s from when the ring has filled.  It has once
    # it has rotated through its tables (each was current and filled up, and the one current
    # again was truncated), at 9-10 s on a fresh cluster here, where a window from a fixed
    # 5 s saw the ring still filling (104 kB, 136 kB once filled); when depends on load.  A
    # queue that does not rotate (no ring, or rotation held off) is measured from 5 s.  The
    # first window ends 10 s before the last one starts at the latest.
    filled = next((t for t, _, _, g in sizes if g >= RING_SLOTS), None)
    start = min(5 if filled is None else filled, SECONDS - 20)
    early = min(b for t, b, _, _ in sizes if start <= t <= start + 10)
    late = min(b for t, b, _, _ in sizes if t >= SECONDS - 10)
    ok(late <= 1.3 * early,
       "queue horizon: the queue's tables and indexes stop growing (at least %d kB in the 10 s from %.1f s,"
       " %d kB in the last 10 s)" % (early // 1024, start, late // 1024),
       "the ring rotated through its tables %s" % ("never" if filled is None else "at %.1f s" % filled))
    print("# the queue's tables and indexes (s, kB, rotations): %s"
          % [(round(t), b // 1024, g) for t, b, _, g in sizes], flush=True)
    # the log's ring is a saw-tooth too, but its peak is what bounds it: each rotation empties
    # the rows of three half-retentions ago, so from about 15 s on the peak stays at 15 s of
    # events, where a log trimmed with DELETE (dead rows kept by the horizon) keeps growing
    log_early = max(b for t, _, b, _ in sizes if 12 <= t <= 20)
    log_late = max(b for t, _, b, _ in sizes if t >= SECONDS - 10)
    ok(log_late <= 1.25 * log_early,
       "queue horizon: the log's tables and indexes stop growing with a %s retention (peak %d kB between"
       " 12 and 20 s, %d kB in the last 10 s)" % (LOG_RETENTION, log_early // 1024, log_late // 1024))
    print("# the log's tables and indexes (s, kB): %s" % [(round(t), b // 1024) for t, _, b, _ in sizes], flush=True)
    floor = one(conn, "SELECT (kc_flow.health()->'log_ring'->>'floor')::bigint")
    ok(floor is not None and floor > 0, "queue horizon: the log's ring removed positions (its floor rose)",
       "floor %s" % floor)
    left = one(conn, "SELECT count(*) FROM kc_flow.event_queue")
    ok(left == 0, "queue horizon: nothing left in the queue", "%s rows" % left)
    claims_leave_drained_tables(conn)
    held.rollback()
    held.close()
    conn.close()
    finish()


# index entries read in the queue's tables other than the current one, by slot, and their dead rows
DUE_INDEX_STATS = """
    SELECT right(s.relname, 1)::int, s.idx_tup_read, t.n_dead_tup
      FROM pg_stat_user_indexes s JOIN pg_stat_user_tables t ON t.relid = s.relid
     WHERE s.indexrelid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'kc_flow.event_queue_due'::regclass)"""
BURST_RATE = 50
BURST = 150


def claims_leave_drained_tables(conn):
    """Under the held horizon, with the queue drained: the workers' claims leave out the ring's
    tables other than the current one (no row there, and none can come until a rotation), so they
    do not walk those tables' dead index entries for every batch (docs/extension.md, "Storage
    under a held horizon"); only a claim a second per worker looks at every table."""
    if not one(conn, "SELECT count(*) > 0 FROM pg_settings WHERE name = 'kc_flow.queue_rotation_size'"):
        return
    # no rotation meanwhile: the tables other than the current one stay the same
    run(conn, "ALTER SYSTEM SET kc_flow.queue_rotation_size = '1MB'")
    run(conn, "SELECT pg_reload_conf()")
    world = World(conn, trainers=BURST // 10, students=BURST, capacity=20)
    payments = world.payments()
    time.sleep(3)  # worker 0 checks the ring's tables once a second
    generation = one(conn, "SELECT last_value FROM kc_flow.event_queue_generation")
    before = {slot: (read, dead) for slot, read, dead in rows(conn, DUE_INDEX_STATS)
              if slot != generation % 3}
    window_start = time.time()
    t0 = time.time()
    with conn.cursor() as cur:
        for i, p in enumerate(payments):
            wait = t0 + i / BURST_RATE - time.time()
            if wait > 0:
                time.sleep(wait)
            cur.execute("UPDATE kc_flow.payments SET status = 'succeeded' WHERE id = %s", (p,))
    # waits without reading the queue, whose index scans would count
    deadline = time.time() + 60
    while time.time() < deadline and one(conn, """
            SELECT count(*) FROM kc_flow.trainer_allocations WHERE course_id = %s AND status = 'approved'""",
            (world.course,)) < BURST:
        time.sleep(0.1)
    time.sleep(3)  # the workers report their statistics at most once a second
    after = {slot: read for slot, read, _ in rows(conn, DUE_INDEX_STATS)}
    window = time.time() - window_start
    dead = sum(d for _, d in before.values())
    read = sum(after[slot] - r for slot, (r, _) in before.items())
    moved = one(conn, "SELECT last_value FROM kc_flow.event_queue_generation") != generation
    ok(not moved and dead >= 100,
       "queue horizon: the burst ran with the two older tables full of dead rows and no rotation",
       "%d dead rows, generation %s" % (dead, "moved" if moved else "kept"))
    # a claim that walks them reads each of their dead rows' entries: one walk per batch without
    # leaving them out (about one batch per payment at this rate); with, only the claim over every
    # table that each worker makes once a second at most, during the window and the second before
    # and after it that the statistics may lag
    walks = read / max(dead, 1)
    workers = int(one(conn, "SELECT setting FROM pg_settings WHERE name = 'kc_flow.workers'"))
    bound = workers * (window + 2)
    ok(walks <= bound,
       "queue horizon: %d payments' claims walked the older tables' dead index entries at most once a"
       " second per worker" % BURST,
       "%.1f times in %.1f s (%d entries read, %d dead rows), bound %.1f" % (walks, window, read, dead, bound))
    print("# the older tables' dead index entries walked %.1f times in %.1f s (%d entries read, %d dead rows),"
          " bound %.1f" % (walks, window, read, dead, bound), flush=True)
    left = one(conn, "SELECT count(*) FROM kc_flow.event_queue")
    ok(left == 0, "queue horizon: nothing left in the queue after the burst", "%s rows" % left)


def reset_settings():
    """The suites after this one share the cluster: its settings go, whatever happened."""
    conn = connect()
    run(conn, "ALTER SYSTEM RESET kc_flow.queue_rotation_size")
    run(conn, "ALTER SYSTEM RESET kc_flow.event_retention")
    run(conn, "SELECT pg_reload_conf()")
    conn.close()


if __name__ == "__main__":
    try:
        main()
    finally:
        reset_settings()
