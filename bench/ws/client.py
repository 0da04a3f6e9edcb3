"""bench/ws/client.py - holds many WebSocket connections to kc-gateway (one per student) on one
epoll set, and measures delivery latency: each event's payload carries "t", the emitter's
clock_timestamp() inside the emitting transaction, so receive time minus t is
commit-to-delivery latency (plus the few microseconds between the emit and the commit, and
this client's own delay). Both clocks are the host's CLOCK_REALTIME.

A socket costs this process its file object and a short list; nothing is buffered unless a
frame arrives in pieces. Connections are opened CONCURRENCY at a time and spread over the
loopback source addresses given (one address has about 28,000 ephemeral ports towards one
server port), bound with IP_BIND_ADDRESS_NO_PORT so that the port is chosen per destination.
Pings are answered (masked pongs), as a browser would.

A process holds at most what its open-files limit allows; run.sh starts as many as the
connections need, each with its slice of the students (FIRST, COUNT).

usage: client.py PORT SECRET STUDENTS_FILE FIRST COUNT READY_FILE STOP_FILE LAT_FILE [SOURCE_ADDR ...]
Writes the number of open connections to READY_FILE once all are open (or failed), keeps
them until STOP_FILE exists, writes every latency (ms, one a line) to LAT_FILE, then
prints one JSON line with the counts.
"""
import base64
import errno
import json
import os
import resource
import select
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "test", "lib"))
from kc_client import token  # noqa: E402

CONCURRENCY = 512                # handshakes in progress at once
IP_BIND_ADDRESS_NO_PORT = 24     # linux/in.h
CONNECTING, HANDSHAKE, OPEN = 0, 1, 2

lat = []
counts = {"events": 0, "closed": 0, "open": 0, "failed": 0, "pings": 0}
first_event = last_event = None


def request(port, sub, secret):
    key = base64.b64encode(os.urandom(16)).decode()
    return ("GET /api/v1/ws?access_token=%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % (token(sub, secret=secret, ttl=7200), port, key)).encode()


def pong(payload):
    m = os.urandom(4)
    return bytes([0x8A, 0x80 | len(payload)]) + m + bytes(c ^ m[i % 4] for i, c in enumerate(payload))


def frames(conn, data):
    """Handles the complete frames in conn's buffer plus data; keeps the rest."""
    global first_event, last_event
    buf = conn[2] + data if conn[2] else data
    off = 0
    while len(buf) - off >= 2:
        b1 = buf[off + 1] & 0x7F
        hl = 2
        if b1 == 126:
            if len(buf) - off < 4:
                break
            n, hl = struct.unpack_from("!H", buf, off + 2)[0], 4
        elif b1 == 127:
            if len(buf) - off < 10:
                break
            n, hl = struct.unpack_from("!Q", buf, off + 2)[0], 10
        else:
            n = b1
        if len(buf) - off < hl + n:
            break
        op = buf[off] & 0x0F
        payload = bytes(buf[off + hl:off + hl + n])
        off += hl + n
        if op == 9:
            counts["pings"] += 1
            conn[0].send(pong(payload))
        elif op == 8:
            return False
        elif op == 1 and payload.startswith(b'{"type":"event"'):
            now = time.time()
            t = json.loads(payload)["payload"].get("t")
            if t:
                lat.append(now - t)
            counts["events"] += 1
            first_event = first_event or now
            last_event = now
    conn[2] = buf[off:] if off < len(buf) else b""
    return True


def main():
    port, secret, sfile = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    first, n, ready_file, stop_file = int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], sys.argv[7]
    lat_file = sys.argv[8]
    sources = sys.argv[9:] or ["127.0.0.1"]
    want = n + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    students = open(sfile).read().split()[first:first + n]
    ep = select.epoll()
    conns = {}                     # fd -> [socket, state, buffered bytes, request]
    nxt = 0
    t0 = time.time()
    ready = False
    next_check = 0
    errors = {}

    def fail(fd, why):
        c = conns.pop(fd)
        ep.unregister(fd)
        c[0].close()
        if c[1] == OPEN:
            counts["open"] -= 1
            counts["closed"] += 1
        else:
            counts["failed"] += 1
            errors[why] = errors.get(why, 0) + 1

    while True:
        now = time.time()
        in_progress = nxt - counts["open"] - counts["failed"] - counts["closed"]
        while nxt < len(students) and in_progress < CONCURRENCY:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.bind((sources[(first + nxt) % len(sources)], 0))
            s.setblocking(False)
            err = s.connect_ex(("127.0.0.1", port))
            if err not in (0, errno.EINPROGRESS):
                s.close()
                counts["failed"] += 1
                errors[os.strerror(err)] = errors.get(os.strerror(err), 0) + 1
            else:
                conns[s.fileno()] = [s, CONNECTING, b"", request(port, students[nxt], secret)]
                ep.register(s.fileno(), select.EPOLLOUT)
                in_progress += 1
            nxt += 1
        if not ready and ((nxt >= len(students) and in_progress == 0) or now - t0 > 600):
            connect_s = now - t0
            open(ready_file, "w").write("%d\n" % counts["open"])
            ready = True
        if ready and now >= next_check:
            if os.path.exists(stop_file):
                break
            next_check = now + 0.5
        for fd, ev in ep.poll(0.05, 4096):
            c = conns.get(fd)
            if c is None:
                continue
            if c[1] == CONNECTING:
                err = c[0].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(fd, os.strerror(err))
                    continue
                c[0].send(c[3])    # a few hundred bytes: fits an empty send buffer
                c[1], c[3] = HANDSHAKE, None
                ep.modify(fd, select.EPOLLIN)
                continue
            try:
                data = c[0].recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as e:
                fail(fd, e.strerror)
                continue
            if not data:
                fail(fd, "closed by the server")
                continue
            if c[1] == HANDSHAKE:
                buf = c[2] + data
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    c[2] = buf
                    continue
                if b" 101 " not in buf[:buf.find(b"\r\n")]:
                    fail(fd, buf[:buf.find(b"\r\n")].decode(errors="replace"))
                    continue
                c[1], c[2] = OPEN, b""
                counts["open"] += 1
                data = buf[end + 4:]
                if not data:
                    continue
            if not frames(c, data):
                fail(fd, "close frame")
    with open(lat_file, "w") as f:
        f.write("".join("%.3f\n" % (x * 1000) for x in lat))
    rss_kib = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])
    print(json.dumps({"connections_open": counts["open"], "connect_failed": counts["failed"],
                      "connect_errors": errors, "connect_seconds": round(connect_s, 1),
                      "events_received": counts["events"], "first_event": first_event, "last_event": last_event,
                      "pings_answered": counts["pings"], "closed_by_server": counts["closed"],
                      "client_rss_mib": round(rss_kib / 1024, 1),
                      "client_cpu_s": round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 1)}))
    sys.stdout.flush()
    os._exit(0)


main()
