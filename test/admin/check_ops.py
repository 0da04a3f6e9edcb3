"""check_ops.py: the dashboard and the alert rules of docs/ops/ against a running gateway
(GW_PORT). Both files parse; every alert rule says why it fires and what to do; and every
kc_* metric they name is in the gateway's /metrics, one line per metric, so that a missing
one is named (the gauges of kc_flow.health() come with another branch: until it is merged,
exactly those are reported missing). With promtool installed, `promtool check rules` too."""
import http.client
import json
import os
import re
import shutil
import subprocess
import sys

import yaml

ROOT = os.environ.get("KC_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
DASHBOARD = os.path.join(ROOT, "docs", "ops", "kc_flow.dashboard.json")
RULES = os.path.join(ROOT, "docs", "ops", "kc_flow.rules.yml")
failed = 0


def check(ok, name, detail=""):
    global failed
    print(("ok - " if ok else "not ok - ") + "ops: " + name, flush=True)
    if not ok:
        failed += 1
        if detail:
            print("#   " + str(detail)[:400])


def names_in(expr):
    """The kc_* metric names of a PromQL expression (label values and strings left out)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    return set(re.findall(r"\bkc_[a-zA-Z0-9_:]*", expr))


def exprs(node):
    """Every PromQL expression of a dashboard: the "expr" of its targets, the queries of its variables."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("expr", "definition") and isinstance(v, str):
                yield v
            elif k == "query" and isinstance(v, dict) and isinstance(v.get("query"), str):
                yield v["query"]
            else:
                yield from exprs(v)
    elif isinstance(node, list):
        for v in node:
            yield from exprs(v)


try:
    dashboard = json.load(open(DASHBOARD))
    panels = [p for p in dashboard["panels"] if p.get("type") != "row"]
    ids = [p["id"] for p in dashboard["panels"]]
    check(len(panels) >= 10 and len(set(ids)) == len(ids) and all(p.get("targets") for p in panels),
          "the Grafana dashboard parses: %d panels, unique ids, each with a query" % len(panels))
    check(all(p.get("description") for p in panels), "every panel says what it shows")
except (OSError, ValueError, KeyError) as e:
    check(False, "the Grafana dashboard parses", e)
    dashboard = {}
try:
    rules = yaml.safe_load(open(RULES))
    alerts = [r for g in rules["groups"] for r in g["rules"]]
    check(len(alerts) >= 10 and all("alert" in r and "expr" in r for r in alerts),
          "the alert rules parse: %d rules" % len(alerts))
    bare = [r["alert"] for r in alerts
            if not all(r.get("annotations", {}).get(k) for k in ("summary", "description", "action"))]
    check(not bare, "every rule carries summary, description (why it fires) and action (what to do)", bare)
    check(all(r.get("labels", {}).get("severity") in ("warning", "critical") for r in alerts),
          "every rule has a severity")
except (OSError, ValueError, KeyError, yaml.YAMLError) as e:
    check(False, "the alert rules parse", e)
    alerts = []

named = {}
for e in exprs(dashboard):
    for n in names_in(e):
        named.setdefault(n, set()).add("dashboard")
for r in alerts:
    for n in names_in(r.get("expr", "")):
        named.setdefault(n, set()).add("rules")

c = http.client.HTTPConnection("127.0.0.1", int(os.environ["GW_PORT"]), timeout=10)
c.request("GET", "/metrics")
text = c.getresponse().read().decode()
c.close()
exposed = set()
for line in text.splitlines():
    if line.startswith("# TYPE "):
        exposed.add(line.split()[2])
    elif line and not line.startswith("#"):
        exposed.add(re.split(r"[{ ]", line, 1)[0])
check(len(named) >= 15, "the dashboard and the rules name %d kc_* metrics" % len(named))
for n in sorted(named):
    where = " and ".join(sorted(named[n]))
    check(n in exposed, "%s (in the %s) is in /metrics" % (n, where))

if shutil.which("promtool"):
    p = subprocess.run(["promtool", "check", "rules", RULES], capture_output=True, text=True)
    check(p.returncode == 0, "promtool check rules", (p.stdout + p.stderr).strip())
else:
    print("# promtool is not installed (Debian package prometheus): the rules' PromQL was not checked by it")
sys.exit(0)
