"""pipeline_bench: end-to-end purchases/s and confirm -> SESSIONS_GENERATED
latency of the kc_flow pipeline, beside the machine's own limits measured in
the same run, each pgbench doing one transaction per purchase with the
pipeline's own spread over trainers and times: the writes the mission
requires (mission_writes.sql), the same with the mission's allocation search
(each payment finding its trainer), kc_flow's own writes (same_writes.sql), and
kc_flow's stages with their allocation search (run_pending in the payment's
transaction). Then the allocation on its own: allocations/s of
kc_flow.auto_assign, rolled back, over a fixed set of plans and the trainers
the third limit loaded, and the workers' CPU time per purchase (user + system,
from /proc) in each run; at each offered load, where a payment's latency went (waiting for a
worker, then the batch up to its round). Ends with one line of JSON holding the figures.

KC_BENCH_PROFILE=FILE: perf records the kc_flow workers during the
saturation run (call graphs, dwarf) and writes its report, inclusive time
per symbol, to FILE, and the samples to FILE.data; with
KC_BENCH_PROFILE_RATE=R, during the run at an offered R purchases/s instead.

Run by bench/pipeline/run.sh, which starts the throwaway cluster."""
import json
import os
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.environ["KC_ROOT"], "test", "pipeline"))
from kcflow_test import World, Listener, connect, one, rows, run, wait_workers  # noqa: E402

N = int(os.environ.get("KC_BENCH_PURCHASES", "2000"))
CLIENTS = int(os.environ.get("KC_BENCH_CLIENTS", "8"))
TRAINERS = max(100, N // 10)
TMP = os.environ.get("KC_BENCH_TMP", "/tmp")
PROFILE = os.environ.get("KC_BENCH_PROFILE")
PROFILE_RATE = int(os.environ["KC_BENCH_PROFILE_RATE"]) if os.environ.get("KC_BENCH_PROFILE_RATE") else None


def pgbench(db, script, transactions, clients, rate=None, define=None):
    """Runs pgbench; returns (seconds, tps excluding connection setup)."""
    args = ["pgbench", "-n", "-d", db, "-c", str(clients), "-j", str(min(clients, 4)),
            "-t", str(transactions), "-f", script]
    if rate:
        args += ["-R", str(rate)]
    for k, v in (define or {}).items():
        args += ["-D", "%s=%s" % (k, v)]
    t0 = time.time()
    res = subprocess.run(args, capture_output=True, text=True)
    if res.returncode != 0 or "aborted" in res.stdout + res.stderr:
        raise SystemExit("pgbench failed:\n" + res.stdout + res.stderr)
    out = res.stdout
    secs = time.time() - t0
    tps = [float(line.split("=")[1].split()[0]) for line in out.splitlines() if line.startswith("tps")]
    return secs, (tps[-1] if tps else transactions * clients / secs)


def confirm_in_order(conn, course, payments):
    """The statement that confirms the next of `payments`, taken by number as the soak's
    driver takes them.  A search for a pending payment (FOR UPDATE SKIP LOCKED) could lock
    one that another client confirmed after the search's snapshot: a confirmation inserts
    an outcome and leaves the order's row as it was, so the lock does not re-read the row,
    and the second confirmation would be a no-op the run waits for in vain."""
    name = "bench_order_" + course.replace("-", "")[:12]
    run(conn, "CREATE TABLE public.%s (n bigint PRIMARY KEY, payment uuid NOT NULL)" % name)
    run(conn, "INSERT INTO public.%s SELECT o, p FROM unnest(%%s::uuid[]) WITH ORDINALITY AS u(p, o)" % name,
        (list(payments),))
    run(conn, "CREATE SEQUENCE public.%s_next" % name)
    return ("UPDATE kc_flow.payments SET status = 'succeeded'"
            " WHERE id = (SELECT payment FROM public.%s WHERE n = (SELECT nextval('public.%s_next')));\n"
            % (name, name))


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]


