// Drives the demo page in Debian's headless Chromium with playwright-core (no browser
// download): one scenario per run, called by tests/browser/test_demo_page.py.
//
//   node browser-tests/run.mjs --scenario progress --base-url http://127.0.0.1:8000 \
//        --artifacts test-artifacts [--states] [--chromium /usr/bin/chromium]
//
// Prints one JSON line {"ok": true, ...facts} and exits 0, or prints {"ok": false,
// "error": ...} and exits 1 after saving a screenshot of the failure into --artifacts.
// With --states it also saves a screenshot of each state it goes through.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";

import { chromium } from "playwright-core";

const { values: args } = parseArgs({
  options: {
    scenario: { type: "string" },
    "base-url": { type: "string" },
    artifacts: { type: "string", default: "test-artifacts" },
    chromium: { type: "string", default: process.env.CHROMIUM_PATH || "/usr/bin/chromium" },
    states: { type: "boolean", default: false },
    timeout: { type: "string", default: "60000" },
  },
});

const LAUNCH_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage",
];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

class Failure extends Error {}

function check(condition, message) {
  if (!condition) throw new Failure(message);
}

/** Poll `fn` until it returns a truthy value. */
async function until(fn, what, timeoutMs = 20000, everyMs = 50) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await fn();
    if (last) return last;
    await sleep(everyMs);
  }
  throw new Failure(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/**
 * A TCP proxy in front of the server: `dropAll()` cuts every connection (the browser
 * sees its WebSocket die without a close frame), `refuseFor(ms)` refuses new ones for a
 * while, as a server that is restarting would.
 */
async function startProxy(targetPort) {
  const sockets = new Set();
  let refuseUntil = 0;
  const server = net.createServer((client) => {
    if (Date.now() < refuseUntil) {
      client.destroy();
      return;
    }
    const upstream = net.connect(targetPort, "127.0.0.1");
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => s.destroy());
    }
    client.pipe(upstream);
    upstream.pipe(client);
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: server.address().port,
    /** Cut only the WebSocket connections (HTTP keep-alive sockets may stay). */
    dropAll() {
      for (const s of sockets) s.destroy();
    },
    refuseFor(ms) {
      refuseUntil = Date.now() + ms;
    },
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

// --- page helpers -------------------------------------------------------------------

async function connState(page) {
  return page.$eval("#conn-state", (e) => ({ state: e.dataset.state, text: e.textContent.trim() }));
}

async function waitConnected(page) {
  await until(async () => (await connState(page)).state === "open", "the page to connect");
}

async function job(page, nth = 0) {
  return page.$$eval(
    "#jobs > li",
    (rows, i) => {
      const row = rows[i];
      if (!row) return null;
      const q = (sel) => row.querySelector(sel);
      return {
        id: row.dataset.requestId,
        state: row.dataset.state,
        settled: Number(row.dataset.settledCount),
        value: q("progress").value,
        pct: q("[data-role=pct]").textContent,
        badge: q("[data-role=badge]").textContent,
        message: q("[data-role=message]").textContent,
        note: q("[data-role=note]").hidden ? "" : q("[data-role=note]").textContent,
        result: q("[data-role=result]").hidden ? "" : q("[data-role=result]").textContent,
        cancelVisible: !q("[data-role=cancel]").hidden,
      };
    },
    nth,
  );
}

async function jobById(page, id) {
  const rows = await page.$$eval("#jobs > li", (all) => all.map((r) => r.dataset.requestId));
  const index = rows.indexOf(id);
  return index < 0 ? null : job(page, index);
}

async function startReport(page, seconds) {
  const before = await page.$$eval("#jobs > li", (rows) => rows.length);
  await page.fill("#duration", String(seconds));
  await page.click("#start-report");
  await until(async () => (await page.$$eval("#jobs > li", (rows) => rows.length)) > before, "a new job row");
  return (await job(page, 0)).id;
}

let shotIndex = 0;
async function stateShot(page, name) {
  if (!args.states) return;
  shotIndex += 1;
  const file = path.join(args.artifacts, "states", `${String(shotIndex).padStart(2, "0")}-${args.scenario}-${name}.png`);
  mkdirSync(path.dirname(file), { recursive: true });
  await page.screenshot({ path: file, fullPage: true });
}

function uniqueUser(prefix) {
  return `${prefix}-${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
}

// --- scenarios ------------------------------------------------------------------------

const scenarios = {
  /** The progress bar of a 3-second report fills and shows completion. */
  async progress({ page, baseUrl }) {
    await page.goto(`${baseUrl}/?user=${uniqueUser("progress")}`);
    await waitConnected(page);
    const hint = await page.textContent("#token-hint");
    check(/Development token for user/.test(hint), `token hint: ${hint}`);
    check((await page.inputValue("#token")).split(".").length === 3, "the token field holds a JWT");
    await stateShot(page, "connected");
    const id = await startReport(page, 3);
    const samples = [];
    let midShot = false;
    const started = Date.now();
    const done = await until(async () => {
      const j = await jobById(page, id);
      samples.push(j.value);
      if (!midShot && j.value >= 30 && j.value < 90) {
        midShot = true;
        await stateShot(page, "running");
      }
      return j.state === "completed" ? j : null;
    }, "the report to complete", 30000, 40);
    const elapsed = Date.now() - started;
    const intermediate = samples.filter((v) => v > 0 && v < 100);
    check(intermediate.length >= 3, `the bar moved through intermediate values: ${samples.join(",")}`);
    check(samples.every((v, i) => i === 0 || v >= samples[i - 1]), `never went back: ${samples.join(",")}`);
    check(done.value === 100 && done.pct === "100%", `full bar: ${JSON.stringify(done)}`);
    check(done.badge === "Completed", `badge: ${done.badge}`);
    check(/^Completed: analysed \d+ past request/.test(done.result), `summary: ${done.result}`);
    check(done.settled === 1, `settled ${done.settled} times`);
    check(!done.cancelVisible, "no Cancel button after completion");
    check(elapsed >= 2500, `took about 3 s (${elapsed} ms)`);
    await page.waitForTimeout(500);
    await stateShot(page, "completed");
    return { id, elapsed, samples: intermediate.length };
  },

  /** The server side closes the socket mid-job; the page reconnects, resumes and
   * shows the completion exactly once. */
  async "server-drop"({ page, proxy }) {
    const sockets = [];
    page.on("websocket", (ws) => sockets.push(ws.url()));
    await page.goto(`http://127.0.0.1:${proxy.port}/?user=${uniqueUser("drop")}`);
    await waitConnected(page);
    const id = await startReport(page, 4);
    await until(async () => (await jobById(page, id)).value >= 20, "the report to pass 20%");
    const before = (await jobById(page, id)).value;
    proxy.refuseFor(1500); // the server is "down" for a moment
    proxy.dropAll();
    const seen = new Set();
    let shot = false;
    await until(async () => {
      const s = await connState(page);
      seen.add(s.state);
      if (s.state === "reconnecting" && !shot && /attempt/.test(s.text)) {
        shot = true;
        await stateShot(page, "reconnecting");
      }
      return s.state === "open" && seen.has("reconnecting") ? s : null;
    }, "the page to reconnect", 20000, 25);
    const done = await until(async () => {
      const j = await jobById(page, id);
      return j.state === "completed" ? j : null;
    }, "the resumed report to complete", 30000);
    await page.waitForTimeout(1000); // any second outcome would show up by now
    const after = await jobById(page, id);
    check(after.settled === 1, `the outcome reached the page ${after.settled} times`);
    check(done.value === 100 && /^Completed/.test(done.result), `completed: ${JSON.stringify(done)}`);
    check(/Reconnected: resumed/.test(after.note), `note: ${after.note}`);
    check(sockets.length >= 2, `reconnected over a new socket (${sockets.length})`);
    const rows = await page.$$eval(`#jobs > li[data-request-id="${id}"]`, (r) => r.length);
    check(rows === 1, `one row for the job (${rows})`);
    await stateShot(page, "resumed-completed");
    return { id, progressBeforeDrop: before, sockets: sockets.length, states: [...seen] };
  },

  /** The page's "Drop connection" button: same outcome. */
  async "drop-button"({ page, baseUrl }) {
    const sockets = [];
    page.on("websocket", (ws) => sockets.push(ws.url()));
    await page.goto(`${baseUrl}/?user=${uniqueUser("button")}`);
    await waitConnected(page);
    const id = await startReport(page, 3);
    await until(async () => (await jobById(page, id)).value >= 15, "the report to pass 15%");
    const before = sockets.length;
    await page.click("#drop");
    await until(async () => sockets.length > before, "a new socket", 10000);
    await waitConnected(page);
    const done = await until(async () => {
      const j = await jobById(page, id);
      return j.state === "completed" ? j : null;
    }, "the resumed report to complete", 30000);
    await page.waitForTimeout(800);
    const after = await jobById(page, id);
    check(after.settled === 1, `the outcome reached the page ${after.settled} times`);
    check(done.value === 100, "full bar");
    check(/Reconnected: resumed/.test(after.note), `note: ${after.note}`);
    return { id, sockets: sockets.length };
  },

  /** An invalid token shows a clear message and is not retried forever. */
  async "invalid-token"({ page, baseUrl }) {
    const sockets = [];
    page.on("websocket", (ws) => sockets.push(ws.url()));
    await page.goto(`${baseUrl}/?user=${uniqueUser("invalid")}`);
    await waitConnected(page);
    const before = sockets.length;
    await page.fill("#token", "this-is-not-a-valid-token");
    await page.click("#connect");
    const state = await until(async () => {
      const s = await connState(page);
      return s.state === "error" ? s : null;
    }, "the error state", 15000);
    const alert = await page.$eval("#conn-error", (e) => ({ hidden: e.hidden, text: e.textContent, role: e.getAttribute("role") }));
    check(!alert.hidden && alert.role === "alert", "an alert is shown");
    check(/rejected this token/.test(alert.text) && /invalid or has expired/.test(alert.text), `message: ${alert.text}`);
    check(state.text === "Token rejected", `indicator: ${state.text}`);
    await page.waitForTimeout(2500);
    const attempts = sockets.length - before;
    check(attempts === 2, `one attempt and one retry with a fresh token, not a loop (${attempts})`);
    check(await page.$eval("#drop", (b) => b.disabled), "Drop connection is disabled");
    await stateShot(page, "invalid-token");
    return { attempts, message: alert.text };
  },

  /** Cancel ends the job with a cancelled state (and the server agrees). */
  async cancel({ page, baseUrl }) {
    await page.goto(`${baseUrl}/?user=${uniqueUser("cancel")}`);
    await waitConnected(page);
    const id = await startReport(page, 30);
    await until(async () => (await jobById(page, id)).state === "running", "the report to run");
    await until(async () => (await jobById(page, id)).value > 0, "some progress");
    await page.click(`#jobs > li[data-request-id="${id}"] [data-role=cancel]`);
    const cancelled = await until(async () => {
      const j = await jobById(page, id);
      return j.state === "cancelled" ? j : null;
    }, "the cancelled state", 10000);
    check(cancelled.badge === "Cancelled", `badge: ${cancelled.badge}`);
    check(/Cancelled before it finished/.test(cancelled.result), `text: ${cancelled.result}`);
    check(cancelled.value < 100, "the bar stopped short of 100%");
    check(!cancelled.cancelVisible, "no Cancel button any more");
    // The server's record agrees (Past requests refreshes itself; ask again anyway).
    const status = await until(async () => {
      await page.click("#refresh-history");
      await page.waitForTimeout(300);
      return page.$eval(`#history-rows tr[data-request-id="${id}"] .badge`, (b) => b.textContent).catch(() => null);
    }, "the request in Past requests", 10000, 200);
    check(status === "cancelled", `Past requests says ${status}`);
    await page.waitForTimeout(1500);
    check((await jobById(page, id)).settled === 1, "settled once");
    await stateShot(page, "cancelled");
    return { id, status };
  },

  /** request.watch: a report started by the server (the demo button) and one started
   * in a second tab of the same user both appear and complete on the first tab. */
  async watch({ page, baseUrl }) {
    const user = uniqueUser("watch");
    await page.goto(`${baseUrl}/?user=${user}`);
    await waitConnected(page);
    await page.fill("#duration", "1");
    await page.click("#server-report");
    const fromServer = await until(() => job(page, 0), "the server's report on the page");
    check(/started elsewhere/.test(await page.$eval("#jobs > li .job-title", (e) => e.textContent)), "titled as started elsewhere");
    const other = await page.context().newPage();
    await other.goto(`${baseUrl}/?user=${user}`);
    await waitConnected(other);
    const fromTab = await startReport(other, 1);
    for (const id of [fromServer.id, fromTab]) {
      const done = await until(async () => {
        const j = await jobById(page, id);
        return j && j.state === "completed" ? j : null;
      }, `report ${id} completed on the watching tab`, 20000);
      check(done.value === 100, `bar full for ${id}`);
      check(done.settled === 1, `settled once: ${id}`);
    }
    await stateShot(page, "watched");
    await other.close();
    return { ids: [fromServer.id, fromTab] };
  },

  /** Everything at once, for a look at the whole page: echo, three jobs (one
   * cancelled), past requests. */
  async overview({ page, baseUrl }) {
    await page.goto(`${baseUrl}/?user=${uniqueUser("overview")}`);
    await waitConnected(page);
    await page.fill("#echo-text", "Hello from the browser test");
    await page.click("#echo-form button");
    await until(async () => /Answer in/.test(await page.textContent("#echo-output")), "the echo answer");
    const long = await startReport(page, 20);
    const short = await startReport(page, 2);
    const medium = await startReport(page, 6);
    await until(async () => (await jobById(page, long)).value > 5, "progress of the long job");
    await page.click(`#jobs > li[data-request-id="${long}"] [data-role=cancel]`);
    await until(async () => (await jobById(page, short)).state === "completed", "the short job", 20000);
    await until(async () => (await jobById(page, medium)).value >= 40, "the medium job halfway", 20000);
    await stateShot(page, "several-jobs");
    await until(async () => (await jobById(page, medium)).state === "completed", "the medium job", 20000);
    await page.click("#refresh-history");
    await until(async () => (await page.$$eval("#history-rows tr", (r) => r.length)) >= 3, "past requests");
    await stateShot(page, "overview");
    const echo = await page.textContent("#echo-output");
    check(/Hello from the browser test/.test(echo), `echo: ${echo}`);
    return { jobs: 3 };
  },
};

// The admin scenario lives in the same table; it is added below the demo-page ones.
scenarios.admin = async function admin({ page, baseUrl }) {
  const user = process.env.ADMIN_USER;
  const password = process.env.ADMIN_PASSWORD;
  const target = process.env.TARGET_USER;
  check(user && password && target, "ADMIN_USER, ADMIN_PASSWORD and TARGET_USER are required");
  await page.goto(`${baseUrl}/admin/login/?next=/admin/`);
  await page.fill("#id_username", user);
  await page.fill("#id_password", password);
  await page.click("input[type=submit]");
  await page.waitForURL(/\/admin\/$/);
  const dashboard = await page.textContent("#content");
  check(/Connections per tenant/i.test(dashboard), "the dashboard shows connections per tenant");
  await stateShot(page, "admin-dashboard");
  await page.goto(`${baseUrl}/admin/live/connections/?tenant=demo&user=${encodeURIComponent(target)}`);
  const link = page.locator("th.field-connection_id a").first();
  await until(async () => (await link.count()) > 0, "the live connection in the list", 10000);
  const row = await page.textContent("#result_list");
  check(row.includes(target), `the list shows the connected user: ${row.slice(0, 300)}`);
  const connectionId = (await link.textContent()).trim();
  await stateShot(page, "admin-connections");
  await link.click();
  await page.waitForSelector("input[value=Disconnect]");
  const detail = await page.textContent("#content");
  check(detail.includes(connectionId) && detail.includes("channels"), "the detail page shows the connection");
  await stateShot(page, "admin-connection-detail");
  await page.click("input[value=Disconnect]");
  await page.waitForSelector(".messagelist");
  const message = await page.textContent(".messagelist");
  check(new RegExp(`Connection ${connectionId}: close \\d+ sent`).test(message), `admin message: ${message}`);
  await stateShot(page, "admin-disconnected");
  return { connectionId, message: message.trim() };
};

/** WCAG relative luminance of a CSS `rgb()`/`rgba()` colour. */
function luminance(css) {
  const [r, g, b] = css.match(/[\d.]+/g).slice(0, 3).map(Number).map((v) => {
    const c = v / 255;
    return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}

function contrast(fg, bg) {
  const [hi, lo] = [luminance(fg), luminance(bg)].sort((a, b) => b - a);
  return (hi + 0.05) / (lo + 0.05);
}

/** What a user sees of a live list page: where the table, its scroll box and the filter
 * column are, whether the id links wrap (an inline box that wraps has several client
 * rects), and the text and background colours of each status cell. */
async function listLayout(page, idSelector) {
  return page.evaluate((idSel) => {
    const box = (el) => {
      if (!el) return null;
      const r = el.getBoundingClientRect();
      return { left: r.left, right: r.right, top: r.top, bottom: r.bottom };
    };
    const background = (el) => {
      for (let node = el; node; node = node.parentElement) {
        const bg = getComputedStyle(node).backgroundColor;
        const alpha = bg.startsWith("rgba") ? Number(bg.match(/[\d.]+/g)[3]) : 1;
        if (alpha > 0) return bg;
      }
      return "rgb(255, 255, 255)";
    };
    const results = document.querySelector("#changelist-form .results");
    return {
      viewport: window.innerWidth,
      pageScrollWidth: document.documentElement.scrollWidth,
      table: box(document.querySelector("#result_list")),
      filter: box(document.querySelector("#changelist-filter")),
      results: results && { scrollWidth: results.scrollWidth, clientWidth: results.clientWidth },
      ids: [...document.querySelectorAll(idSel)].map((a) => ({
        text: a.textContent.trim(),
        lines: a.getClientRects().length,
      })),
      statuses: [...document.querySelectorAll("#result_list td.field-status > span")].map((s) => ({
        text: s.textContent.trim(),
        color: getComputedStyle(s).color,
        background: background(s),
      })),
    };
  }, idSelector);
}

/** The table is wholly visible: inside the viewport, not scrolled sideways, and not
 * overlapped by the filter column. */
function checkTableVisible(layout, what) {
  const { table, filter, results, viewport, pageScrollWidth } = layout;
  check(table, `${what}: the table is shown`);
  check(table.right <= viewport, `${what}: table's right edge ${table.right} is inside the viewport ${viewport}`);
  check(pageScrollWidth <= viewport, `${what}: the page does not scroll sideways (${pageScrollWidth} > ${viewport})`);
  check(results.scrollWidth <= results.clientWidth, `${what}: nothing of the table is hidden in its scroll box (${results.scrollWidth} > ${results.clientWidth})`);
  const overlaps = filter && filter.left < table.right && table.left < filter.right && filter.top < table.bottom && table.top < filter.bottom;
  check(!overlaps, `${what}: the filter column overlaps the table: ${JSON.stringify({ table, filter })}`);
}

async function shot(page, name) {
  const file = path.join(args.artifacts, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

/** Both live lists at 1280 px: readable, unclipped, and useful before a tenant is chosen. */
scenarios["admin-lists"] = async function adminLists({ page, baseUrl }) {
  const user = process.env.ADMIN_USER;
  const password = process.env.ADMIN_PASSWORD;
  const target = process.env.TARGET_USER;
  check(user && password && target, "ADMIN_USER, ADMIN_PASSWORD and TARGET_USER are required");
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.goto(`${baseUrl}/admin/login/?next=/admin/`);
  await page.fill("#id_username", user);
  await page.fill("#id_password", password);
  await page.click("input[type=submit]");
  await page.waitForURL(/\/admin\/$/);

  await page.goto(`${baseUrl}/admin/live/connections/`);
  const overview = await page.$$eval("#live-tenants tbody tr", (rows) =>
    rows.map((r) => ({
      tenant: r.querySelector("a")?.textContent.trim(),
      href: r.querySelector("a")?.getAttribute("href"),
      live: r.querySelector("td.field-live")?.textContent.trim(),
    })),
  );
  const shots = [await shot(page, "admin-connections-no-tenant-1280")];

  await page.goto(`${baseUrl}/admin/live/connections/?tenant=demo`);
  await page.waitForSelector("#result_list");
  const connections = await listLayout(page, "th.field-connection_id a");
  shots.push(await shot(page, "admin-connections-1280"));
  checkTableVisible(connections, "Live connections");

  await page.goto(`${baseUrl}/admin/live/requests/?tenant=demo&user=${encodeURIComponent(target)}`);
  await page.waitForSelector("#result_list");
  const requests = await listLayout(page, "th.field-request_id a");
  shots.push(await shot(page, "admin-requests-1280"));
  checkTableVisible(requests, "Requests");
  for (const id of requests.ids) check(id.lines === 1, `request id ${id.text} wraps over ${id.lines} lines`);
  const statuses = requests.statuses.map((s) => ({ ...s, contrast: Number(contrast(s.color, s.background).toFixed(2)) }));
  for (const s of statuses) check(s.contrast >= 4.5, `status ${s.text}: contrast ${s.contrast} of ${s.color} on ${s.background}`);
  return {
    overview,
    connections: { ids: connections.ids, table: connections.table, viewport: connections.viewport },
    requests: { ids: requests.ids, statuses, table: requests.table },
    screenshots: shots,
  };
};

/** The log lines of a job row: [{seq, text}] in page order. */
async function logLines(page, id) {
  return page.$$eval(`#jobs > li[data-request-id="${id}"] [data-role=log] > li`, (items) =>
    items.map((li) => ({ seq: Number(li.dataset.seq), text: li.textContent })),
  );
}

/** A report's live log survives a reload: the lines written before it come back (from
 * storage), new ones follow live, in seq order, none twice, until the report ends. */
scenarios["output-log"] = async function outputLog({ page, baseUrl }) {
  await page.goto(`${baseUrl}/?user=${uniqueUser("log")}`);
  await waitConnected(page);
  const id = await startReport(page, 8);
  const before = await until(async () => {
    const lines = await logLines(page, id);
    return lines.length >= 2 ? lines : null;
  }, "two log lines before the reload", 20000);
  check((await jobById(page, id)).state !== "completed", "still running at the reload");
  await stateShot(page, "log-before-reload");
  await page.reload();
  await waitConnected(page);
  let runningAfterReload = false;
  const done = await until(async () => {
    const j = await jobById(page, id);
    if (j && j.state === "running") runningAfterReload = true;
    return j && j.state === "completed" ? j : null;
  }, "the resumed report to complete", 30000);
  await page.waitForTimeout(800); // a repeated or late line would show up by now
  const after = await logLines(page, id);
  const seqs = after.map((l) => l.seq);
  check(seqs.every((seq, i) => seq === i + 1), `log in seq order from 1, no gap or repeat: ${seqs.join(",")}`);
  for (const line of before) {
    check(after[line.seq - 1] && after[line.seq - 1].text === line.text, `line ${line.seq} shown again: ${line.text}`);
  }
  check(after.length > before.length, `new lines after the reload (${before.length} → ${after.length})`);
  check(runningAfterReload, "the report was followed live after the reload");
  check(/connections/.test(after[after.length - 1].text), `the last line is the report's last: ${after[after.length - 1].text}`);
  check(done.settled === 1, `settled ${done.settled} times`);
  await stateShot(page, "log-after-reload");
  return { id, before: before.length, after: after.length };
};

// --- main -------------------------------------------------------------------------------

async function main() {
  const scenario = scenarios[args.scenario];
  if (!scenario) throw new Error(`unknown scenario ${args.scenario}; known: ${Object.keys(scenarios).join(", ")}`);
  const baseUrl = (args["base-url"] || "").replace(/\/$/, "");
  if (!baseUrl) throw new Error("--base-url is required");
  mkdirSync(args.artifacts, { recursive: true });
  const userDataDir = mkdtempSync(path.join(tmpdir(), "streamer-chromium-"));
  const proxy = await startProxy(Number(new URL(baseUrl).port));
  const consoleLines = [];
  let context;
  let page;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: args.chromium,
      headless: true,
      args: LAUNCH_ARGS,
      viewport: { width: 1100, height: 900 },
      timeout: 30000,
    });
    context.setDefaultTimeout(15000);
    page = context.pages()[0] || (await context.newPage());
    page.on("console", (m) => consoleLines.push(`[${m.type()}] ${m.text()}`));
    page.on("pageerror", (e) => consoleLines.push(`[pageerror] ${e.message}`));
    let timer;
    const outcome = await Promise.race([
      scenario({ page, baseUrl, proxy }),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Failure(`scenario took more than ${args.timeout} ms`)), Number(args.timeout));
      }),
    ]).finally(() => clearTimeout(timer));
    const pageErrors = consoleLines.filter((l) => l.startsWith("[pageerror]"));
    check(pageErrors.length === 0, `errors in the page: ${pageErrors.join(" | ")}`);
    process.stdout.write(`${JSON.stringify({ ok: true, scenario: args.scenario, ...outcome })}\n`);
    return 0;
  } catch (error) {
    let screenshot = null;
    if (page) {
      screenshot = path.join(args.artifacts, `${args.scenario}-failure.png`);
      try {
        await page.screenshot({ path: screenshot, fullPage: true });
        writeFileSync(path.join(args.artifacts, `${args.scenario}-failure.html`), await page.content());
      } catch {
        screenshot = null;
      }
    }
    const message = error instanceof Failure ? error.message : String(error && error.stack ? error.stack : error);
    process.stdout.write(`${JSON.stringify({ ok: false, scenario: args.scenario, error: message, screenshot, console: consoleLines.slice(-40) })}\n`);
    return 1;
  } finally {
    if (context) await context.close().catch(() => {});
    await proxy.close();
    rmSync(userDataDir, { recursive: true, force: true });
  }
}

const code = await main();
// Exit now: nothing of the scenario may keep the process (and the test) waiting.
process.exit(code);
