"""soak: kc_flow's storage under a held xmin horizon (issue 9).

One phase per call (bench/soak/run.sh gives each phase a fresh cluster):
  soak.py phase held|free SECONDS RATE OUT.json
    drives RATE purchases/s with pgbench -R for SECONDS (the purchase driver of
    bench/pipeline: pending payments of a World confirmed one per transaction),
    "held": beside a session that holds a REPEATABLE READ snapshot and a
    transaction id the whole time; collects commit -> SESSIONS_GENERATED per
    payment from the notifications (bench/pipeline's Listener), the size of
    every kc_flow table and index and its dead tuples after the first minute
    and at the end, every ring's total size every 5 s, and the claim time of
    the workers' queue query.
  soak.py report FREE.json HELD.json
    prints both phases side by side, the ratios against the targets (held
    within 10% of free; no table or index above 1.2x its size after minute 1)
    and ends with one line of JSON.

A relation that grows with the data (purchases, sessions, their indexes) is
10x its minute-1 size at the end of either phase, so "1.2x its size after
minute 1" cannot judge it.  What the held horizon adds to such a relation is
what the held phase has more of than the free phase at the end: every relation
outside the rings is judged by held end / free end (at most 1.2x), once it
holds more than SMALL bytes in either phase (a few pages more or less of a
tiny relation say nothing).

The rings (the queue's, extension/queue_ring.c; the log's, log_ring.c) are
emptied by TRUNCATE a table at a time, so their size is a saw-tooth: one
sample after minute 1 and one at the end could fall on a peak and a trough.
A ring is judged by the total of its relations sampled every 5 s: the peak
over the last minute against the peak over minute 1-2 (at most 1.2x).  The
log's ring rotates by age (every half of kc_flow.event_retention); run.sh
sets a 30 s retention, so that it reaches its steady size within the run.
The cache versions' ring (version_ring.c) is a saw-tooth too, but it keeps
every student's version, so it grows with the data like the tables outside
the rings: it is judged by held / free of its peak over the last minute.

Each phase also reports the kc_flow workers' CPU (user + system, from /proc)
per purchase over the run.  KC_SOAK_PROFILE=PREFIX: perf records the two
workers for 30 s in the middle of each phase (call graphs, dwarf) and writes
the workers' share of each part of the pipeline and perf's report, inclusive
and self time per symbol, to PREFIX.held and PREFIX.free (bench/pipeline's
KC_BENCH_PROFILE does the same for its saturation run)."""
import json
import os
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.environ.get("KC_ROOT", "."), "bench", "pipeline"))
sys.path.insert(0, os.path.join(os.environ.get("KC_ROOT", "."), "test", "pipeline"))
from kcflow_test import World, Listener, connect, one, rows, run, wait_workers  # noqa: E402
from pipeline_bench import PROFILE_PARTS, cpu_seconds, percentile  # noqa: E402

TMP = os.environ.get("KC_BENCH_TMP", "/tmp")
PROFILE = os.environ.get("KC_SOAK_PROFILE")
PROFILE_SECONDS = 30


def record_profile(pids, mode):
    """perf record on the workers for PROFILE_SECONDS; returns (process, data file)."""
    data = os.path.join(TMP, "perf-%s.data" % mode)
    return subprocess.Popen(["perf", "record", "-q", "-F", "250", "--call-graph", "dwarf,16384",
                             "-o", data, "-p", ",".join(str(p) for p in pids), "--", "sleep",
                             str(PROFILE_SECONDS)], stdout=subprocess.DEVNULL), data


# functions whose samples write_profile also splits by the kc_flow code they ran under
MARKERS = ["GetMultiXactIdMembers", "HeapTupleSatisfiesVisibility", "heap_hot_search_buffer", "standard_planner"]


def chains(script):
    """The samples of `perf script -F ip,sym,dso`: for each, [(symbol, dso)], innermost first."""
    chain = []
    for line in script.splitlines() + [""]:
        if not line.strip():
            if chain:
                yield chain
            chain = []
            continue
        sym, _, dso = (line.split(None, 1) + [""])[1].rpartition(" (")
        chain.append((sym.split("+")[0], dso))


def kc_frames(chain):
    """The sample's innermost two frames of kc_flow's own code (SPI helpers left out): the
    statement or step it was in, and its caller."""
    own = [s for s, dso in chain if "kc_flow.so" in dso and s not in ("kcf_exec", "kcf_in_subtransaction")]
    return " < ".join(own[:2]) or "(outside kc_flow)"


