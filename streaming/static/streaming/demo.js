// The Streamer demo page (streaming/templates/streaming/index.html), on the JS client.
import { StreamerClient, StreamerError, newRequestId } from "./streamer-client.js";

const config = JSON.parse(document.getElementById("streamer-config").textContent);
const $ = (id) => document.getElementById(id);

const el = {
  connState: $("conn-state"),
  connText: $("conn-text"),
  tokenForm: $("token-form"),
  token: $("token"),
  tokenHint: $("token-hint"),
  connect: $("connect"),
  newToken: $("new-token"),
  drop: $("drop"),
  disconnect: $("disconnect"),
  connError: $("conn-error"),
  echoForm: $("echo-form"),
  echoText: $("echo-text"),
  echoOutput: $("echo-output"),
  reportForm: $("report-form"),
  duration: $("duration"),
  reportError: $("report-error"),
  serverReport: $("server-report"),
  jobs: $("jobs"),
  noJobs: $("no-jobs"),
  jobTemplate: $("job-template"),
  historyForm: $("history-form"),
  historyStatus: $("history-status"),
  historyNote: $("history-note"),
  history: $("history"),
  historyRows: $("history-rows"),
  historyMore: $("history-more"),
  messages: $("messages"),
  noMessages: $("no-messages"),
};

/** @type {StreamerClient | null} */
let client = null;
let devToken = null; // the last answer of /dev/token, when the page filled the field
let jobCount = 0;
let historyCursor = null;
let historyTimer = null;
const runningJobs = new Map(); // request id -> job
const shownJobs = new Map(); // request id -> job, every row of the page (running or not)

// --- connection -----------------------------------------------------------------------

const STATE_TEXT = {
  idle: "Not connected",
  connecting: "Connecting…",
  open: "Connected",
  reconnecting: "Reconnecting…",
  closed: "Disconnected",
};

function showConnState(state, text) {
  el.connState.dataset.state = state;
  el.connText.textContent = text ?? STATE_TEXT[state] ?? state;
}

function showConnError(message) {
  el.connError.textContent = message;
  el.connError.hidden = false;
}

function hideConnError() {
  el.connError.hidden = true;
  el.connError.textContent = "";
}

const CONNECTION_ERRORS = {
  UNAUTHORIZED: [
    "Token rejected",
    "The server rejected this token: it is invalid or has expired. Paste a valid token" +
      (config.devTokenUrl ? " (or get a new development token)" : "") +
      " and connect again.",
  ],
  TENANT_FORBIDDEN: [
    "Tenant refused",
    "The token's tenant is unknown or disabled. Ask an administrator to enable it, or use a token of another tenant.",
  ],
  TOO_MANY_CONNECTIONS: [
    "Connection limit reached",
    "Your tenant has reached its connection limit. Close other tabs or clients and connect again later.",
  ],
  CONNECTION_LOST: ["Server unreachable", "The server cannot be reached. Check that it is running and connect again."],
};

async function fetchDevToken() {
  if (!config.devTokenUrl) return null;
  const url = new URL(config.devTokenUrl, location.href);
  const user = new URLSearchParams(location.search).get("user");
  if (user) url.searchParams.set("user", user);
  const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
  if (!response.ok) return null;
  return response.json();
}

/** The client calls this before every (re)connection. */
async function getToken() {
  const field = el.token.value.trim();
  if (devToken && field === devToken.token) {
    // The page filled this token in: get a fresh one for each connection.
    try {
      const fresh = await fetchDevToken();
      if (fresh) {
        useDevToken(fresh);
        return fresh.token;
      }
    } catch {
      /* keep the one we have */
    }
  }
  return field;
}

function useDevToken(answer) {
  devToken = answer;
  el.token.value = answer.token;
  el.tokenHint.textContent =
    `Development token for user “${answer.user_id}” of tenant “${answer.tenant_id}”, ` +
    `filled in by this development server (valid ${Math.round(answer.expires_in / 60)} minutes). ` +
    "You can paste another token instead.";
}