def run_pipeline(conn, label, rate=None):
    """Confirms N payments with pgbench (CLIENTS connections, optionally at a
    fixed rate) and waits for every SESSIONS_GENERATED notification.  Its rate is
    the purchases over the time from the first checkout's transaction (its
    payment's succeeded_at) to the last notification."""
    world = World(conn, trainers=TRAINERS, students=N, capacity=20)
    ordered = world.payments()
    payments = set(ordered)
    script = os.path.join(TMP, "confirm.sql")
    with open(script, "w") as f:
        f.write(confirm_in_order(conn, world.course, ordered))
    listener = Listener()
    done = {}
    read = set()  # the log positions the listener read
    stop = threading.Event()

    def listen():
        while not stop.is_set() and len(done) < N:
            listener.poll(0.05)
            while listener.events:
                t, e = listener.events.pop(0)
                read.add(e["id"])
                if e["type"] == "SESSIONS_GENERATED" and e["correlation_id"] in payments:
                    done.setdefault(e["correlation_id"], t)

    th = threading.Thread(target=listen, daemon=True)
    th.start()
    per_client = N // CLIENTS
    perf = start_profile(conn) if PROFILE and rate == PROFILE_RATE else None
    workers = [r[0] for r in rows(conn, "SELECT pid FROM kc_flow.worker_status() WHERE pid <> 0")]
    cpu0 = cpu_seconds(workers)
    wal0 = wal_flushes(conn)
    try:
        confirm_secs, _ = pgbench(os.environ["PGDATABASE"], script, per_client, CLIENTS, rate,
                                  {"course": world.course})
        th.join(timeout=120)
    finally:
        stop.set()
        if perf:
            stop_profile(perf)
    cpu = cpu_seconds(workers) - cpu0
    wal = wal_flushes(conn) - wal0
    total = per_client * CLIENTS
    if len(done) < total:
        th.join(timeout=1)
        raise SystemExit("%s: only %d of %d purchases finished\n%s"
                         % (label, len(done), total, explain_missing(conn, world.course, payments - set(done),
                                                                     listener, read)))
    end = max(done.values())
    succeeded = dict(rows(conn, "SELECT id::text, extract(epoch FROM succeeded_at) FROM kc_flow.payments"
                                " WHERE course_id = %s AND status = 'succeeded'", (world.course,)))
    lat = dict((p, (done[p] - float(succeeded[p])) * 1000) for p in done)
    # the run's clock starts at its first checkout, as pgbench's tps of a limit starts once its
    # clients are connected: neither counts the start of pgbench and its connections
    start = min(float(succeeded[p]) for p in done)
    listener.close()
    wait, batch = gaps(conn, world.course)
    # the rest of each payment's latency: the batch's commit (its WAL flush) and the notification
    after = [lat[p] - wait[p] - batch[p] for p in wait]
    lat = list(lat.values())
    wait, batch = list(wait.values()), list(batch.values())
    return {"label": label, "purchases": total, "secs": end - start, "rate": total / (end - start),
            "confirm_secs": confirm_secs, "p50": percentile(lat, 50), "p99": percentile(lat, 99),
            "max": max(lat), "cpu_ms": cpu * 1000.0 / total, "wal_flushes": wal / float(total),
            "wait_p50": percentile(wait, 50), "wait_p99": percentile(wait, 99),
            "batch_p50": percentile(batch, 50), "batch_p99": percentile(batch, 99),
            "after_p50": percentile(after, 50), "after_p99": percentile(after, 99)}, world


