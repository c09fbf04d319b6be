// Drives the operator console in headless Chromium (Debian's `chromium`, through
// playwright-core) against a console on a seeded database. Run by the Rust integration test
// `console::the_console_in_a_real_browser`, which seeds the database, starts the console, passes
// what the seed holds in EXPECT, and afterwards checks in the database what this script did.
//
// Environment: CONSOLE_URL, CONSOLE_TOKEN (read), CONSOLE_ADMIN_TOKEN, CHROMIUM (the
// executable), SCREENSHOT_DIR, EXPECT (JSON). Exits non-zero on the first failed check.

import { chromium } from "playwright-core";
import { strict as assert } from "node:assert";
import path from "node:path";

const env = (name) => {
  const v = process.env[name];
  if (!v) { throw new Error(`${name} is not set`); }
  return v;
};
const base = env("CONSOLE_URL");
const readToken = env("CONSOLE_TOKEN");
const adminToken = env("CONSOLE_ADMIN_TOKEN");
const shots = env("SCREENSHOT_DIR");
const expect = JSON.parse(env("EXPECT"));

const step = (what) => console.log(`- ${what}`);
const text = async (page, selector) => (await page.locator(selector).first().innerText()).trim();
const num = async (page, selector) => Number((await text(page, selector)).replace(/[^0-9]/g, ""));
const shot = async (page, name) => {
  await page.screenshot({ path: path.join(shots, `console-${name}.png`), fullPage: true });
};

const browser = await chromium.launch({
  executablePath: env("CHROMIUM"),
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking"],
});

