// test/e2e/latency_test.js - commit -> browser as a measurement: PURCHASES purchases (default
// 200) at an offered RATE per second (default 20), spread over PAGES students (default 10),
// each student's home open in its own page of headless Chromium. For every purchase: from the
// payment's commit (test/e2e/purchases.py stamps time.time() right after the confirming COMMIT
// returns) to the first moment its page's DOM shows its sessions (the overview's count of
// upcoming sessions has grown by its 10, and its course is listed). A MutationObserver,
// installed before the page's own script, stamps every change of those two with
// performance.timeOrigin + performance.now(): a monotonic clock anchored to the wall clock at
// navigation, the CLOCK_REALTIME that Python's time.time() reads on the same host; the offset
// between the two is measured at the start and reported.
// Prints TAP lines and ends with one JSON line. P99_LIMIT_MS (when set) is asserted.
// Run by test/suites/60_browser.sh and bench/browser/run.sh, which start the gateway, load
// test/e2e/latency_fixture.sql and pass: GW_URL, DB_URL, STUDENTS (space-separated ids, one
// per page), TOKENS (theirs, same order), PYTHON.
"use strict";
const { chromium } = require("playwright-core");
const { spawn } = require("child_process");
const fs = require("fs");
const path = require("path");

const PURCHASES = Number(process.env.PURCHASES || 200);
const RATE = Number(process.env.RATE || 20);
const SESSIONS = 10;                        // purchase_tier of every purchase
const students = process.env.STUDENTS.trim().split(/\s+/);
const tokens = process.env.TOKENS.trim().split(/\s+/);
let failed = 0;

function report(ok, name, detail) {
  console.log((ok ? "ok" : "not ok") + " - browser latency: " + name);
  if (!ok) { failed++; if (detail !== undefined) console.log("#   " + String(detail).split("\n").slice(0, 10).join("\n#   ")); }
}
function pct(sorted, q) {
  return sorted.length ? Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] * 100) / 100 : null;
}