def explain_missing(conn, course, missing, listener, read):
    """Why the payments in missing had no SESSIONS_GENERATED notification: the course's
    payments by status (a confirm that updated no row leaves one pending), the log's head,
    backlog and the ranges the listener was told of, and per payment its flow_status
    (status, events with what handled them and their queue rows, dead letters) and each
    event's log position with whether a notified range covered it and the listener read it."""
    out = ["payments of the course by status: %s" % dict(rows(
        conn, "SELECT status, count(*) FROM kc_flow.payments WHERE course_id = %s GROUP BY status", (course,)))]
    out.append("log head %s, backlog (committed, no position) %s" % (
        one(conn, "SELECT kc_flow.log_head()"), one(conn, "SELECT row_to_json(b)::text FROM kc_flow.log_backlog() b")))
    out.append("notified ranges: %d, the last %s; still in conn.notifies: %s"
               % (len(listener.ranges), listener.ranges[-5:], [n.payload for n in listener.conn.notifies]))
    read = read | set(e["id"] for _, e in listener.events)
    for p in sorted(missing)[:20]:
        out.append("payment %s: %s" % (p, json.dumps(one(conn, "SELECT kc_flow.flow_status(%s)", (p,)))))
        for pos, eid, typ, txid in rows(conn, """
                SELECT l.pos, e.id, e.event_type, e.txid::text FROM kc_flow.events e
                  LEFT JOIN kc_flow.event_log l ON l.event_id = e.id
                 WHERE e.correlation_id = %s ORDER BY e.id""", (p,)):
            out.append("  event %s %s (txid %s): position %s, in a notified range %s, read by the listener %s"
                       % (eid, typ, txid, pos, pos is not None and any(a <= pos <= b for a, b in listener.ranges),
                          pos in read))
    if len(missing) > 20:
        out.append("... and %d more" % (len(missing) - 20))
    return "\n".join(out)


def gaps(conn, course):
    """Where each payment of course spent its latency, in ms: waiting for a worker (the
    payment's succeeded_at to the start of the worker transaction that wrote its
    SESSIONS_GENERATED, the event's created_at) and that batch up to its round (the event's
    event_log.logged_at, just before the batch's commit), each a dict by payment id."""
    got = rows(conn, """
        SELECT p.id::text, extract(epoch FROM e.created_at - p.succeeded_at)::float8 * 1000,
               extract(epoch FROM l.logged_at - e.created_at)::float8 * 1000
          FROM kc_flow.payments p
          JOIN kc_flow.events e ON e.correlation_id = p.id AND e.event_type = 'SESSIONS_GENERATED'
          JOIN kc_flow.event_log l ON l.event_id = e.id
         WHERE p.course_id = %s""", (course,))
    return dict((r[0], r[1]) for r in got), dict((r[0], r[2]) for r in got)


def cpu_seconds(pids):
    """CPU time (user + system) the processes pids have used so far, in seconds: the
    workers' cost per purchase, which other load on the machine moves much less than
    the throughput."""
    ticks = 0
    for pid in pids:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / float(os.sysconf("SC_CLK_TCK"))


def wal_flushes(conn):
    """WAL flushes (pg_stat_wal.wal_sync) of the whole cluster so far: the payments' commits,
    the workers' and anything else that wrote, so per purchase at least 1 (its payment)."""
    return one(conn, "SELECT wal_sync FROM pg_stat_wal")


def start_profile(conn):
    """perf record on the workers' backends (the saturation run's CPU is theirs)."""
    pids = ",".join(str(r[0]) for r in rows(conn, "SELECT pid FROM kc_flow.worker_status() WHERE pid <> 0"))
    data = os.path.join(TMP, "perf.data")
    return subprocess.Popen(["perf", "record", "-q", "-F", "250", "--call-graph", "dwarf,16384",
                             "-o", data, "-p", pids], stdout=subprocess.DEVNULL), data


# the parts of a worker's time the profile reports (inclusive: a sample counts for every
# part on its call chain): the stages (one event at a time, or a batch's set), the allocation
# stage's steps, emitting, the log's round, committing
PROFILE_PARTS = ["kcf_dispatch_batch", "kcf_stage_purchase", "kcf_stage_purchase_set", "kcf_stage_allocation",
                 "kcf_plan_of_purchase", "best_trainer", "book_trainer", "kcf_stage_sessions",
                 "kcf_stage_sessions_set", "kcf_plan_of_allocation", "kcf_emit", "kcf_emit_set",
                 "kcf_emit_set_after_deferred", "kcf_emit_flush", "kcf_event_uuid", "kcf_sequence",
                 "CommitTransaction", "claim_jobs", "kcf_next_due_ms", "XLogFlush", "rotate_ring",
                 "catch_up_statistics", "housekeeping", "pgstat_report_stat"]