try {
  const viewport = { width: 1280, height: 900 };

  step("no token, a wrong token: refused");
  // A navigation the browser cannot authenticate ends in a 401 page or, when it gives up on
  // the challenge, in ERR_INVALID_AUTH_CREDENTIALS; either way nothing of the page is shown.
  const refusedNavigation = async (ctx, url) => {
    const p = await ctx.newPage();
    try {
      const res = await p.goto(url);
      assert.equal(res.status(), 401, `${url} must be refused`);
    } catch (e) {
      assert.match(String(e), /ERR_INVALID_AUTH_CREDENTIALS/, `${url}: ${e}`);
    }
    const api = await ctx.request.get(url, { maxRedirects: 0 });
    assert.equal(api.status(), 401, `${url} over the API`);
  };
  {
    const anon = await browser.newContext({ viewport });
    await refusedNavigation(anon, `${base}/`);
    await anon.close();
    const wrong = await browser.newContext({ viewport,
      httpCredentials: { username: "x", password: "not-the-token" } });
    await refusedNavigation(wrong, `${base}/accounts`);
    await wrong.close();
  }

  // ---------------------------------------------------------------------------- reader
  const reader = await browser.newContext({ viewport,
    httpCredentials: { username: "rita", password: readToken } });
  const page = await reader.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") { errors.push(m.text()); } });

  step("pools: each pool's numbers");
  assert.equal((await page.goto(`${base}/`)).status(), 200);
  for (const [pool, want] of Object.entries(expect.pools)) {
    const sec = `section[data-pool="${pool}"]`;
    assert.equal(await num(page, `${sec} [data-k="accounts"]`), want.accounts, `${pool} accounts`);
    assert.equal(await num(page, `${sec} [data-k="workable"]`), want.workable, `${pool} workable`);
    const joins = await text(page, `${sec} [data-k="joins"]`);
    assert.match(joins, new RegExp(`^${want.joins} / `), `${pool} joins: ${joins}`);
    const bound = await text(page, `${sec} [data-k="bound"]`);
    assert.match(bound, new RegExp(`^${want.bound} / `), `${pool} bound: ${bound}`);
    for (const [status, n] of Object.entries(want.status || {})) {
      assert.equal(await num(page, `${sec} td[data-status="${status}"]`), n, `${pool} ${status}`);
    }
  }
  for (const [niche, want] of Object.entries(expect.niches)) {
    const row = `tr[data-niche="${niche}"]`;
    assert.equal(await num(page, `${row} [data-k="total"]`), want.total, `${niche} total`);
    for (const [status, n] of Object.entries(want)) {
      if (status === "total") { continue; }
      assert.equal(await num(page, `${row} td[data-status="${status}"]`), n, `${niche} ${status}`);
    }
  }
  for (const [niche, want] of Object.entries(expect.queue)) {
    const row = `table tr[data-niche="${niche}"]:has([data-k="due"])`;
    assert.equal(await num(page, `${row} [data-k="due"]`), want.due, `${niche} due`);
    assert.equal(await num(page, `${row} [data-k="scheduled"]`), want.scheduled, `${niche} scheduled`);
  }
  await shot(page, "pools");

  step("accounts: all, filtered by status, sorted by joins");
  await page.goto(`${base}/accounts`);
  assert.equal(await page.locator("#accounts tr[data-account]").count(), expect.accounts);
  await page.selectOption("select[name=status]", "banned");
  await Promise.all([page.waitForURL(/status=banned/), page.click("form.filters button")]);
  assert.equal(await page.locator("#accounts tr[data-account]").count(),
    expect.accounts_by_status.banned, "the status filter");
  await page.selectOption("select[name=status]", "");
  await Promise.all([page.waitForURL(/status=&/), page.click("form.filters button")]);
  await page.fill("input[name=q]", "ann");
  await Promise.all([page.waitForURL(/q=ann/), page.click("form.filters button")]);
  assert.equal(await page.locator("#accounts tr[data-account]").count(), 1, "the name filter");
  await page.fill("input[name=q]", "");
  await Promise.all([page.waitForURL(/q=&/), page.click("form.filters button")]);
  await page.click("a[data-sort=joins]"); // ascending
  await page.click("a[data-sort=joins]"); // descending
  await page.waitForURL(/sort=joins&dir=desc/);
  const top = await page.locator("#accounts tr[data-account]").first().getAttribute("data-account");
  assert.equal(top, expect.most_joins_24h, "sorted by joins, most first");
  await shot(page, "accounts");

  step("an account: its attempts and its groups; no action for a reader");
  await page.goto(`${base}/accounts/${expect.anna.id}`);
  assert.equal(await page.locator("table.attempts tr[data-outcome]").count(), expect.anna.attempts);
  assert.equal(await page.locator("table.groups tr[data-target]").count(), expect.anna.groups);
  assert.equal(await page.locator("#pause").count(), 0, "a reader sees no pause button");
  const asReader = await page.request.post(`${base}/accounts/${expect.anna.id}/pause`,
    { form: { csrf: "anything" }, maxRedirects: 0 });
  assert.equal(asReader.status(), 401, "a reader's action is refused");
  await shot(page, "account");

  step("groups: search and the status grid");
  await page.goto(`${base}/groups`);
  await page.fill("input[name=q]", "kyiv");
  await Promise.all([page.waitForURL(/q=kyiv/), page.click("form.filters button")]);
  assert.equal(await page.locator("table.groups tr[data-target]").count(), expect.search.kyiv);
  await page.fill("input[name=q]", "cars_");
  await Promise.all([page.waitForURL(/q=cars_/), page.click("form.filters button")]);
  assert.equal(await page.locator("table.groups tr[data-target]").count(), expect.search.cars_);
  await page.goto(`${base}/groups?status=error`);
  assert.equal(await page.locator("table.groups tr[data-target]").count(), expect.niches.cars.error);
  await page.goto(`${base}/groups`);
  await shot(page, "groups");
  await page.goto(`${base}/groups/${expect.pinned_target}`);
  assert.match(await text(page, "[data-k=status]"), /joining/);
  await shot(page, "group");

  step("ready for posting: the list and its CSV");
  await page.goto(`${base}/ready`);
  assert.equal(await page.locator("#ready tr[data-target]").count(), expect.ready);
  const csv = await page.request.get(`${base}/ready.csv`);
  assert.equal(csv.status(), 200);
  const lines = (await csv.text()).trim().split("\r\n");
  assert.equal(lines.length, expect.ready + 1, "a header and one line per group");
  await shot(page, "ready");

  step("activity: totals, charts and the live tail refreshing");
  await page.goto(`${base}/activity`);
  assert.equal(await num(page, "[data-k=joins]"), expect.activity.joins);
  assert.equal(await num(page, "[data-k=flood-waits]"), expect.activity.flood_waits);
  assert.equal(await num(page, "[data-k=errors]"), expect.activity.errors);
  assert.equal(await page.locator("svg.chart").count(), 3);
  assert.ok(await page.locator("svg.chart rect").count() >= 4, "bars in the charts");
  await page.waitForSelector("#tail[data-refreshed]", { timeout: 15000 });
  assert.ok(await page.locator("#tail tr[data-outcome]").count() >= 1);
  await shot(page, "activity");
  assert.deepEqual(errors, [], "no script error or CSP violation on any page");
  await reader.close();

  // ---------------------------------------------------------------------------- admin
  const admin = await browser.newContext({ viewport,
    httpCredentials: { username: "browser", password: adminToken } });
  const ap = await admin.newPage();

  step("pause carl through the form");
  await ap.goto(`${base}/accounts/${expect.carl.id}`);
  await ap.fill("input[name=note]", "checking the proxy");
  await Promise.all([ap.waitForURL(/notice=paused/), ap.click("#pause")]);
  assert.match(await text(ap, "[data-k=status]"), /paused/);
  assert.equal(await ap.locator("#resume").count(), 1, "now it can be resumed");

  step("a forged form (no CSRF token) is refused");
  const forged = await ap.request.post(`${base}/accounts/${expect.anna.id}/pause`,
    { form: { note: "forged" }, maxRedirects: 0 });
  assert.equal(forged.status(), 403);

  step("retry the error group");
  await ap.goto(`${base}/groups/${expect.error_target}`);
  await Promise.all([ap.waitForURL(/notice=retried/), ap.click("#retry")]);
  assert.match(await text(ap, "[data-k=status]"), /new/);

  step("release the in-doubt pin: refused unconfirmed, done confirmed");
  await ap.goto(`${base}/groups/${expect.pinned_target}`);
  const csrf = await ap.locator("form[action$=release] input[name=csrf]").getAttribute("value");
  const unconfirmed = await ap.request.post(`${base}/groups/${expect.pinned_target}/release`,
    { form: { csrf }, maxRedirects: 0 });
  assert.equal(unconfirmed.status(), 409, "a release needs the confirmation");
  await ap.check("form[action$=release] input[name=confirm]");
  await Promise.all([ap.waitForURL(/notice=released/), ap.click("#release")]);
  assert.match(await text(ap, "[data-k=status]"), /new/);

  step("import a target file of two links (read into the form by the page's script)");
  await ap.goto(`${base}/groups`);
  await ap.fill("#import input[name=niche]", "browser_import");
  const file = "link\n@browser_group_one\nhttps://t.me/browser_group_two\n";
  await ap.setInputFiles("#import-file",
    { name: "groups.csv", mimeType: "text/csv", buffer: Buffer.from(file) });
  await ap.waitForFunction(() => document.getElementById("import-links").value.includes("browser_group_two"));
  await Promise.all([ap.waitForURL(/notice=imported/), ap.click("#import button[type=submit]")]);
  assert.equal(await ap.locator("table.groups tr[data-target]").count(), 2);

  step("the audit log shows every action");
  await ap.goto(`${base}/audit`);
  assert.equal(await ap.locator("table.audit tr[data-action]").count(), 4);
  await shot(ap, "audit");
  await admin.close();
  console.log("ok: every check passed");
} finally {
  await browser.close();
}
