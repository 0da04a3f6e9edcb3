// test/e2e/admin_test.js - the operator console (gateway/static/admin.html) in headless Chromium
// (playwright-core, Debian's chromium): the charts draw the gateway's samples; searching for a
// student finds them and their payments; a payment's story shows its events with the stage that
// handled each, the cache invalidation and push times, and its dead letter; Retry resolves the
// dead letter and the story then shows the purchase's events and sessions; a student's token
// gets "not an admin". A screenshot is kept.
// Run by test/suites/60_browser.sh, which starts the gateway and passes:
//   GW_URL, ADMIN_TOKEN, STUDENT_TOKEN, STUDENT and STUDENT_NAME (a student of its own; course and
//   trainers: test/ws/fixture.sql), PSQL (a shell command reading SQL on stdin), SHOT (png path)
"use strict";
const { chromium } = require("playwright-core");
const { execFileSync } = require("child_process");
const fs = require("fs");

const COURSE = "eeeeeeee-0000-4000-8000-0000000000c1";
const STUDENT = process.env.STUDENT;
let failed = 0;
function report(ok, name, detail) {
  console.log((ok ? "ok" : "not ok") + " - console: " + name);
  if (!ok) { failed++; if (detail !== undefined) console.log("#   " + String(typeof detail === "string" ? detail : JSON.stringify(detail)).split("\n").slice(0, 12).join("\n#   ")); }
}
function sql(q) {
  return execFileSync("/bin/sh", ["-c", process.env.PSQL], { input: q, encoding: "utf8" }).trim();
}
function waitSql(q, ms) {
  const end = Date.now() + ms;
  for (;;) {
    if (sql(q) === "t") return true;
    if (Date.now() > end) return false;
    execFileSync("sleep", ["0.1"]);
  }
}
function slot(days) {
  return "jsonb_build_object('weekdays', jsonb_build_array(" + days + "), 'start', lpad((7 + (random() * 14)::int)::text, 2, '0') || ':' || " +
         "(ARRAY['00','15','30','45'])[1 + (random() * 3)::int], 'timezone', 'Europe/Berlin')";
}