def stop_profile(perf):
    """Stops perf and writes to PROFILE the share of the workers' samples in each of
    PROFILE_PARTS, then perf's own report (inclusive share per symbol); the samples
    themselves go to PROFILE.data (perf report -i PROFILE.data)."""
    proc, data = perf
    proc.send_signal(2)
    proc.wait()
    shutil.copy(data, PROFILE + ".data")
    script = subprocess.run(["perf", "script", "-i", data, "-F", "ip,sym"], capture_output=True, text=True).stdout
    samples, hits, chain = 0, dict.fromkeys(PROFILE_PARTS, 0), set()
    for line in script.splitlines() + [""]:
        if line.strip():
            chain.add((line.split() + ["?"])[1].split("+")[0])
        elif chain:
            samples += 1
            for part in PROFILE_PARTS:
                hits[part] += part in chain
            chain = set()
    with open(PROFILE, "w") as f:
        f.write("workers' samples: %d\n" % samples)
        for part in PROFILE_PARTS:
            f.write("%-24s %5.1f%%\n" % (part, 100.0 * hits[part] / max(samples, 1)))
        f.flush()
        subprocess.run(["perf", "report", "-i", data, "--stdio", "--children", "-g", "none",
                        "--percent-limit", "0.5", "--sort", "symbol"], stdout=f, stderr=subprocess.DEVNULL)


def pipeline_plan(conn, world):
    """What the pipeline chose for each student of world, in student order: the index of
    the trainer in world.trainers, and the session start times."""
    index = {t: j for j, t in enumerate(world.trainers)}
    got = dict((str(r[0]), (index[str(r[1])], r[2])) for r in rows(conn, """
        SELECT p.student_id, a.trainer_id, array_agg(s.starts_at ORDER BY s.seq)
          FROM kc_flow.payments p
          JOIN kc_flow.student_course_purchases c ON c.payment_id = p.id
          JOIN kc_flow.trainer_allocations a ON a.purchase_id = c.id
          JOIN kc_flow.tutoring_sessions s ON s.allocation_id = a.id
         WHERE p.course_id = %s GROUP BY p.student_id, a.trainer_id""", (world.course,)))
    return [got[s] for s in world.students if s in got]


def limit_run(db, script_text, count, label):
    """pgbench running script_text count times over CLIENTS connections."""
    script = os.path.join(TMP, "limit.sql")
    with open(script, "w") as f:
        f.write(script_text)
    per_client = count // CLIENTS
    secs, tps = pgbench(db, script, per_client, CLIENTS)
    return {"label": label, "purchases": per_client * CLIENTS, "secs": secs, "rate": tps}


def limit_mission(limit_db, plan):
    """The writes the mission requires (mission_writes.sql), spread as the pipeline spread them."""
    conn = connect(dbname=limit_db)
    course = "00000000-0000-4000-8000-00000000c0de"
    with conn.cursor() as cur:
        for i, (trainer, starts) in enumerate(plan):
            cur.execute("INSERT INTO mission.payments (id, student_id, course_id, tier) VALUES (%s, gen_random_uuid(), %s, %s)",
                        (i, course, len(starts)))
            cur.execute("INSERT INTO mission.plan VALUES (%s, %s, %s, 45)",
                        (i, "00000000-0000-4000-8000-%012d" % trainer, starts))
    r = limit_run(limit_db, "SELECT mission.confirm_one();\n", len(plan),
                  "limit: the mission's writes, 1 txn")
    made = one(conn, "SELECT count(*) FROM mission.sessions")
    expect = one(conn, "SELECT sum(tier) FROM mission.payments WHERE status = 'succeeded'")
    if made != expect:
        raise SystemExit("mission limit wrote %s sessions, expected %s" % (made, expect))
    conn.close()
    return r