function connect() {
  const previous = client;
  client = null;
  hideConnError();
  if (previous) previous.close();
  if (!el.token.value.trim()) {
    showConnState("idle");
    showConnError("Paste an access token first.");
    el.token.focus();
    return;
  }
  const c = new StreamerClient(config.wsPath, {
    getToken,
    heartbeatMs: 20000,
    backoff: { initialMs: 300, maxMs: 10000, factor: 2, jitter: 0.5 },
  });
  client = c;
  c.addEventListener("state", (event) => {
    if (c !== client) return;
    onState(event.detail);
  });
  c.addEventListener("reconnect", (event) => {
    if (c !== client) return;
    const { attempt, delayMs } = event.detail;
    showConnState("reconnecting", `Reconnecting in ${(delayMs / 1000).toFixed(1)} s (attempt ${attempt})…`);
  });
  c.addEventListener("error", (event) => {
    if (c !== client) return;
    const error = event.detail;
    const [short, long] = CONNECTION_ERRORS[error.code] ?? ["Connection error", error.message];
    if (c.state === "closed" || error.code !== "TOO_MANY_CONNECTIONS") {
      showConnState("error", short);
    }
    showConnError(long);
  });
  c.addEventListener("message", (event) => {
    if (c === client) addMessage(event.detail);
  });
  // Every request of this user shows up here, however it was started (another tab,
  // "Start one on the server"): request.watch.
  c.addEventListener("request", (event) => {
    if (c === client) followWatched(c, event.detail);
  });
  c.watch().catch(() => {
    /* an older server without request.watch: the page still follows its own reports */
  });
  c.connect().catch(() => {
    /* shown by the error event */
  });
  // Reports followed by the previous client (or by none) are followed by this one.
  for (const job of runningJobs.values()) follow(job);
  updateButtons();
}

function onState(state) {
  updateButtons();
  if (state === "closed") {
    if (el.connState.dataset.state !== "error") showConnState("closed");
    for (const job of runningJobs.values()) note(job, "Disconnected: the report goes on running on the server; reconnect to follow it.");
    return;
  }
  showConnState(state);
  if (state === "reconnecting") {
    for (const job of runningJobs.values()) {
      job.dropped = true;
      note(job, "Connection lost: waiting to reconnect…");
    }
  } else if (state === "open") {
    hideConnError();
    for (const job of runningJobs.values()) {
      if (job.dropped) note(job, "Reconnected: resumed following this report.");
    }
    scheduleHistoryRefresh(0);
  }
}

function updateButtons() {
  const state = client ? client.state : "idle";
  el.drop.disabled = state !== "open";
  el.disconnect.disabled = !client || state === "closed";
  el.connect.textContent = client && state !== "closed" ? "Reconnect with this token" : "Connect";
}

// --- echo -------------------------------------------------------------------------------

function requireClient(errorTarget) {
  if (client && client.state !== "closed") return true;
  errorTarget.textContent = "Connect first (see Connection above).";
  errorTarget.hidden = false;
  return false;
}

async function sendEcho(event) {
  event.preventDefault();
  if (!requireClient(el.echoOutput)) return;
  const started = performance.now();
  el.echoOutput.textContent = "Sending…";
  try {
    const data = await client.request("echo", { text: el.echoText.value });
    const ms = Math.round(performance.now() - started);
    el.echoOutput.textContent = `Answer in ${ms} ms:\n${JSON.stringify(data, null, 2)}`;
  } catch (error) {
    el.echoOutput.textContent = describeError(error);
  }
}

function describeError(error) {
  if (error instanceof StreamerError) {
    const fields = error.details && Array.isArray(error.details.errors)
      ? ` (${error.details.errors.map((e) => `${e.field}: ${e.message}`).join("; ")})`
      : "";
    return `${error.message}${fields} [${error.code}]`;
  }
  return String(error && error.message ? error.message : error);
}

// --- reports ------------------------------------------------------------------------------

const STORAGE_KEY = "streamer-demo-running-jobs";
const RECENT_JOBS = 10; // reports a reload shows again (running or ended)

function startReport(event) {
  event.preventDefault();
  el.reportError.hidden = true;
  if (!requireClient(el.reportError)) return;
  const duration = Number(el.duration.value);
  if (el.duration.value.trim() === "" || !Number.isFinite(duration) || duration < 0 || duration > 600) {
    el.reportError.textContent = "The duration must be a number of seconds from 0 to 600.";
    el.reportError.hidden = false;
    el.duration.focus();
    return;
  }
  const job = createJobRow(newRequestId(), duration, jobCount + 1);
  follow(job);
}

/**
 * Follow `job` with the current client: send it the first time, afterwards (a new
 * client after "Reconnect with this token", or after a page reload) resume it by id.
 */