// What the page shows, stamped at every change (runs in the page before its own script).
function observeRenders() {
  window.__kcRenders = [];
  window.__kcPushes = [];       // when the page logged each SESSIONS_GENERATED it was pushed
  let last = "";
  new MutationObserver(() => {
    const log = document.getElementById("log");
    const pushed = log ? (log.textContent.match(/SESSIONS_GENERATED #/g) || []).length : 0;
    while (window.__kcPushes.length < pushed) window.__kcPushes.push(performance.timeOrigin + performance.now());
    const stat = Array.from(document.querySelectorAll("#overview .stat"))
      .find((d) => d.querySelector("span") && d.querySelector("span").textContent === "upcoming sessions");
    const upcoming = stat ? Number(stat.querySelector("b").textContent) : -1;
    const courses = Array.from(document.querySelectorAll("#courses tr td:first-child")).map((td) => td.textContent);
    const key = upcoming + "|" + courses.join("|");
    if (key !== last) {
      last = key;
      window.__kcRenders.push({ t: performance.timeOrigin + performance.now(), upcoming, courses });
    }
  }).observe(document, { subtree: true, childList: true, characterData: true });
}

// Purchase i: student i % pages buys course i / pages, at a slot of its own (weekday, hour).
function plan(pages) {
  const out = [];
  for (let i = 0; i < PURCHASES; i++) {
    const c = Math.floor(i / pages);
    out.push({ page: i % pages, course: "eeeeeeee-0000-4000-8000-0000000001" + String(c).padStart(2, "0"),
               title: "Latency Course " + String(c).padStart(2, "0"), nth: c,
               slot: { weekdays: [1 + (i % 7)], start: String(Math.floor(i / 7) % 24).padStart(2, "0") + ":00",
                       timezone: "UTC" } });
  }
  return out;
}

(async () => {
  const userDir = fs.mkdtempSync("/tmp/kc-chromium-");
  let browser;
  try {
    browser = await chromium.launchPersistentContext(userDir, {
      executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
      headless: true,
      viewport: { width: 1000, height: 700 },
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             // every page is a user looking at their home: none may be throttled as a background tab
             "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
             "--disable-backgrounding-occluded-windows"],
    });
  } catch (e) {
    report(false, "headless Chromium starts", e.message);
    process.exit(0);
  }
  const errors = [];
  try {
    await browser.addInitScript(observeRenders);
    const pages = [];
    for (let j = 0; j < students.length; j++) {
      const page = j === 0 && browser.pages()[0] ? browser.pages()[0] : await browser.newPage();
      page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
      await page.goto(process.env.GW_URL + "/#token=" + tokens[j]);
      pages.push(page);
    }
    for (const page of pages) {
      await page.waitForSelector('#conn[data-state="live"]', { timeout: 15000 });
      await page.waitForSelector("#courses-box:not([hidden])", { timeout: 15000 });
    }
    // the page's clock against this process's Date.now() (CLOCK_REALTIME, as Python's time.time()):
    // the reading with the shortest round trip bounds the offset by half of it
    let offset = 0, rtt = Infinity;
    for (const page of pages) {
      for (let k = 0; k < 5; k++) {
        const before = Date.now();
        const t = await page.evaluate(() => performance.timeOrigin + performance.now());
        const after = Date.now();
        if (after - before < rtt) { rtt = after - before; offset = t - (before + after) / 2; }
      }
    }
    report(Math.abs(offset) <= rtt / 2 + 1, students.length + " pages live; page clock - driver clock " +
           offset.toFixed(2) + " ms, within the reading's +-" + (rtt / 2 + 1).toFixed(1) + " ms", { offset, rtt });

    const p = plan(pages.length);
    const driver = spawn(process.env.PYTHON || "python3",
                         [path.join(__dirname, "purchases.py"), process.env.DB_URL, String(RATE)],
                         { stdio: ["pipe", "pipe", "inherit"] });
    driver.stdin.end(JSON.stringify(p.map((x, i) => [students[x.page], x.course, x.slot])));
    const commits = new Array(PURCHASES).fill(null);
    const generated = new Array(PURCHASES).fill(null);
    const sent = new Array(PURCHASES).fill(null);
    let confirmMs = [];
    let seconds = null;
    let buf = "";
    await new Promise((resolve) => {
      driver.stdout.on("data", (d) => {
        buf += d;
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const m = JSON.parse(buf.slice(0, nl));
          buf = buf.slice(nl + 1);
          if (m.done) seconds = m.seconds;
          else if (m.t_generated !== undefined) generated[m.i] = m.t_generated;
          else { commits[m.i] = m.t_commit; sent[m.i] = m.t_sent; confirmMs.push(m.confirm_ms); }
        }
      });
      driver.on("close", resolve);
    });
    const committed = commits.filter((t) => t !== null).length;
    report(committed === PURCHASES, committed + " of " + PURCHASES + " purchases committed in " +
           (seconds || 0).toFixed(1) + " s (offered " + RATE + "/s)");

    // wait until every page shows all its purchases, or 10 s
    const want = pages.map((_, j) => p.filter((x) => x.page === j).length * SESSIONS);
    const deadline = Date.now() + 10000;
    let renders, pushes;
    for (;;) {
      renders = await Promise.all(pages.map((pg) => pg.evaluate(() => window.__kcRenders)));
      pushes = await Promise.all(pages.map((pg) => pg.evaluate(() => window.__kcPushes)));
      const done = renders.every((r, j) => r.length && r[r.length - 1].upcoming >= want[j]);
      if (done || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    const lat = [], pipe = [], push = [], fetchRender = [];
    const missing = [], early = [];
    p.forEach((x, i) => {
      const r = renders[x.page].find((s) => s.upcoming >= SESSIONS * (x.nth + 1) && s.courses.includes(x.title));
      if (!r || commits[i] === null) { missing.push(i); return; }
      lat.push(r.t - commits[i]);
      if (r.t < sent[i]) early.push(i);
      const arrived = pushes[x.page][x.nth];
      if (generated[i] !== null && arrived !== undefined) {
        pipe.push(generated[i] - commits[i]);
        push.push(arrived - generated[i]);
        fetchRender.push(r.t - arrived);
      }
    });
    [lat, pipe, push, fetchRender].forEach((a) => a.sort((u, v) => u - v));
    confirmMs.sort((a, b) => a - b);
    report(missing.length === 0, lat.length + " of " + PURCHASES + " purchases rendered with their " + SESSIONS +
           " sessions, none missing", "missing: " + missing.slice(0, 20).join(", "));
    // the driver stamps the commit after the statement returns, so a busy host can make the
    // stamp late (the earliest figure below); before the statement was sent nothing may show
    report(early.length === 0, "no purchase rendered before its confirming statement was sent " +
           "(earliest render " + (lat.length ? lat[0].toFixed(2) : "-") + " ms from the commit stamp)", early);
    const p50 = pct(lat, 0.5), p99 = pct(lat, 0.99);
    const limit = process.env.P99_LIMIT_MS ? Number(process.env.P99_LIMIT_MS) : null;
    const line = "commit -> rendered: p50 " + p50 + " ms, p90 " + pct(lat, 0.9) + " ms, p99 " + p99 + " ms, max " +
      pct(lat, 1) + " ms over " + lat.length + " purchases (confirm statement p50 " + pct(confirmMs, 0.5) + " ms)";
    if (limit !== null) report(p99 !== null && p99 < limit, line + "; limit p99 < " + limit + " ms", p99);
    else console.log("# " + line + " (measured; issue 10's target is p99 < 100 ms)");
    console.log("#   commit -> SESSIONS_GENERATED in the log (pipeline): p50 " + pct(pipe, 0.5) + " ms, p99 " +
                pct(pipe, 0.99) + " ms; in the log -> pushed to the page (listener, hub, socket): p50 " + pct(push, 0.5) +
                " ms, p99 " + pct(push, 0.99) + " ms; pushed -> rendered (home fetch, render): p50 " +
                pct(fetchRender, 0.5) + " ms, p99 " + pct(fetchRender, 0.99) + " ms");
    report(errors.length === 0, "no errors in the browser consoles", errors.join("\n"));
    console.log(JSON.stringify({ bench: "browser", purchases: PURCHASES, offered_per_s: RATE,
                                 achieved_per_s: seconds ? Math.round(committed / seconds * 10) / 10 : null,
                                 pages: pages.length, rendered: lat.length, missing: missing.length,
                                 p50_ms: p50, p90_ms: pct(lat, 0.9), p99_ms: p99, max_ms: pct(lat, 1),
                                 confirm_p50_ms: pct(confirmMs, 0.5),
                                 pipeline_p50_ms: pct(pipe, 0.5), pipeline_p99_ms: pct(pipe, 0.99),
                                 push_p50_ms: pct(push, 0.5), push_p99_ms: pct(push, 0.99),
                                 fetch_render_p50_ms: pct(fetchRender, 0.5), fetch_render_p99_ms: pct(fetchRender, 0.99), clock_offset_ms: Math.round(offset * 100) / 100 }));
  } catch (e) {
    report(false, "measurement ran to the end", e.stack);
  } finally {
    await browser.close();
    fs.rmSync(userDir, { recursive: true, force: true });
  }
})();