def limit_mission_search(limit_db, plan):
    """The mission's writes with the mission's allocation search in the same transaction
    (mission.confirm_one_searching): the same plans, trainers like the pipeline's (TRAINERS,
    capacity 20, Europe/Berlin, 07:00-22:00 every day), each payment finding its own."""
    conn = connect(dbname=limit_db)
    course = "00000000-0000-4000-8000-00000000c0df"
    base = len(plan)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO mission.trainers (id, timezone, capacity)"
                    " SELECT ('00000000-0000-4000-9000-' || lpad(g::text, 12, '0'))::uuid, 'Europe/Berlin', 20"
                    "   FROM generate_series(0, %s - 1) g", (TRAINERS,))
        cur.execute("INSERT INTO mission.availability SELECT id, d, '07:00', '22:00'"
                    "  FROM mission.trainers, generate_series(1, 7) d")
        for i, (_, starts) in enumerate(plan):
            cur.execute("INSERT INTO mission.payments (id, student_id, course_id, tier) VALUES (%s, gen_random_uuid(), %s, %s)",
                        (base + i, course, len(starts)))
            cur.execute("INSERT INTO mission.request VALUES (%s, %s, 45)", (base + i, starts))
    r = limit_run(limit_db, "SELECT mission.confirm_one_searching();\n", len(plan),
                  "limit: the mission's writes + search")
    made = one(conn, "SELECT count(*) FROM mission.sessions s JOIN mission.allocations a ON a.id = s.allocation_id"
                     " JOIN mission.purchases pu ON pu.id = a.purchase_id WHERE pu.course_id = %s", (course,))
    expect = one(conn, "SELECT sum(tier) FROM mission.payments WHERE status = 'succeeded' AND course_id = %s", (course,))
    if made != expect:
        raise SystemExit("mission search limit wrote %s sessions, expected %s" % (made, expect))
    conn.close()
    return r


def limit_same_writes(limit_db, plan):
    """kc_flow's own writes for a purchase (same_writes.sql), with the pipeline's trainer choices."""
    conn = connect(dbname=limit_db)
    world = World(conn, trainers=TRAINERS, students=N, capacity=20)
    payments = world.payments()
    with conn.cursor() as cur:
        for p, (trainer, _) in zip(payments, plan):
            cur.execute("INSERT INTO bench_plan VALUES (%s, %s)", (p, world.trainers[trainer]))
    r = limit_run(limit_db, "SELECT bench_same_writes();\n", len(plan),
                  "limit: kc_flow's writes, 1 txn")
    made = one(conn, "SELECT count(*) FROM kc_flow.tutoring_sessions WHERE course_id = %s", (world.course,))
    expect = one(conn, "SELECT sum(purchase_tier) FROM kc_flow.payments WHERE course_id = %s AND status = 'succeeded'",
                 (world.course,))
    if made != expect:
        raise SystemExit("same-writes limit wrote %s sessions, expected %s" % (made, expect))
    conn.close()
    return r


def limit_one_transaction(limit_db):
    """The pipeline's own code, allocation search included, in the payment's transaction
    (kc_flow.run_pending in the same transaction; no workers run in this database)."""
    conn = connect(dbname=limit_db)
    world = World(conn, trainers=TRAINERS, students=N, capacity=20)
    confirm = confirm_in_order(conn, world.course, world.payments())
    r = limit_run(limit_db, "BEGIN;\n" + confirm + "SELECT kc_flow.run_pending(8);\nCOMMIT;\n", N,
                  "limit: kc_flow's stages, 1 txn")
    made = one(conn, "SELECT count(*) FROM kc_flow.tutoring_sessions WHERE course_id = %s", (world.course,))
    expect = one(conn, "SELECT sum(purchase_tier) FROM kc_flow.payments WHERE course_id = %s AND status = 'succeeded'",
                 (world.course,))
    if made != expect:
        raise SystemExit("one-transaction limit wrote %s sessions, expected %s" % (made, expect))
    conn.close()
    return r, world.course


