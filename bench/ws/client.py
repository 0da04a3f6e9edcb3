"""bench/ws/client.py - holds many WebSocket connections to kc-gateway (one per student) and
measures delivery latency: each event's payload carries "t", the emitter's clock_timestamp()
inside the emitting transaction, so receive time minus t is commit-to-delivery latency
(plus the few microseconds between the emit and the commit, and this client's own delay).

usage: client.py PORT SECRET STUDENTS_FILE N READY_FILE DURATION_S
Prints one JSON line with the results. Frames are parsed minimally (server frames are unmasked).
"""
import asyncio
import base64
import json
import os
import resource
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "test", "lib"))
from kc_client import token  # noqa: E402


lat = []
counts = {"events": 0, "closed": 0, "open": 0, "failed": 0}


async def one(port, sub, secret, ready):
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        w.write(("GET /api/v1/ws?access_token=%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
                 % (token(sub, secret=secret, ttl=7200), key)).encode())
        head = await r.readuntil(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n")[0]:
            counts["failed"] += 1
            return
    except Exception:
        counts["failed"] += 1
        return
    counts["open"] += 1
    try:
        while True:
            b = await r.readexactly(2)
            n = b[1] & 0x7F
            if n == 126:
                n = struct.unpack("!H", await r.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await r.readexactly(8))[0]
            payload = await r.readexactly(n)
            op = b[0] & 0x0F
            if op == 9:		# ping: answer (masked, as a client must)
                m = os.urandom(4)
                w.write(bytes([0x8A, 0x80 | len(payload)]) + m + bytes(c ^ m[i % 4] for i, c in enumerate(payload)))
            elif op == 8:
                break
            elif op == 1 and payload.startswith(b'{"type":"event"'):
                now = time.time()
                t = json.loads(payload)["payload"].get("t")
                if t:
                    lat.append(now - t)
                counts["events"] += 1
    except Exception:
        pass
    counts["closed"] += 1


async def main():
    port, secret, sfile, n, ready_file, duration = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], float(sys.argv[6])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    students = open(sfile).read().split()[:n]
    ready = asyncio.Event()
    t0 = time.time()
    tasks = []
    for i in range(0, len(students), 200):		# connect in waves
        tasks += [asyncio.create_task(one(int(port), s, secret, ready)) for s in students[i:i + 200]]
        await asyncio.sleep(0.05)
    while counts["open"] + counts["failed"] < len(students) and time.time() - t0 < 120:
        await asyncio.sleep(0.2)
    connect_s = time.time() - t0
    open(ready_file, "w").write("%d\n" % counts["open"])
    # wait for the emitter (run.sh) to finish its run, then a little for stragglers
    await asyncio.sleep(duration)
    lat.sort()
    pct = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 2) if lat else None
    print(json.dumps({"connections_open": counts["open"], "connect_failed": counts["failed"],
                      "connect_seconds": round(connect_s, 1), "events_received": counts["events"],
                      "closed_by_server": counts["closed"],
                      "latency_ms": {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": pct(1.0)}}))
    os._exit(0)

asyncio.run(main())
