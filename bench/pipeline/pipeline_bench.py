"""pipeline_bench: end-to-end purchases/s and confirm -> SESSIONS_GENERATED
latency of the kc_flow pipeline, beside the machine's own limits measured in
the same run, each pgbench doing one transaction per purchase with the
pipeline's own spread over trainers and times: the writes the mission
requires (mission_writes.sql), kc_flow's own writes (same_writes.sql), and
kc_flow's stages with their allocation search (run_pending in the payment's
transaction). Ends with one line of JSON holding the figures.

Run by bench/pipeline/run.sh, which starts the throwaway cluster."""
import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.environ["KC_ROOT"], "test", "pipeline"))
from kcflow_test import World, Listener, connect, one, rows, wait_workers  # noqa: E402

N = int(os.environ.get("KC_BENCH_PURCHASES", "2000"))
CLIENTS = int(os.environ.get("KC_BENCH_CLIENTS", "8"))
TRAINERS = max(100, N // 10)
TMP = os.environ.get("KC_BENCH_TMP", "/tmp")


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


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]


def run_pipeline(conn, label, rate=None):
    """Confirms N payments with pgbench (CLIENTS connections, optionally at a
    fixed rate) and waits for every SESSIONS_GENERATED notification."""
    world = World(conn, trainers=TRAINERS, students=N, capacity=20)
    payments = set(world.payments())
    script = os.path.join(TMP, "confirm.sql")
    with open(script, "w") as f:
        f.write("UPDATE kc_flow.payments SET status = 'succeeded' WHERE id = (SELECT id FROM kc_flow.payments"
                " WHERE status = 'pending' AND course_id = ':course' LIMIT 1 FOR UPDATE SKIP LOCKED);\n")
    listener = Listener()
    done = {}
    stop = threading.Event()

    def listen():
        while not stop.is_set() and len(done) < N:
            listener.poll(0.05)
            while listener.events:
                t, e = listener.events.pop(0)
                if e["type"] == "SESSIONS_GENERATED" and e["correlation_id"] in payments:
                    done.setdefault(e["correlation_id"], t)

    th = threading.Thread(target=listen, daemon=True)
    th.start()
    per_client = N // CLIENTS
    t0 = time.time()
    try:
        confirm_secs, _ = pgbench(os.environ["PGDATABASE"], script, per_client, CLIENTS, rate,
                                  {"course": world.course})
        th.join(timeout=120)
    finally:
        stop.set()
    total = per_client * CLIENTS
    if len(done) < total:
        raise SystemExit("%s: only %d of %d purchases finished" % (label, len(done), total))
    end = max(done.values())
    succeeded = dict(rows(conn, "SELECT id::text, extract(epoch FROM succeeded_at) FROM kc_flow.payments"
                                " WHERE course_id = %s AND status = 'succeeded'", (world.course,)))
    lat = [(done[p] - float(succeeded[p])) * 1000 for p in done]
    listener.close()
    return {"label": label, "purchases": total, "secs": end - t0, "rate": total / (end - t0),
            "confirm_secs": confirm_secs, "p50": percentile(lat, 50), "p99": percentile(lat, 99),
            "max": max(lat)}, world


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
    world.payments()
    r = limit_run(limit_db,
                  "BEGIN;\nUPDATE kc_flow.payments SET status = 'succeeded' WHERE id = (SELECT id FROM kc_flow.payments"
                  " WHERE status = 'pending' AND course_id = '%s' LIMIT 1 FOR UPDATE SKIP LOCKED);\n"
                  "SELECT kc_flow.run_pending(8);\nCOMMIT;\n" % world.course, N,
                  "limit: kc_flow's stages, 1 txn")
    made = one(conn, "SELECT count(*) FROM kc_flow.tutoring_sessions WHERE course_id = %s", (world.course,))
    expect = one(conn, "SELECT sum(purchase_tier) FROM kc_flow.payments WHERE course_id = %s AND status = 'succeeded'",
                 (world.course,))
    if made != expect:
        raise SystemExit("one-transaction limit wrote %s sessions, expected %s" % (made, expect))
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
    same = limit_same_writes(os.environ["KC_LIMIT_DB"], plan)
    whole = limit_one_transaction(os.environ["KC_LIMIT_DB"])
    fixed = [run_pipeline(conn, "offered load %d/s" % rate, rate=rate)[0] for rate in rates]
    print()
    print("kc_flow pipeline, %d purchases per run (tiers 10/20/30), synchronous_commit=%s, %s workers,"
          " batch_size %s, %d trainers" % (N, one(conn, "SHOW synchronous_commit"), one(conn, "SHOW kc_flow.workers"),
                                           one(conn, "SHOW kc_flow.batch_size"), TRAINERS))
    print("%-34s %12s %10s %10s %10s" % ("run", "purchases/s", "p50 ms", "p99 ms", "max ms"))
    for lim in (mission, same, whole):
        print("%-34s %12.0f %10s %10s %10s" % (lim["label"], lim["rate"], "-", "-", "-"))
    for r in [sat] + fixed:
        print("%-34s %12.0f %10.1f %10.1f %10.1f" % (r["label"], r["rate"], r["p50"], r["p99"], r["max"]))
    print("the limits get the pipeline's own spread: each student's trainer and session times as the"
          " saturation run chose them (the third limit searches for itself)")
    print("ratio at saturation: %.2f of the mission's writes, %.2f of kc_flow's writes, %.2f of kc_flow's stages in"
          " one transaction (latency: payment commit -> SESSIONS_GENERATED notification)"
          % (sat["rate"] / mission["rate"], sat["rate"] / same["rate"], sat["rate"] / whole["rate"]))
    figures = {"bench": "pipeline", "purchases": N, "saturation_rps": round(sat["rate"], 1),
               "limit_mission_rps": round(mission["rate"], 1), "limit_same_writes_rps": round(same["rate"], 1),
               "limit_one_txn_rps": round(whole["rate"], 1), "ratio": round(sat["rate"] / mission["rate"], 3),
               "ratio_same_writes": round(sat["rate"] / same["rate"], 3),
               "ratio_one_txn": round(sat["rate"] / whole["rate"], 3)}
    for r in fixed:
        key = r["label"].split()[-1].replace("/s", "")
        figures["offered_%s" % key] = {"rps": round(r["rate"], 1), "p50_ms": round(r["p50"], 1),
                                       "p99_ms": round(r["p99"], 1)}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
