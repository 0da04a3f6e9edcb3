"""system_bench: the whole system, as a student sees it.  For each payment,
the time from its commit to a home JSON that shows its sessions, fetched
through kc-gateway right after the WebSocket push of SESSIONS_GENERATED;
at fixed offered loads.  Beside it, the same payments' time to the
SESSIONS_GENERATED notification straight from Postgres (the pipeline alone).

Run by bench/system/run.sh, which starts Postgres, Redis and the gateway."""
import asyncio
import faulthandler
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

import websockets

sys.path.insert(0, os.path.join(os.environ["KC_ROOT"], "test", "pipeline"))
sys.path.insert(0, os.path.join(os.environ["KC_ROOT"], "bench", "pipeline"))
sys.path.insert(0, os.path.join(os.environ["KC_ROOT"], "test", "lib"))
from kcflow_test import World, Listener, connect, rows, wait_workers  # noqa: E402
from kc_client import token  # noqa: E402
from pipeline_bench import confirm_in_order, limit_mission, limit_same_writes, pipeline_plan  # noqa: E402

N = int(os.environ.get("KC_BENCH_PURCHASES", "1000"))
RATES = os.environ.get("KC_BENCH_RATES", "50 200 max").split()     # purchases/s, or max: saturation
GW = "127.0.0.1:" + os.environ["GW_PORT"]
SECRET = os.environ["KC_JWT_SECRET"]
TMP = os.environ["KC_BENCH_TMP"]


TOKEN = token("bench", "admin", secret=SECRET)
faulthandler.register(__import__("signal").SIGUSR1)     # kill -USR1 shows where it waits


def home_shows(student, payment_sessions):
    """GET the student's home; True when its upcoming sessions include the new course's."""
    req = urllib.request.Request("http://%s/api/v1/students/%s/home" % (GW, student),
                                 headers={"Authorization": "Bearer " + TOKEN})
    with urllib.request.urlopen(req, timeout=10) as r:
        home = json.loads(r.read())
        cache = r.headers.get("X-Cache")
    return home["overview"]["upcoming_sessions"] >= payment_sessions, cache


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]


async def watch(world, tiers, results, stale, reconnects):
    """Operator feed: on each SESSIONS_GENERATED of ours, fetch that student's home.  A
    feed that falls behind is closed by the gateway (1008); like any client, it then
    reconnects with after= the last log position it saw, and misses nothing."""
    loop = asyncio.get_running_loop()
    students = set(world.students)
    last = world.after
    while len(results) < len(students):
        url = "ws://%s/api/v1/ws?after=%d&access_token=%s" % (GW, last, TOKEN)
        try:
            async with websockets.connect(url, max_size=None, ping_interval=None) as ws:
                while len(results) < len(students):
                    msg = json.loads(await ws.recv())
                    if msg.get("type") != "event":
                        continue
                    last = max(last, msg["id"])
                    if msg.get("event_type") != "SESSIONS_GENERATED":
                        continue
                    student = world.student_of.get(msg.get("correlation_id"))
                    if student not in students or student in results:
                        continue

                    async def fetch(student=student, payment=msg["correlation_id"]):
                        ok, cache = await loop.run_in_executor(None, home_shows, student, tiers[payment])
                        if not ok:
                            stale.append((student, cache))
                        results[student] = (time.time(), payment)
                    asyncio.ensure_future(fetch())
        except websockets.ConnectionClosed:
            reconnects.append(last)


