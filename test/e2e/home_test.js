// test/e2e/home_test.js - the demo home screen in headless Chromium (playwright-core, no
// downloaded browser): the page goes live over the WebSocket, a payment confirmed in SQL
// makes the sessions appear without a reload within 1 s, a second payment of the same course
// shows as a notice ("payment received, course already active"), a page whose last event
// fell below the log's floor reloads its home on the refetch answer and goes on, and a
// screenshot is kept.
// Run by test/suites/60_browser.sh, which starts the gateway and passes:
//   GW_URL, TOKEN, STUDENT (course and trainers: test/ws/fixture.sql), PSQL (a shell command reading SQL on stdin), SHOT (png path)
"use strict";
const { chromium } = require("playwright-core");
const { execFileSync } = require("child_process");
const fs = require("fs");

let failed = 0;
function report(ok, name, detail) {
  console.log((ok ? "ok" : "not ok") + " - browser: " + name);
  if (!ok) { failed++; if (detail !== undefined) console.log("#   " + String(detail).split("\n").slice(0, 10).join("\n#   ")); }
}
function sql(q) {
  return execFileSync("/bin/sh", ["-c", process.env.PSQL], { input: q, encoding: "utf8" }).trim();
}

function logged(eventId) {
  return sql("SELECT count(*) FROM kc_flow.event_log WHERE event_id = " + eventId) === "1";
}
async function until(pred, ms) {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 50))) {
    if (await pred()) return true;
  }
  return false;
}

/*
 * The page away longer than the log keeps events: its last event id falls below the log's
 * floor. The floor is raised here as a rotation of the log's ring records it (the sequence
 * kc_flow.log_floor_position) but without emptying the shared database's log, and taken back
 * after. When the page's socket
 * drops it is told to refetch (410 on its poll, "refetch" on the new socket): it reloads
 * the home, goes live again and shows the next event, all without a reload.
 */
async function refetchCase(page) {
  // an event of another student: the log's head moves past the page's last event
  const student = sql("INSERT INTO kc_flow.students (display_name, timezone) VALUES ('Refetch Other', 'UTC') RETURNING id");
  const other = sql("SELECT kc_flow.emit_event('SESSIONS_GENERATED', gen_random_uuid(), '" + student + "')");
  await until(() => logged(other), 5000);
  const head = Number(sql("SELECT kc_flow.settled_event_id()"));
  // the gateway's own cursor at the head first, so that only the page is below the floor
  await until(async () => (await (await fetch(process.env.GW_URL + "/readyz")).json()).watermark >= head, 5000);
  const before = sql("SELECT kc_flow.log_floor()");
  const floor = sql("SELECT setval('kc_flow.log_floor_position', kc_flow.settled_event_id())");
  try {
    await page.evaluate(() => window.__ws.close());
    let told = true;
    try {
      await page.waitForFunction(() => /no longer in the log; reloading the home/.test(document.getElementById("log").textContent),
                                 null, { timeout: 10000 });
      await page.waitForSelector('#conn[data-state="live"]', { timeout: 10000 });
    } catch (e) { told = false; }
    const mine = sql("SELECT kc_flow.emit_event('SESSIONS_GENERATED', gen_random_uuid(), '" + process.env.STUDENT +
                     "', '{\"count\": 0}')");
    await until(() => logged(mine), 5000);
    const pos = sql("SELECT pos FROM kc_flow.event_log WHERE event_id = " + mine);
    let next = true;
    try {
      await page.waitForFunction((p) => document.getElementById("log").textContent.includes("#" + p + " "), pos,
                                 { timeout: 5000 });
    } catch (e) { next = false; }
    const kept = await page.evaluate(() => window.__noReload === 42);
    report(told && next && kept, "a page whose last event fell below the log's floor reloads its home on the refetch " +
           "answer and shows the next event, without a reload", JSON.stringify({ told, next, kept, floor }));
  } finally {
    sql("SELECT setval('kc_flow.log_floor_position', " + before + ")");
  }
}

