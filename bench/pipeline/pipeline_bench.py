"""pipeline_bench: end-to-end purchases/s and confirm -> SESSIONS_GENERATED
latency of the kc_flow pipeline, beside the machine's own limit measured in
the same run (pgbench doing the same writes in one transaction per purchase).

Run by bench/pipeline/run.sh, which starts the throwaway cluster."""
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
            "max": max(lat)}


def run_limit(limit_db):
    """pgbench doing the same writes, one transaction per purchase."""
    conn = connect(dbname=limit_db)
    world = World(conn, trainers=TRAINERS, students=N, capacity=20)
    payments = world.payments()
    # the trainer for student i: distinct for students sharing a weekly slot (i % 84), so no overlaps
    with conn.cursor() as cur:
        for i, p in enumerate(payments):
            cur.execute("INSERT INTO bench_plan VALUES (%s, %s)", (p, world.trainers[(i // 84) % TRAINERS]))
    script = os.path.join(TMP, "limit.sql")
    with open(script, "w") as f:
        f.write("SELECT bench_same_writes();\n")
    per_client = N // CLIENTS
    secs, tps = pgbench(limit_db, script, per_client, CLIENTS)
    made = one(conn, "SELECT count(*) FROM kc_flow.tutoring_sessions WHERE course_id = %s", (world.course,))
    expect = one(conn, "SELECT sum(purchase_tier) FROM kc_flow.payments WHERE course_id = %s AND status = 'succeeded'",
                 (world.course,))
    if made != expect:
        raise SystemExit("limit run wrote %s sessions, expected %s" % (made, expect))
    conn.close()
    return {"purchases": per_client * CLIENTS, "secs": secs, "rate": tps}


def main():
    rates = [int(r) for r in os.environ.get("KC_BENCH_RATES", "100 300").split()]
    conn = connect()
    if not wait_workers(conn):
        raise SystemExit("the kc_flow workers did not start")
    limit = run_limit(os.environ["KC_LIMIT_DB"])
    sat = run_pipeline(conn, "saturation (%d clients)" % CLIENTS)
    fixed = [run_pipeline(conn, "offered load %d/s" % rate, rate=rate) for rate in rates]
    print()
    print("kc_flow pipeline, %d purchases per run (tiers 10/20/30), synchronous_commit=%s, %s workers,"
          " batch_size %s, %d trainers" % (N, one(conn, "SHOW synchronous_commit"), one(conn, "SHOW kc_flow.workers"),
                                           one(conn, "SHOW kc_flow.batch_size"), TRAINERS))
    print("%-34s %12s %10s %10s %10s" % ("run", "purchases/s", "p50 ms", "p99 ms", "max ms"))
    print("%-34s %12.0f %10s %10s %10s" % ("limit: pgbench same writes, 1 txn", limit["rate"], "-", "-", "-"))
    for r in [sat] + fixed:
        print("%-34s %12.0f %10.1f %10.1f %10.1f" % (r["label"], r["rate"], r["p50"], r["p99"], r["max"]))
    print("ratio at saturation: %.0f%% of the limit (latency: payment commit -> SESSIONS_GENERATED notification)"
          % (100.0 * sat["rate"] / limit["rate"]))


if __name__ == "__main__":
    main()