def write_profile(data, path):
    """The share of the workers' samples in each of PROFILE_PARTS (inclusive); the samples by
    the kc_flow code they ran in, all and those in each of MARKERS; then perf's report of
    inclusive and of self time per symbol, to path."""
    script = subprocess.run(["perf", "script", "-i", data, "-F", "ip,sym,dso"], capture_output=True,
                            text=True).stdout
    samples, hits = 0, dict.fromkeys(PROFILE_PARTS, 0)
    where = {m: {} for m in [None] + MARKERS}
    for chain in chains(script):
        samples += 1
        names = set(s for s, _ in chain)
        for part in PROFILE_PARTS:
            hits[part] += part in names
        frames = kc_frames(chain)
        for m in [None] + MARKERS:
            if m is None or m in names:
                where[m][frames] = where[m].get(frames, 0) + 1
    with open(path, "w") as f:
        f.write("workers' samples: %d\n" % samples)
        for part in PROFILE_PARTS:
            f.write("%-24s %5.1f%%\n" % (part, 100.0 * hits[part] / max(samples, 1)))
        for m in [None] + MARKERS:
            f.write("\n== %s, by the kc_flow code it ran in: %.1f%% of the samples ==\n"
                    % (m or "all samples", 100.0 * sum(where[m].values()) / max(samples, 1)))
            for frames, n in sorted(where[m].items(), key=lambda kv: -kv[1])[:15]:
                f.write("%6.2f%%  %s\n" % (100.0 * n / max(samples, 1), frames))
        for children in ("--children", "--no-children"):
            f.write("\n== perf report %s ==\n" % children)
            f.flush()
            subprocess.run(["perf", "report", "-i", data, "--stdio", children, "-g", "none",
                            "--percent-limit", "0.3", "--sort", "symbol"], stdout=f, stderr=subprocess.DEVNULL)


def sizes(conn):
    """Every kc_flow relation with storage: {name: [bytes, dead tuples or None, kind]}."""
    return {r[0]: [r[1], r[2], r[3]] for r in rows(conn, """
        SELECT c.relname, pg_relation_size(c.oid), s.n_dead_tup,
               CASE c.relkind WHEN 'i' THEN 'index' ELSE 'table' END
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
         WHERE n.nspname = 'kc_flow' AND c.relkind IN ('r', 'i', 'm')""")}


# the rings' relations by name: partitions, their indexes, and the 0.1.0-shaped tables
RINGS = {"queue": "^event_queue", "log": "^(events|event_log|processed_events|log_rounds)"}
# rings that grow with the data (each student's version stays): judged by held / free
DATA_RINGS = {"versions": "^student_versions"}


def ring_of(name):
    """The ring a relation belongs to, or None."""
    for ring, pattern in list(RINGS.items()) + list(DATA_RINGS.items()):
        if re.match(pattern, name):
            return ring
    return None


def ring_bytes(conn):
    """{ring: total bytes of its tables and indexes} now."""
    return {ring: one(conn, """SELECT coalesce(sum(pg_relation_size(c.oid)), 0)::bigint
                                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                                WHERE n.nspname = 'kc_flow' AND c.relname ~ %s AND c.relkind IN ('r', 'i')""",
                      (pattern,))
            for ring, pattern in list(RINGS.items()) + list(DATA_RINGS.items())}


def ring_peaks(samples, seconds, ring):
    """The ring's peak total over minute 1-2 (the whole run when shorter) and over the last minute."""
    early = [s["rings"][ring] for s in samples if 60 <= s["t"] <= 120] or [s["rings"][ring] for s in samples]
    late = [s["rings"][ring] for s in samples if s["t"] >= seconds - 60]
    return max(early), max(late)


def ring_growth(samples, seconds, ring):
    """The peak over the last minute against the peak over minute 1-2."""
    early, late = ring_peaks(samples, seconds, ring)
    return late / early if early else float("inf")


SMALL = 256 * 1024