(async () => {
  const userDir = fs.mkdtempSync("/tmp/kc-chromium-");
  let browser;
  try {
    // a fresh profile every run (playwright passes it as --user-data-dir)
    browser = await chromium.launchPersistentContext(userDir, {
      executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
      headless: true,
      viewport: { width: 1200, height: 900 },
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
  } catch (e) {
    report(false, "headless Chromium starts", e.message);
    process.exit(0);
  }
  const page = browser.pages()[0] || await browser.newPage();
  const consoleErrors = [];
  // Chromium logs every 4xx as an error: the 410 of the refetch case is the answer it expects
  page.on("console", (m) => {
    if (m.type() === "error" && !/status of 410 \(Gone\)/.test(m.text())) consoleErrors.push(m.text());
  });
  // the page's socket, so that the test can drop it as a network would
  await page.addInitScript(() => {
    const Native = window.WebSocket;
    window.WebSocket = class extends Native {
      constructor(url, protocols) { super(url, protocols); window.__ws = this; }
    };
  });
  try {
    await page.goto(process.env.GW_URL + "/#token=" + process.env.TOKEN);
    await page.waitForSelector('#conn[data-state="live"]', { timeout: 10000 });
    await page.waitForSelector("#courses-box:not([hidden])", { timeout: 10000 });
    const before = await page.locator("#upcoming tr").count();
    report(before === 0, "page goes live over the WebSocket and shows an empty home", before);
    await page.evaluate(() => { window.__noReload = 42; });

    const payment = sql(
      "SELECT kc_flow.create_payment('" + process.env.STUDENT + "', 'eeeeeeee-0000-4000-8000-0000000000c1', 10, " +
      "jsonb_build_object('weekdays', jsonb_build_array(2, 6), 'start', lpad((9 + (random() * 9)::int)::text, 2, '0') || ':30', " +
      "'timezone', 'Europe/Berlin'))");
    const t0 = Date.now();
    sql("SELECT kc_flow.confirm_payment('" + payment + "')");
    const tCommit = Date.now();
    let shown = true;
    try {
      await page.waitForFunction(() => document.querySelectorAll("#upcoming tr").length >= 10, null,
                                 { timeout: 5000, polling: "raf" });
    } catch (e) { shown = false; }
    const t1 = Date.now();
    const rows = await page.locator("#upcoming tr").count();
    const kept = await page.evaluate(() => window.__noReload === 42);
    report(shown && kept && t1 - t0 < 1000,
           "a payment confirmed in SQL shows its sessions without a reload in " + (t1 - t0) +
           " ms (commit took " + (tCommit - t0) + " ms of it; limit 1000)", { shown, kept, rows });
    const trainer = await page.locator("#upcoming tr td").nth(3).textContent();
    report(rows >= 10 && trainer && trainer.length > 0, "upcoming sessions list the course, the session and the trainer (" + trainer + ")", rows);
    const course = await page.locator("#courses tr td").first().textContent();
    report(course === "Realtime Demo Course", "the course appears under My courses with its progress", course);
    report(await page.locator("#notices-box").isHidden(), "no payment notice while there is none");
    // a second payment of the same course that succeeded anyway: the page says the course is already active
    sql("INSERT INTO kc_flow.payments (student_id, course_id, purchase_tier, time_slot, amount_cents, status) VALUES ('" +
        process.env.STUDENT + "', 'eeeeeeee-0000-4000-8000-0000000000c1', 10, " +
        "'{\"weekdays\":[3],\"start\":\"07:15\",\"timezone\":\"Europe/Berlin\"}', 100, 'succeeded')");
    let notice = "";
    try {
      await page.waitForSelector("#notices li", { timeout: 5000 });
      notice = await page.locator("#notices li").first().textContent();
    } catch (e) { notice = String(e.message); }
    report(/^Payment received, course already active: Realtime Demo Course/.test(notice),
           "a payment refused because the course is active shows as a notice (payment_notices), without a reload", notice);
    await refetchCase(page);
    await page.screenshot({ path: process.env.SHOT, fullPage: true });
    report(fs.existsSync(process.env.SHOT), "screenshot kept at " + process.env.SHOT);
    report(consoleErrors.length === 0, "no errors in the browser console", consoleErrors.join("\n"));
  } catch (e) {
    report(false, "browser test ran to the end", e.stack);
    try { await page.screenshot({ path: process.env.SHOT, fullPage: true }); } catch (e2) { /* ignore */ }
  } finally {
    await browser.close();
    fs.rmSync(userDir, { recursive: true, force: true });
  }
})();