def search_run(limit_db, course):
    """The allocation stage on its own: pgbench calling kc_flow.auto_assign on one of 200
    fixed purchases (the world's slots, not yet allocated) and rolling back, so that every
    call searches the same trainers with the same load and bookings: search, lock, book."""
    conn = connect(dbname=limit_db)
    run(conn, """
        CREATE TABLE search_probe (i int PRIMARY KEY, purchase_id uuid NOT NULL);
        WITH s AS (INSERT INTO kc_flow.students (display_name, timezone)
                   SELECT 'probe ' || g, 'Europe/Berlin' FROM generate_series(0, 199) g RETURNING id),
        n AS (SELECT id, row_number() OVER () - 1 AS i FROM s),
        p AS (INSERT INTO kc_flow.payments (student_id, course_id, amount_cents, purchase_tier, time_slot)
              SELECT n.id, %(course)s, 100, (ARRAY[10, 20, 30])[1 + n.i %% 3],
                     jsonb_build_object('weekdays', jsonb_build_array(1 + n.i %% 7),
                                        'start', lpad((7 + (n.i / 7) %% 14)::text, 2, '0') || ':00',
                                        'timezone', 'Europe/Berlin', 'starts_on', '2031-01-06')
                FROM n RETURNING id, student_id, course_id, purchase_tier),
        pu AS (INSERT INTO kc_flow.student_course_purchases (payment_id, student_id, course_id, purchase_tier)
               SELECT id, student_id, course_id, purchase_tier FROM p RETURNING id, student_id)
        INSERT INTO search_probe SELECT n.i, pu.id FROM pu JOIN n ON n.id = pu.student_id""", {"course": course})
    found = one(conn, "SELECT count(kc_flow.auto_assign(purchase_id)) FROM search_probe")
    if found != 200:
        raise SystemExit("allocation run: %s of 200 probes found a trainer" % found)
    run(conn, "DELETE FROM kc_flow.trainer_allocations a USING search_probe p WHERE a.purchase_id = p.purchase_id;"
             " DELETE FROM kc_flow.event_queue")
    script = os.path.join(TMP, "search.sql")
    with open(script, "w") as f:
        f.write("\\set i random(0, 199)\nBEGIN;\n"
                "SELECT kc_flow.auto_assign(purchase_id) FROM search_probe WHERE i = :i;\nROLLBACK;\n")
    r = {}
    for clients in (1, CLIENTS):
        # each rolled-back booking leaves dead index entries that the next probes would read
        run(conn, "VACUUM kc_flow.trainer_bookings, kc_flow.trainer_allocations, kc_flow.events")
        secs, tps = pgbench(limit_db, script, 2000 // clients, clients)
        r[clients] = tps
    conn.close()
    return r


def main():
    rates = [int(r) for r in os.environ.get("KC_BENCH_RATES", "100 300").split()]
    conn = connect()
    if not wait_workers(conn):
        raise SystemExit("the kc_flow workers did not start")
    sat, world = run_pipeline(conn, "saturation (%d clients)" % CLIENTS)
    plan = pipeline_plan(conn, world)
    mission = limit_mission(os.environ["KC_LIMIT_DB"], plan)
    searching = limit_mission_search(os.environ["KC_LIMIT_DB"], plan)
    same = limit_same_writes(os.environ["KC_LIMIT_DB"], plan)
    whole, whole_course = limit_one_transaction(os.environ["KC_LIMIT_DB"])
    search = search_run(os.environ["KC_LIMIT_DB"], whole_course)
    fixed = [run_pipeline(conn, "offered load %d/s" % rate, rate=rate)[0] for rate in rates]
    print()
    print("kc_flow pipeline, %d purchases per run (tiers 10/20/30), synchronous_commit=%s, %s workers,"
          " batch_size %s, %d trainers" % (N, one(conn, "SHOW synchronous_commit"), one(conn, "SHOW kc_flow.workers"),
                                           one(conn, "SHOW kc_flow.batch_size"), TRAINERS))
    print("%-34s %12s %10s %10s %10s" % ("run", "purchases/s", "p50 ms", "p99 ms", "max ms"))
    for lim in (mission, searching, same, whole):
        print("%-34s %12.0f %10s %10s %10s" % (lim["label"], lim["rate"], "-", "-", "-"))
    for r in [sat] + fixed:
        print("%-34s %12.0f %10.1f %10.1f %10.1f" % (r["label"], r["rate"], r["p50"], r["p99"], r["max"]))
    for r in fixed:
        print("%s: waiting for a worker p50 %.1f ms, p99 %.1f ms; the batch up to its round p50 %.1f ms, p99 %.1f ms;"
              " its commit and the notification p50 %.1f ms, p99 %.1f ms"
              % (r["label"], r["wait_p50"], r["wait_p99"], r["batch_p50"], r["batch_p99"], r["after_p50"],
                 r["after_p99"]))
    print("the workers' CPU per purchase: %.2f ms at saturation%s" % (sat["cpu_ms"], "".join(
        ", %.2f ms at %s" % (r["cpu_ms"], r["label"].split()[-1]) for r in fixed)))
    print("WAL flushes per purchase (pg_stat_wal.wal_sync, the whole cluster): %.2f at saturation%s"
          % (sat["wal_flushes"], "".join(", %.2f at %s" % (r["wal_flushes"], r["label"].split()[-1]) for r in fixed)))
    print("allocation alone (auto_assign, rolled back, fixed plans): %.0f/s with 1 client, %.0f/s with %d"
          % (search[1], search[CLIENTS], CLIENTS))
    print("the limits get the pipeline's own spread: each student's trainer and session times as the"
          " saturation run chose them (the third limit searches for itself)")
    print("ratio at saturation: %.2f of the mission's writes, %.2f of the mission's writes + search, %.2f of kc_flow's"
          " writes, %.2f of kc_flow's stages in one transaction (latency: payment commit -> SESSIONS_GENERATED"
          " notification)" % (sat["rate"] / mission["rate"], sat["rate"] / searching["rate"],
                              sat["rate"] / same["rate"], sat["rate"] / whole["rate"]))
    figures = {"bench": "pipeline", "purchases": N, "saturation_rps": round(sat["rate"], 1),
               "limit_mission_rps": round(mission["rate"], 1), "limit_same_writes_rps": round(same["rate"], 1),
               "limit_one_txn_rps": round(whole["rate"], 1), "ratio": round(sat["rate"] / mission["rate"], 3),
               "limit_mission_search_rps": round(searching["rate"], 1),
               "ratio_mission_search": round(sat["rate"] / searching["rate"], 3),
               "ratio_same_writes": round(sat["rate"] / same["rate"], 3),
               "ratio_one_txn": round(sat["rate"] / whole["rate"], 3),
               "allocations_1_client_rps": round(search[1], 1),
               "allocations_%d_clients_rps" % CLIENTS: round(search[CLIENTS], 1),
               "worker_cpu_ms_per_purchase": round(sat["cpu_ms"], 2)}
    for r in fixed:
        key = r["label"].split()[-1].replace("/s", "")
        figures["offered_%s" % key] = {"rps": round(r["rate"], 1), "p50_ms": round(r["p50"], 1),
                                       "p99_ms": round(r["p99"], 1), "cpu_ms": round(r["cpu_ms"], 2),
                                       "wait_p50_ms": round(r["wait_p50"], 1), "wait_p99_ms": round(r["wait_p99"], 1),
                                       "batch_p50_ms": round(r["batch_p50"], 1), "batch_p99_ms": round(r["batch_p99"], 1),
                                       "after_p50_ms": round(r["after_p50"], 1), "after_p99_ms": round(r["after_p99"], 1),
                                       "wal_flushes_per_purchase": round(r["wal_flushes"], 2)}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
