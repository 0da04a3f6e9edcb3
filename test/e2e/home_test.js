// test/e2e/home_test.js - the demo home screen in headless Chromium (playwright-core, no
// downloaded browser): the page goes live over the WebSocket, a payment confirmed in SQL
// makes the sessions appear without a reload within 1 s, a second payment of the same course
// shows as a notice ("payment received, course already active"), and a screenshot is kept.
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
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
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