function follow(job) {
  const c = client;
  job.client = c;
  job.controller = new AbortController();
  runningJobs.set(job.id, job);
  saveJobs();
  const options = {
    signal: job.controller.signal,
    onProgress: ({ percentage, message }) => {
      if (job.client === c) showProgress(job, percentage, message);
    },
    // In seq order, once each, also across reconnections; a resume replays what this
    // row has not shown yet (all of it after a reload) from storage, then goes on live.
    onOutput: (chunk, seq) => {
      if (job.client === c) appendLog(job, seq, chunk);
    },
  };
  let outcome;
  if (job.sent) {
    outcome = c.resume(job.id, { ...options, afterSeq: job.lastSeq });
  } else {
    job.sent = true;
    const steps = Math.max(1, Math.min(100, Math.ceil(job.duration * 4)));
    outcome = c.request("generate_report", { duration_s: job.duration, steps }, {
      ...options,
      id: job.id,
      onAcknowledged: () => setJobStatus(job, "queued", "Queued", "Queued: waiting for a worker…"),
    });
  }
  settleWhenDone(job, c, outcome);
}

/** Show how a followed report ends (unless a newer client follows it by then). */
function settleWhenDone(job, c, outcome) {
  outcome.then(
    (result) => {
      if (job.client === c) finishJob(job, "completed", "Completed", summarize(result));
    },
    (error) => {
      if (job.client !== c) return; // followed by a newer client now
      const code = error instanceof StreamerError ? error.code : "";
      if (code === "CANCELLED") {
        finishJob(job, "cancelled", "Cancelled", "Cancelled before it finished.");
      } else if (code === "CLOSED" || code === "UNAUTHORIZED" || code === "TENANT_FORBIDDEN" || code === "TOO_MANY_CONNECTIONS") {
        // The connection ended, not the job: it goes on running on the server.
        job.client = null;
        note(job, "Not followed any more: the report goes on running on the server. Connect again to follow it.");
      } else if (code === "NOT_FOUND") {
        finishJob(job, "failed", "Not found", "This report is not known for the current user.");
      } else {
        finishJob(job, "failed", "Failed", `Failed: ${describeError(error)}`);
      }
    },
  );
}

/** A report this page did not send (another tab, the server), announced by watch(). */
function followWatched(c, watched) {
  if (runningJobs.has(watched.requestId)) return;
  const job = createJobRow(watched.requestId, null, jobCount + 1, watched.action);
  job.sent = true;
  job.client = c;
  runningJobs.set(job.id, job);
  saveJobs();
  setJobStatus(job, "queued", "Queued", "Started elsewhere; followed through request.watch…");
  watched
    .onProgress(({ percentage, message }) => {
      if (job.client === c) showProgress(job, percentage, message);
    })
    .onOutput((chunk, seq) => {
      if (job.client === c) appendLog(job, seq, chunk);
    });
  settleWhenDone(job, c, watched.result);
}

async function startServerReport() {
  el.reportError.hidden = true;
  if (!requireClient(el.reportError)) return;
  try {
    const response = await fetch(config.serverReportUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ duration_s: Number(el.duration.value) || 0 }),
    });
    if (!response.ok) {
      const answer = await response.json().catch(() => ({}));
      throw new Error(answer.error || `HTTP ${response.status}`);
    }
  } catch (error) {
    el.reportError.textContent = `The server could not start a report: ${describeError(error)}`;
    el.reportError.hidden = false;
  }
}

/** Remember the page's most recent reports (running or ended), so a reload shows them again. */
function saveJobs() {
  try {
    const list = [...shownJobs.values()]
      .sort((a, b) => b.number - a.number)
      .slice(0, RECENT_JOBS)
      .map(({ id, duration, number, action }) => ({ id, duration, number, action }));
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify(list));
  } catch {
    /* storage unavailable: reloads just forget the jobs */
  }
}

/** The reports remembered by saveJobs: shown again and resumed, each with its whole log
 * (replayed from the server's storage), running ones then followed live. */
function restoreJobs() {
  let list = [];
  try {
    list = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || "[]");
  } catch {
    list = [];
  }
  for (const saved of list.reverse()) {
    if (!saved || typeof saved.id !== "string") continue;
    const duration = saved.duration === null ? null : Number(saved.duration) || 0;
    const job = createJobRow(saved.id, duration, Number(saved.number) || jobCount + 1, saved.action);
    job.sent = true;
    setJobStatus(job, "queued", "Resuming", "Fetching its state…");
    note(job, "Shown again after the page was reloaded: its log so far comes from the server.");
    follow(job);
  }
}