def run(conn, rate):
    world = World(conn, trainers=max(100, N // 10), students=N, capacity=20)
    payments = world.payments()
    world.student_of = {p: s for p, s in zip(payments, world.students)}
    tiers = {p: (10, 20, 30)[i % 3] for i, p in enumerate(payments)}
    world.after = rows(conn, "SELECT kc_flow.settled_event_id()")[0][0]     # a log position
    listener = Listener()
    notified = {}
    stop = threading.Event()

    def listen():
        while not stop.is_set():
            listener.poll(0.05)
            while listener.events:
                t, e = listener.events.pop(0)
                if e["type"] == "SESSIONS_GENERATED":
                    notified.setdefault(e["correlation_id"], t)

    th = threading.Thread(target=listen, daemon=True)
    th.start()
    results, stale, reconnects = {}, [], []
    loop = asyncio.new_event_loop()
    wt = threading.Thread(target=lambda: loop.run_until_complete(
        watch(world, tiers, results, stale, reconnects)), daemon=True)
    wt.start()
    time.sleep(0.5)             # the socket is up and replaying
    script = os.path.join(TMP, "confirm.sql")
    with open(script, "w") as f:
        f.write(confirm_in_order(conn, world.course, payments))
    t0 = time.time()
    args = ["pgbench", "-n", "-c", "4", "-j", "2", "-t", str(N // 4), "-D", "course=" + world.course, "-f", script]
    if rate != "max":
        args += ["-R", rate]
    subprocess.run(args, check=True, capture_output=True)
    deadline = time.time() + 120
    while len(results) < N and time.time() < deadline:
        time.sleep(0.05)
    if len(results) < N:
        print("%s: only %d of %d homes fetched" % (rate, len(results), N), file=sys.stderr)
    time.sleep(0.2)
    stop.set()
    th.join()
    succeeded = dict(rows(conn, "SELECT id::text, extract(epoch FROM succeeded_at) FROM kc_flow.payments"
                                " WHERE course_id = %s AND status = 'succeeded'", (world.course,)))
    home = [(t - float(succeeded[p])) * 1000 for t, p in results.values()]
    pipe = [(t - float(succeeded[p])) * 1000 for p, t in notified.items() if p in succeeded]
    listener.close()
    end = max(t for t, _ in results.values())
    return {"rate": rate, "n": len(home), "stale": len(stale), "per_s": len(home) / (end - t0),
            "reconnects": len(reconnects), "world": world,
            "home": (percentile(home, 50), percentile(home, 99)),
            "pipe": (percentile(pipe, 50), percentile(pipe, 99))}


def main():
    conn = connect()
    if not wait_workers(conn):
        raise SystemExit("workers did not start")
    out = [run(conn, r) for r in RATES]
    # the limits get the last run's own spread over trainers and session times
    plan = pipeline_plan(conn, out[-1]["world"])
    limit = limit_mission(os.environ["KC_LIMIT_DB"], plan)
    same = limit_same_writes(os.environ["KC_LIMIT_DB"], plan)
    print()
    print("kc_flow whole system: payment commit -> home JSON (via kc-gateway, after the WebSocket push)"
          " showing the new sessions; %d purchases per run" % N)
    print("%-16s %9s %12s %12s %12s %14s %14s" % ("offered load", "payments", "purchases/s", "home p50 ms",
                                                   "home p99 ms", "NOTIFY p50 ms", "NOTIFY p99 ms"))
    for lim, name in ((limit, "limit: mission"), (same, "limit: kc_flow")):
        print("%-16s %9d %12.0f %12s %12s %14s %14s" % (name, lim["purchases"], lim["rate"], "-", "-", "-", "-"))
    for r in out:
        print("%-16s %9d %12.0f %12.1f %12.1f %14.1f %14.1f"
              % (r["rate"] if r["rate"] == "max" else r["rate"] + "/s", r["n"], r["per_s"],
                 r["home"][0], r["home"][1], r["pipe"][0], r["pipe"][1]))
    sat = [r for r in out if r["rate"] == "max"]
    if sat:
        print("saturation: %.2f of the mission's writes, %.2f of kc_flow's writes (pgbench, one transaction per"
              " purchase, with the last run's trainers and session times)"
              % (sat[0]["per_s"] / limit["rate"], sat[0]["per_s"] / same["rate"]))
    stale = sum(r["stale"] for r in out)
    print("home fetches right after the push that did not yet show the sessions: %d" % stale)
    print("operator feed reconnections (closed 1008 for falling behind, resumed with after=): %s"
          % ", ".join("%s: %d" % (r["rate"], r["reconnects"]) for r in out))
    figures = {"bench": "system", "purchases": N, "limit_rps": round(limit["rate"], 1),
               "limit_same_writes_rps": round(same["rate"], 1), "stale": stale}
    for r in out:
        figures["offered_%s" % r["rate"]] = {"rps": round(r["per_s"], 1), "home_p50_ms": round(r["home"][0], 1),
                                             "home_p99_ms": round(r["home"][1], 1),
                                             "notify_p50_ms": round(r["pipe"][0], 1),
                                             "notify_p99_ms": round(r["pipe"][1], 1)}
    if sat:
        figures["saturation_rps"] = round(sat[0]["per_s"], 1)
        figures["ratio"] = round(sat[0]["per_s"] / limit["rate"], 3)
        figures["ratio_same_writes"] = round(sat[0]["per_s"] / same["rate"], 3)
    print(json.dumps(figures))


main()