(async () => {
  // Payment A becomes a purchase with 10 sessions; payment B, for the same course and written
  // without create_payment (as a second sale that slipped through would be), is dead-lettered
  // at its first attempt (PURCHASE_ALREADY_ACTIVE). A is then refunded, so that retrying B works.
  const paymentA = sql("SELECT kc_flow.create_payment('" + STUDENT + "', '" + COURSE + "', 10, " + slot("1, 4") + ")");
  sql("SELECT kc_flow.confirm_payment('" + paymentA + "')");
  const aDone = waitSql("SELECT count(*) = 10 FROM kc_flow.tutoring_sessions WHERE student_id = '" + STUDENT + "'", 15000);
  const paymentB = sql("INSERT INTO kc_flow.payments (student_id, course_id, purchase_tier, time_slot, amount_cents, status) " +
                       "VALUES ('" + STUDENT + "', '" + COURSE + "', 10, " + slot("3, 6") + ", 4200, 'succeeded') RETURNING id").split("\n")[0];
  const bDead = waitSql("SELECT count(*) = 1 FROM kc_flow.dead_letters d JOIN kc_flow.events e ON e.id = d.event_id " +
                        "WHERE e.correlation_id = '" + paymentB + "' AND NOT d.resolved", 15000);
  sql("UPDATE kc_flow.payments SET status = 'refunded' WHERE id = '" + paymentA + "'");
  const aEnded = waitSql("SELECT NOT is_active FROM kc_flow.student_course_purchases WHERE payment_id = '" + paymentA + "'", 15000);
  report(aDone && bDead && aEnded, "set-up: a purchase with 10 sessions, a second payment dead-lettered, the first refunded",
         { aDone, bDead, aEnded });

  const userDir = fs.mkdtempSync("/tmp/kc-chromium-");
  let browser;
  try {
    browser = await chromium.launchPersistentContext(userDir, {
      executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
      headless: true,
      viewport: { width: 1280, height: 1000 },
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
  page.on("pageerror", (e) => consoleErrors.push(e.message));
  try {
    await page.goto(process.env.GW_URL + "/admin#token=" + process.env.ADMIN_TOKEN);
    await page.waitForSelector('#conn[data-state="live"]', { timeout: 10000 });
    await page.waitForFunction(() => Number(document.querySelector("#chart-queue").dataset.points || 0) >= 1, null, { timeout: 10000 });
    const charts = await page.evaluate(() => ["queue", "dead", "lag", "rate"].map((c) => {
      const box = document.querySelector("#chart-" + c);
      return { c, points: Number(box.dataset.points), lines: box.querySelectorAll("svg polyline").length, value: box.querySelector("b").textContent };
    }));
    report(charts.every((c) => c.points >= 1) && charts.filter((c) => c.c !== "lag").every((c) => c.lines >= 1),
           "the four charts draw the gateway's samples (queue depth, dead letters, lag, throughput)", charts);

    // find the student by part of the name, then their payment B
    await page.fill("#q", process.env.STUDENT_NAME.slice(0, -2));
    await page.click("#go");
    const row = page.locator('#res-students tr[data-student="' + STUDENT + '"]');
    await row.waitFor({ timeout: 5000 });
    const links = await row.locator("a[data-payment]").count();
    report(links === 2, "searching part of the name finds the student with both payments", links);
    await row.locator('a[data-payment="' + paymentB + '"]').click();
    await page.waitForFunction((id) => document.body.dataset.story === id, paymentB, { timeout: 5000 });
    report(true, "clicking the payment opens its story");

    const events = await page.$$eval("#story-events tr", (trs) => trs.map((tr) => ({
      type: tr.dataset.eventType, cells: Array.from(tr.cells).map((td) => td.textContent),
      invalidated: tr.querySelector(".gw-invalidated") !== null, pushed: (tr.querySelector(".gw-pushed") || {}).textContent || "",
    })));
    const types = events.map((e) => e.type);
    report(types[0] === "PURCHASE_CONFIRMED" && types.includes("PURCHASE_ALREADY_ACTIVE"),
           "the story lists the payment's events (PURCHASE_CONFIRMED, PURCHASE_ALREADY_ACTIVE)", types);
    report(events.length > 0 && events.every((e) => e.invalidated && /\+[0-9.]+ m?s/.test(e.pushed) && /sockets? open/.test(e.pushed)),
           "each event shows when this gateway invalidated the cache and pushed it", events.map((e) => e.cells.slice(5)));
    report(/dead letter #\d+/.test(events[0].cells[4]), "the confirmed event shows it was dead-lettered", events[0].cells);
    const dead = page.locator('#story-dead tr[data-resolved="false"]');
    const deadText = await dead.first().textContent();
    report(await dead.count() === 1 && /23505/.test(deadText) && /already has an active purchase/.test(deadText),
           "the dead letter shows its stage, SQLSTATE and reason", deadText);

    // retry it: resolved, then the purchase, its trainer and its sessions appear in the story
    const t0 = Date.now();
    await dead.first().locator("button.retry").click();
    await page.waitForSelector('#story-dead tr[data-resolved="true"]', { timeout: 10000 });
    let done = true;
    try {
      await page.waitForFunction(() => document.querySelectorAll("#story-sessions tr").length >= 10 &&
                                        Array.from(document.querySelectorAll("#story-events tr")).some((tr) => tr.dataset.eventType === "SESSIONS_GENERATED"),
                                 null, { timeout: 10000 });
    } catch (e) { done = false; }
    const after = await page.$$eval("#story-events tr", (trs) => trs.map((tr) => tr.dataset.eventType));
    const handled = await page.$$eval("#story-events tr", (trs) => trs.map((tr) => tr.cells[3].textContent));
    report(done, "Retry resolves the dead letter; the story then shows the new events and 10 sessions, without a reload, in " +
           (Date.now() - t0) + " ms", after);
    report(handled.some((h) => /allocation at/.test(h)) && handled.some((h) => /sessions at/.test(h)),
           "each handled event names the stage that handled it and when", handled);
    report(sql("SELECT count(*) FROM kc_flow.student_course_purchases WHERE payment_id = '" + paymentB + "' AND is_active") === "1" &&
           sql("SELECT count(*) FROM kc_flow.dead_letters d JOIN kc_flow.events e ON e.id = d.event_id " +
               "WHERE e.correlation_id = '" + paymentB + "' AND NOT d.resolved") === "0",
           "in the database the payment is now a purchase and no dead letter is open");
    const summary = await page.textContent("#story-summary");
    report(/10 \/ 10/.test(summary), "the summary says 10 of 10 sessions created", summary);

    // a payment id prefix finds the payment itself
    await page.fill("#q", paymentA.slice(0, 8));
    await page.click("#go");
    await page.locator('#res-payments tr[data-payment="' + paymentA + '"]').waitFor({ timeout: 5000 });
    report(true, "the first 8 characters of a payment id find the payment");
    // hostile text: a clear message, nothing shown, nothing changed
    const before = sql("SELECT (SELECT count(*) FROM kc_flow.payments) || '/' || (SELECT count(*) FROM kc_flow.events)");
    await page.fill("#q", "'; DROP TABLE kc_flow.payments; --");
    await page.click("#go");
    await page.waitForFunction(() => /nothing matches/.test(document.querySelector("#search-msg").textContent), null, { timeout: 5000 });
    const hidden = await page.evaluate(() => document.querySelector("#res-payments-box").hidden && document.querySelector("#res-students-box").hidden);
    report(hidden && sql("SELECT (SELECT count(*) FROM kc_flow.payments) || '/' || (SELECT count(*) FROM kc_flow.events)") === before,
           "an injection string finds nothing, says so and changes nothing");

    await page.fill("#q", STUDENT);
    await page.click("#go");
    await page.locator('#res-students tr[data-student="' + STUDENT + '"]').waitFor({ timeout: 5000 });
    await row.locator('a[data-payment="' + paymentB + '"]').click();
    await page.waitForSelector('#story-dead tr[data-resolved="true"]', { timeout: 5000 });
    await page.screenshot({ path: process.env.SHOT, fullPage: true });
    report(fs.existsSync(process.env.SHOT), "screenshot kept at " + process.env.SHOT);
    report(consoleErrors.length === 0, "no errors in the browser console", consoleErrors.join("\n"));

    // a student's token: the page says it is not an admin's, and shows no data
    const other = await browser.newPage();
    await other.goto(process.env.GW_URL + "/admin#token=" + process.env.STUDENT_TOKEN + "&q=" + encodeURIComponent(process.env.STUDENT_NAME));
    await other.waitForSelector("#help:not([hidden])", { timeout: 5000 });
    const title = await other.textContent("#help-title");
    const rows = await other.locator("#res-students tr").count();
    report(/not an admin/.test(title) && rows === 0, "a student's token gets \"not an admin's\" and no data", { title, rows });
  } catch (e) {
    report(false, "console test ran to the end", e.stack);
    try { await page.screenshot({ path: process.env.SHOT, fullPage: true }); } catch (e2) { /* ignore */ }
  } finally {
    await browser.close();
    fs.rmSync(userDir, { recursive: true, force: true });
  }
})();