function createJobRow(id, duration, number, action = "generate_report") {
  jobCount = Math.max(jobCount, number);
  const row = el.jobTemplate.content.firstElementChild.cloneNode(true);
  const part = (role) => row.querySelector(`[data-role="${role}"]`);
  const job = {
    id,
    row,
    number,
    duration,
    sent: false,
    client: null,
    controller: null,
    dropped: false,
    progress: row.querySelector("progress"),
    badge: part("badge"),
    pct: part("pct"),
    message: part("message"),
    note: part("note"),
    result: part("result"),
    cancel: part("cancel"),
    log: part("log"),
    lastSeq: 0, // the seq of the last log line shown
    action,
  };
  shownJobs.set(id, job);
  row.dataset.requestId = id;
  row.querySelector(".job-title").textContent = duration === null
    ? `Report #${number} · ${action}, started elsewhere`
    : `Report #${number} · ${duration} s`;
  job.progress.setAttribute("aria-label", `Report #${number} progress`);
  job.log.setAttribute("aria-label", `Report #${number} log`);
  part("id").textContent = id;
  job.cancel.setAttribute("aria-label", `Cancel report #${number}`);
  job.cancel.addEventListener("click", async () => {
    job.cancel.disabled = true;
    job.cancel.textContent = "Cancelling…";
    if (job.client && job.controller) {
      job.controller.abort();
    } else if (client && client.state !== "closed") {
      try {
        await client.cancel(job.id);
        finishJob(job, "cancelled", "Cancelled", "Cancelled before it finished.");
      } catch (error) {
        note(job, `Could not cancel: ${describeError(error)}`);
        job.cancel.disabled = false;
        job.cancel.textContent = "Cancel";
      }
    } else {
      note(job, "Connect first to cancel this report.");
      job.cancel.disabled = false;
      job.cancel.textContent = "Cancel";
    }
  });
  setJobStatus(job, "sending", "Sending", "Sending the request…");
  el.jobs.prepend(row);
  el.noJobs.hidden = true;
  return job;
}

function setJobStatus(job, state, label, message) {
  if (job.row.dataset.settledCount !== "0") return;
  job.row.dataset.state = state;
  job.badge.dataset.status = state;
  job.badge.textContent = label;
  if (message !== undefined) job.message.textContent = message;
}

function showProgress(job, percentage, message) {
  const pct = Math.max(0, Math.min(100, percentage));
  job.progress.value = pct;
  job.pct.textContent = `${Math.round(pct)}%`;
  setJobStatus(job, "running", "Running", message || "Working…");
}

/** One chunk of the report's output stream as a line of its log (numbered by seq). */
function appendLog(job, seq, chunk) {
  if (seq <= job.lastSeq) return; // shown already (a newer client replays from the start)
  job.lastSeq = seq;
  const log = job.log;
  const following = log.hidden || log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
  const line = document.createElement("li");
  line.value = seq;
  line.dataset.seq = String(seq);
  line.textContent = logText(chunk);
  log.append(line);
  log.hidden = false;
  if (following) log.scrollTop = log.scrollHeight; // keep the newest line in view
}

function logText(chunk) {
  if (typeof chunk === "string") return chunk;
  if (chunk && typeof chunk.line === "string") return chunk.line;
  return JSON.stringify(chunk);
}

function note(job, text) {
  job.note.textContent = text;
  job.note.hidden = false;
}

function finishJob(job, state, label, text) {
  // Counts every outcome that reaches the page (the tests check it is exactly one);
  // only the first is shown.
  const count = Number(job.row.dataset.settledCount) + 1;
  job.row.dataset.settledCount = String(count);
  if (count > 1) return;
  runningJobs.delete(job.id);
  job.row.dataset.state = state;
  job.badge.dataset.status = state;
  job.badge.textContent = label;
  if (state === "completed") {
    job.progress.value = 100;
    job.pct.textContent = "100%";
    job.message.textContent = "Done.";
  } else {
    job.message.textContent = state === "cancelled" ? "Stopped." : "Stopped with an error.";
  }
  job.result.textContent = text;
  job.result.hidden = false;
  job.cancel.hidden = true;
  scheduleHistoryRefresh(300);
}

function seconds(value) {
  return value === null || value === undefined ? "n/a" : `${Number(value).toFixed(2)} s`;
}

function summarize(result) {
  if (!result || typeof result !== "object" || !result.requests) return "Completed.";
  const r = result.requests;
  const byStatus = Object.entries(r.by_status || {})
    .map(([status, n]) => `${n} ${status.toLowerCase()}`)
    .join(", ");
  const open = result.connections ? result.connections.open : 0;
  return (
    `Completed: analysed ${r.total} past request${r.total === 1 ? "" : "s"}` +
    (byStatus ? ` (${byStatus})` : "") +
    `; ${open} open connection${open === 1 ? "" : "s"}; median completion ${seconds(r.completion_s && r.completion_s.p50)}` +
    `; took ${seconds(result.duration_s)}.`
  );
}

// --- past requests ---------------------------------------------------------------------