def horizon_growth(free, held):
    """{relation: held end / free end} for every relation outside the rings above SMALL,
    and {"<ring> ring": held / free of its peak over the last minute} for DATA_RINGS."""
    out = {}
    for name, (b, _, _) in held["end"].items():
        a = free["end"].get(name, [0])[0]
        if ring_of(name) is None and max(a, b) > SMALL:
            out[name] = b / a if a else float("inf")
    for ring in DATA_RINGS:
        if ring in free["samples"][-1]["rings"] and ring in held["samples"][-1]["rings"]:
            a = ring_peaks(free["samples"], free["seconds"], ring)[1]
            b = ring_peaks(held["samples"], held["seconds"], ring)[1]
            if max(a, b) > SMALL:
                out[ring + " ring"] = b / a if a else float("inf")
    return out


def claim_ms(conn):
    """Time of the workers' claim query (without its locks), as the queue is now."""
    t0 = time.time()
    one(conn, "SELECT count(*) FROM (SELECT q.event_id FROM kc_flow.event_queue q"
              " WHERE q.run_after <= clock_timestamp() ORDER BY q.run_after, q.event_id LIMIT 32) x")
    return (time.time() - t0) * 1000


def phase(mode, seconds, rate, out):
    conn = connect()
    if not wait_workers(conn):
        raise SystemExit("the kc_flow workers did not start")
    n = int(seconds * rate * 1.1) + 100
    # worlds the size of bench/pipeline's (2,000 students, 200 trainers, a course of their
    # own), so that a purchase costs what it costs there however long the run: one world of
    # 90,000 students would make every allocation rank 9,000 trainers
    worlds = [World(conn, trainers=200, students=2000, capacity=20) for _ in range(-(-n // 2000))]
    # the payments in one statement per world (creating 90,000 one by one would take longer
    # than the run), and the order the driver confirms them in, worlds interleaved: the
    # driver takes the next one by number rather than searching for a pending payment, a
    # search that would walk every payment confirmed before
    with conn.cursor() as cur:
        for world in worlds:
            cur.execute("""SELECT kc_flow.create_payment(s, %s, (ARRAY[10, 20, 30])[1 + (o - 1) %% 3],
                                  jsonb_build_object('weekdays', jsonb_build_array(1 + (o - 1) %% 7),
                                                     'start', lpad((7 + ((o - 1) / 7) %% 14)::text, 2, '0') || ':00',
                                                     'timezone', %s, 'starts_on', '2031-01-06'), 1000)
                             FROM unnest(%s::uuid[]) WITH ORDINALITY AS u(s, o)""",
                        (world.course, world.zone, world.students))
        cur.execute("CREATE TABLE public.soak_order (n int PRIMARY KEY, payment uuid NOT NULL)")
        cur.execute("INSERT INTO public.soak_order SELECT row_number() OVER (ORDER BY random()), id"
                    "  FROM kc_flow.payments WHERE status = 'pending'")
        cur.execute("CREATE SEQUENCE public.soak_next")
    run(conn, "VACUUM ANALYZE")
    held = None
    if mode == "held":
        held = connect(autocommit=False)
        with held.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur.execute("SELECT pg_current_xact_id(), count(*) FROM kc_flow.courses")
        xmin = one(conn, "SELECT backend_xmin FROM pg_stat_activity WHERE pid = %s", (held.get_backend_pid(),))
        if xmin is None:
            raise SystemExit("the held session holds no snapshot")
    script = os.path.join(TMP, "soak_confirm.sql")
    with open(script, "w") as f:
        f.write("UPDATE kc_flow.payments SET status = 'succeeded'"
                " WHERE id = (SELECT payment FROM public.soak_order WHERE n = (SELECT nextval('public.soak_next')));\n")
    listener = Listener()
    done = {}
    stop = threading.Event()

    def listen():
        while not stop.is_set():
            listener.poll(0.05)
            while listener.events:
                t, e = listener.events.pop(0)
                if e["type"] == "SESSIONS_GENERATED":
                    done.setdefault(e["correlation_id"], t)

    th = threading.Thread(target=listen, daemon=True)
    th.start()
    workers = [r[0] for r in rows(conn, "SELECT pid FROM kc_flow.worker_status() WHERE pid <> 0")]
    perf = None
    cpu0 = cpu_seconds(workers)
    t0 = time.time()
    # pgbench's output goes to a file, read at the end
    driver_log = open(os.path.join(TMP, "soak_pgbench.log"), "w+")
    driver = subprocess.Popen(["pgbench", "-n", "-c", "4", "-j", "2", "-T", str(seconds), "-R", str(rate),
                               "-f", script, os.environ["PGDATABASE"]],
                              stdout=driver_log, stderr=subprocess.STDOUT, text=True)
    samples = []
    minute1 = None
    while driver.poll() is None:
        time.sleep(5)
        at = time.time() - t0
        samples.append({"t": round(at), "claim_ms": round(claim_ms(conn), 2), "done": len(done),
                        "queue": one(conn, "SELECT count(*) FROM kc_flow.event_queue"),
                        "rings": ring_bytes(conn)})
        if minute1 is None and at >= min(60, seconds / 2):
            minute1 = sizes(conn)
        if PROFILE and perf is None and at >= (seconds - PROFILE_SECONDS) / 2:
            perf = record_profile(workers, mode)
    driver_log.seek(0)
    if driver.returncode != 0:
        raise SystemExit("pgbench failed:\n" + driver_log.read()[-4000:])
    driver_log.close()
    t_end = time.time()
    cpu = cpu_seconds(workers) - cpu0
    confirmed = one(conn, "SELECT count(*) FROM kc_flow.payments WHERE status = 'succeeded'")
    completed_in_run = len(done)
    # let the pipeline finish what was confirmed (at most a minute), then measure
    deadline = time.time() + 60
    while len(done) < confirmed and time.time() < deadline:
        time.sleep(0.2)
    stop.set()
    th.join(timeout=5)
    run(conn, "SELECT pg_stat_force_next_flush()")
    time.sleep(1.5)
    end = sizes(conn)
    rotations = {}
    for ring, seq in (("queue", "kc_flow.event_queue_generation"), ("log", "kc_flow.log_generation"),
                      ("versions", "kc_flow.version_generation")):
        if one(conn, "SELECT to_regclass(%s) IS NOT NULL", (seq,)):
            rotations[ring] = one(conn, "SELECT last_value FROM " + seq)
    if held is not None:
        held.rollback()
        held.close()
    succeeded = dict(rows(conn, "SELECT id::text, extract(epoch FROM succeeded_at) FROM kc_flow.payments"
                                " WHERE status = 'succeeded'"))
    lat = [(done[p] - float(succeeded[p])) * 1000 for p in done if p in succeeded]
    listener.close()
    if perf:
        perf[0].wait()
        write_profile(perf[1], "%s.%s" % (PROFILE, mode))
    result = {"mode": mode, "seconds": seconds, "offered_rps": rate, "confirmed": confirmed,
              "confirmed_rps": round(confirmed / (t_end - t0), 1),
              "completed_in_run_rps": round(completed_in_run / (t_end - t0), 1),
              "completed": len(done),
              "worker_cpu_ms": round(cpu * 1000 / completed_in_run, 3) if completed_in_run else None,
              "p50_ms": round(percentile(lat, 50), 1) if lat else None,
              "p99_ms": round(percentile(lat, 99), 1) if lat else None,
              "minute1": minute1, "end": end, "samples": samples, "rotations": rotations}
    with open(out, "w") as f:
        json.dump(result, f)
    conn.close()


def report(free_path, held_path):
    with open(free_path) as f:
        free = json.load(f)
    with open(held_path) as f:
        held = json.load(f)
    print()
    print("kc_flow soak: %d s per phase at %d purchases/s offered, each phase on a fresh cluster"
          % (free["seconds"], free["offered_rps"]))
    print("%-22s %12s %12s" % ("", "free", "held"))
    for key, label in (("confirmed_rps", "confirmed/s"), ("completed_in_run_rps", "sessions done/s"),
                       ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
                       ("worker_cpu_ms", "workers' CPU/purchase ms")):
        print("%-22s %12s %12s" % (label, free[key], held[key]))
    for r in (free, held):
        claims = [s["claim_ms"] for s in r["samples"]]
        print("%s: claim query ms first/max/last %.2f / %.2f / %.2f, queue rows at the end of the run %s"
              % (r["mode"], claims[0], max(claims), claims[-1], r["samples"][-1]["queue"]))
    print()
    print("%-48s %10s %10s %6s %10s %10s %6s %9s" % ("relation (size kB after minute 1 -> end)", "free 1m",
                                                     "free end", "x", "held 1m", "held end", "x", "held dead"))
    # the rings are judged by the peaks of their totals (see the top of this file)
    growth = {key: {ring: ring_growth(r["samples"], r["seconds"], ring) for ring in RINGS}
              for key, r in (("free", free), ("held", held))}
    worst = {key: max(g.values()) for key, g in growth.items()}
    for name in sorted(held["end"]):
        row = []
        for r in (free, held):
            a = (r["minute1"] or {}).get(name, [0])[0]
            b = r["end"].get(name, [0])[0]
            x = b / a if a else (1.0 if b == 0 else float("inf"))
            row.append((a, b, x))
        dead = held["end"][name][1]
        print("%-48s %10d %10d %6.2f %10d %10d %6.2f %9s" % (
            ("* " if ring_of(name) else "  ") + name, row[0][0] // 1024, row[0][1] // 1024, row[0][2],
            row[1][0] // 1024, row[1][1] // 1024, row[1][2], "-" if dead is None else dead))
    rps_ratio = held["completed_in_run_rps"] / free["completed_in_run_rps"] if free["completed_in_run_rps"] else 0
    p99_ratio = held["p99_ms"] / free["p99_ms"] if free["p99_ms"] and held["p99_ms"] else None
    print("* a ring's relation (the queue's or the log's): judged by its ring's total, sampled every 5 s,"
          " the peak over the last minute against the peak over minute 1-2; the others grow with the data"
          " and are judged by held end / free end (the versions' ring: by held / free of its peak over"
          " the last minute)")
    by_horizon = horizon_growth(free, held)
    worst_rel = max(by_horizon, key=by_horizon.get) if by_horizon else None
    over = sorted((n for n, x in by_horizon.items() if x > 1.2), key=lambda n: -by_horizon[n])
    print("relations above %d kB, held end / free end: worst %s %.2f (target <= 1.2)%s"
          % (SMALL // 1024, worst_rel, by_horizon.get(worst_rel, 0),
             "; above the target: " + ", ".join("%s %.2f" % (n, by_horizon[n]) for n in over) if over else ""))
    for r in (free, held):
        peaks = ", ".join("%s %d -> %d kB" % ((ring,) + tuple(b // 1024 for b in ring_peaks(r["samples"], r["seconds"], ring)))
                          for ring in list(RINGS) + [d for d in DATA_RINGS if d in r["samples"][-1]["rings"]])
        print("%s: ring peaks minute 1-2 -> last minute: %s; generations at the end: %s"
              % (r["mode"], peaks, r.get("rotations") or "-"))
    print("held / free: sessions done/s %.3f (target >= 0.9), p99 %s (target <= 1.1);"
          " ring peaks last minute / minute 1-2: free %s, held %s (target <= 1.2)"
          % (rps_ratio, "%.2f" % p99_ratio if p99_ratio else "-",
             ", ".join("%s %.2f" % kv for kv in growth["free"].items()),
             ", ".join("%s %.2f" % kv for kv in growth["held"].items())))
    figures = {"bench": "soak", "seconds": free["seconds"], "offered_rps": free["offered_rps"],
               "free": {k: free[k] for k in ("confirmed_rps", "completed_in_run_rps", "p50_ms", "p99_ms", "worker_cpu_ms")},
               "held": {k: held[k] for k in ("confirmed_rps", "completed_in_run_rps", "p50_ms", "p99_ms", "worker_cpu_ms")},
               "rps_ratio": round(rps_ratio, 3), "p99_ratio": round(p99_ratio, 3) if p99_ratio else None,
               "ring_growth_free": {k: round(v, 2) for k, v in growth["free"].items()},
               "ring_growth_held": {k: round(v, 2) for k, v in growth["held"].items()},
               "held_over_free_worst": [worst_rel, round(by_horizon.get(worst_rel, 0), 2)],
               "data_rings_held_over_free": {d: round(by_horizon[d + " ring"], 2)
                                             for d in DATA_RINGS if d + " ring" in by_horizon},
               "held_over_free_above_1_2": {n: round(by_horizon[n], 2) for n in over},
               "targets_met": rps_ratio >= 0.9 and (p99_ratio or 99) <= 1.1 and worst["held"] <= 1.2 and not over,
               "load": open("/proc/loadavg").read().split()[:3]}
    print(json.dumps(figures))


if __name__ == "__main__":
    if sys.argv[1] == "phase":
        phase(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    elif sys.argv[1] == "report":
        report(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(__doc__)