function scheduleHistoryRefresh(delayMs) {
  clearTimeout(historyTimer);
  historyTimer = setTimeout(() => loadHistory(false), delayMs);
}

async function loadHistory(more) {
  if (!client || client.state !== "open") {
    el.historyNote.textContent = "Connect to see your requests.";
    return;
  }
  const payload = { limit: 10 };
  if (el.historyStatus.value) payload.status = el.historyStatus.value;
  if (more && historyCursor) payload.cursor = historyCursor;
  el.historyNote.textContent = "Loading…";
  try {
    const page = await client.request("request.list", payload);
    if (!more) el.historyRows.replaceChildren();
    for (const record of page.requests) el.historyRows.append(historyRow(record));
    historyCursor = page.cursor;
    el.historyMore.hidden = !historyCursor;
    const shown = el.historyRows.children.length;
    el.history.hidden = shown === 0;
    el.historyNote.textContent = shown === 0
      ? "No requests yet."
      : `${shown} request${shown === 1 ? "" : "s"} shown, newest first. Updated ${new Date().toLocaleTimeString()}.`;
  } catch (error) {
    el.historyNote.textContent = `Could not load your requests: ${describeError(error)}`;
  }
}

function historyRow(record) {
  const tr = document.createElement("tr");
  tr.dataset.requestId = record.request_id;
  const cell = (content) => {
    const td = document.createElement("td");
    if (content instanceof Node) td.append(content);
    else td.textContent = content;
    tr.append(td);
  };
  const code = document.createElement("code");
  code.textContent = record.request_id.length > 13 ? `${record.request_id.slice(0, 8)}…` : record.request_id;
  code.title = record.request_id;
  cell(code);
  cell(record.action);
  const badge = document.createElement("span");
  badge.className = "badge";
  badge.dataset.status = record.status;
  badge.textContent = record.status.toLowerCase();
  cell(badge);
  cell(`${Math.round(record.percentage ?? 0)}%`);
  cell(record.created_at ? new Date(record.created_at).toLocaleTimeString() : "");
  let outcome = "";
  if (record.status === "COMPLETED" && record.result && record.result.requests) {
    const total = record.result.requests.total;
    outcome = `${total} request${total === 1 ? "" : "s"} analysed`;
  } else if (record.status === "COMPLETED") {
    outcome = "completed";
  } else if (record.error) {
    outcome = `${record.error.code}: ${record.error.message}`;
  } else {
    outcome = record.message || "";
  }
  cell(outcome);
  return tr;
}

// --- server messages -----------------------------------------------------------------

function addMessage(frame) {
  const li = document.createElement("li");
  const { timestamp, ...rest } = frame;
  const when = new Date(timestamp || Date.now()).toLocaleTimeString();
  const code = document.createElement("code");
  code.textContent = JSON.stringify(rest);
  li.append(`${when} `, code);
  el.messages.prepend(li);
  while (el.messages.children.length > 20) el.messages.lastElementChild.remove();
  el.noMessages.hidden = true;
}

// --- wiring -------------------------------------------------------------------------

el.token.addEventListener("input", () => {
  if (devToken && el.token.value.trim() === devToken.token) return;
  el.tokenHint.textContent =
    "Your own token: it is used as it is for every connection. Connect to use it.";
});
el.tokenForm.addEventListener("submit", (event) => {
  event.preventDefault();
  connect();
});
el.newToken.addEventListener("click", async () => {
  try {
    const answer = await fetchDevToken();
    if (!answer) throw new Error("no token");
    useDevToken(answer);
    connect();
  } catch {
    showConnError("This server does not hand out development tokens. Paste a token instead.");
  }
});
el.drop.addEventListener("click", () => {
  if (client) client.dropConnection();
});
el.disconnect.addEventListener("click", () => {
  if (!client) return;
  client.close();
  updateButtons();
});
el.echoForm.addEventListener("submit", sendEcho);
el.reportForm.addEventListener("submit", startReport);
el.serverReport.addEventListener("click", startServerReport);
el.serverReport.hidden = !config.serverReportUrl;
el.historyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  loadHistory(false);
});
el.historyMore.addEventListener("click", () => loadHistory(true));

async function init() {
  if (config.devTokenUrl) {
    el.newToken.hidden = false;
    try {
      const answer = await fetchDevToken();
      if (answer) {
        useDevToken(answer);
        connect();
        restoreJobs();
        return;
      }
    } catch {
      /* fall through: paste a token */
    }
    el.newToken.hidden = true;
  }
  el.tokenHint.textContent = "Paste an access token (JWT) for your tenant, then connect.";
}

init();
