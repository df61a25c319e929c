// Unit tests of clients/js/src/streamer-client.js: `node --test tests/js/`.
// A fake WebSocket class and a fake clock stand in for the network and for time.
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";

import {
  StreamerClient,
  StreamerError,
  backoffDelay,
  tokenExpiresAt,
} from "../../clients/js/src/streamer-client.js";

// --- fakes ---------------------------------------------------------------------------

class FakeClock {
  constructor() {
    this.now = 0;
    this.timers = new Map();
    this.nextId = 1;
  }
  setTimeout = (fn, ms) => {
    const id = this.nextId++;
    this.timers.set(id, { fn, at: this.now + Math.max(0, ms), every: null });
    return id;
  };
  clearTimeout = (id) => {
    this.timers.delete(id);
  };
  setInterval = (fn, ms) => {
    const id = this.nextId++;
    this.timers.set(id, { fn, at: this.now + ms, every: ms });
    return id;
  };
  clearInterval = (id) => {
    this.timers.delete(id);
  };
  /** Run every timer due within `ms`, in time order. */
  async advance(ms) {
    const end = this.now + ms;
    for (;;) {
      let nextId = null;
      let next = null;
      for (const [id, t] of this.timers) {
        if (t.at <= end && (next === null || t.at < next.at)) {
          next = t;
          nextId = id;
        }
      }
      if (next === null) break;
      this.now = next.at;
      if (next.every) next.at += next.every;
      else this.timers.delete(nextId);
      next.fn();
      await flush();
    }
    this.now = end;
    await flush();
  }
  /** Delays of the pending one-shot timers. */
  pendingDelays() {
    return [...this.timers.values()].filter((t) => !t.every).map((t) => t.at - this.now);
  }
}

class FakeWebSocket {
  static instances = [];
  static autoPong = true;

  constructor(url) {
    this.url = url;
    this.sent = [];
    this.closed = null;
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    FakeWebSocket.instances.push(this);
  }
  static get last() {
    return FakeWebSocket.instances.at(-1);
  }
  get token() {
    return new URL(this.url).searchParams.get("token");
  }
  /** Parsed frames the client sent. */
  get frames() {
    return this.sent.map((s) => JSON.parse(s));
  }
  framesOf(type) {
    return this.frames.filter((f) => (f.type ?? "request") === type);
  }
  requests(action) {
    return this.framesOf("request").filter((f) => !action || f.action === action);
  }
  send(data) {
    if (this.closed) throw new Error("send on a closed socket");
    this.sent.push(data);
    const frame = JSON.parse(data);
    if (frame.type === "ping" && FakeWebSocket.autoPong) {
      queueMicrotask(() => this.receive({ type: "pong", timestamp: 1 }));
    }
  }
  close(code = 1000, reason = "") {
    if (this.closed) return;
    this.closed = { code, reason, by: "client" };
    queueMicrotask(() => this.onclose?.({ code, reason, wasClean: true }));
  }
  // server side
  open() {
    this.onopen?.({});
  }
  receive(frame) {
    if (this.closed) return;
    this.onmessage?.({ data: JSON.stringify({ timestamp: 1, ...frame }) });
  }
  serverClose(code = 1006, reason = "") {
    this.closed = { code, reason, by: "server" };
    this.onclose?.({ code, reason, wasClean: code !== 1006 });
  }
}

function flush() {
  return new Promise((resolve) => setImmediate(resolve));
}

let clock;

function makeClient(options = {}) {
  return new StreamerClient("ws://streamer.test/ws", {
    token: "tok",
    WebSocket: FakeWebSocket,
    heartbeatMs: 0,
    random: () => 0.5,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    setInterval: clock.setInterval,
    clearInterval: clock.clearInterval,
    now: () => clock.now,
    ...options,
  });
}

/** Connect `client` and answer the opening handshake; returns its socket. */
async function connected(client) {
  const done = client.connect();
  await flush();
  const ws = FakeWebSocket.last;
  ws.open();
  await flush();
  await done;
  return ws;
}

function states(client) {
  const seen = [];
  client.addEventListener("state", (e) => seen.push(e.detail));
  return seen;
}

/** Records how many times a promise settled, and how. */
function track(promise) {
  const t = { count: 0, value: undefined, error: undefined };
  promise.then(
    (v) => {
      t.count += 1;
      t.value = v;
    },
    (e) => {
      t.count += 1;
      t.error = e;
    },
  );
  return t;
}

beforeEach(() => {
  clock = new FakeClock();
  FakeWebSocket.instances = [];
  FakeWebSocket.autoPong = true;
});

afterEach(() => {
  FakeWebSocket.instances = [];
});

// --- tests ---------------------------------------------------------------------------

describe("connection", () => {
  it("is open only after the server answered the opening ping; token in the URL", async () => {
    const client = makeClient();
    const seen = states(client);
    FakeWebSocket.autoPong = false;
    const done = client.connect();
    await flush();
    const ws = FakeWebSocket.last;
    assert.equal(ws.token, "tok");
    assert.equal(new URL(ws.url).pathname, "/ws");
    ws.open();
    await flush();
    assert.deepEqual(seen, ["connecting"]);
    assert.deepEqual(ws.framesOf("ping").length, 1);
    ws.receive({ type: "pong" });
    await done;
    assert.deepEqual(seen, ["connecting", "open"]);
    assert.equal(client.state, "open");
  });

  it("queues requests made before the socket is open and sends them once open", async () => {
    const client = makeClient();
    const echo = client.request("echo", { a: 1 }, { id: "e1" });
    await flush();
    const ws = FakeWebSocket.last;
    assert.equal(ws.requests().length, 0);
    ws.open();
    await flush();
    assert.deepEqual(ws.requests("echo")[0], { type: "request", id: "e1", action: "echo", payload: { a: 1 } });
    ws.receive({ type: "response", request_id: "e1", success: true, data: { echo: { a: 1 } } });
    assert.deepEqual(await echo, { echo: { a: 1 } });
  });

  it("emits 'message' for frames that are not about a pending request", async () => {
    const client = makeClient();
    const ws = await connected(client);
    const messages = [];
    client.addEventListener("message", (e) => messages.push(e.detail));
    ws.receive({ type: "message", data: { text: "hello" } });
    ws.receive({ type: "progress", request_id: "someone-elses", percentage: 5, message: "" });
    ws.receive({ type: "error", request_id: null, error: { code: "INVALID_MESSAGE", message: "Bad", retryable: false } });
    ws.receive({ type: "pong" });
    assert.deepEqual(messages.map((m) => m.type), ["message", "progress", "error"]);
    assert.deepEqual(messages[0].data, { text: "hello" });
  });

  it("close() rejects pending requests with CLOSED and never reconnects", async () => {
    const client = makeClient();
    const seen = states(client);
    const ws = await connected(client);
    const pending = client.request("echo", {});
    client.close();
    await assert.rejects(pending, (e) => e instanceof StreamerError && e.code === "CLOSED");
    assert.equal(ws.closed.code, 1000);
    await clock.advance(60000);
    assert.equal(FakeWebSocket.instances.length, 1);
    assert.equal(seen.at(-1), "closed");
    await assert.rejects(client.request("echo", {}), (e) => e.code === "CLOSED");
  });
});

describe("requests", () => {
  it("correlates answers by id, whatever their order", async () => {
    const client = makeClient();
    const ws = await connected(client);
    const a = client.request("echo", { n: 1 });
    const b = client.request("echo", { n: 2 });
    const c = client.request("echo", { n: 3 }, { id: "mine", metadata: { trace: "x" } });
    const [fa, fb, fc] = ws.requests("echo");
    assert.match(fa.id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.notEqual(fa.id, fb.id);
    assert.equal(fc.id, "mine");
    assert.deepEqual(fc.metadata, { trace: "x" });
    ws.receive({ type: "response", request_id: fc.id, success: true, data: { echo: { n: 3 } } });
    ws.receive({ type: "response", request_id: fb.id, success: true, data: { echo: { n: 2 } } });
    ws.receive({ type: "response", request_id: fa.id, success: true, data: { echo: { n: 1 } } });
    assert.deepEqual(await Promise.all([a, b, c]), [{ echo: { n: 1 } }, { echo: { n: 2 } }, { echo: { n: 3 } }]);
    assert.deepEqual(client.pendingIds, []);
  });

  it("resolves an async request with its result and reports progress in order", async () => {
    const client = makeClient();
    const ws = await connected(client);
    const progress = [];
    const acks = [];
    const job = track(
      client.request("generate_report", { duration_s: 1 }, {
        id: "r1",
        onProgress: (p) => progress.push([p.percentage, p.message]),
        onAcknowledged: (f) => acks.push(f.status),
      }),
    );
    ws.receive({ type: "acknowledgment", request_id: "r1", status: "queued", message: "Request queued" });
    ws.receive({ type: "progress", request_id: "r1", percentage: 10, message: "a" });
    ws.receive({ type: "progress", request_id: "r1", percentage: 50, message: "b", details: { step: 2 } });
    ws.receive({ type: "progress", request_id: "r1", percentage: 40, message: "stale" });
    ws.receive({ type: "complete", request_id: "r1", success: true, result: { total: 3 } });
    ws.receive({ type: "complete", request_id: "r1", success: true, result: { total: 4 } });
    await flush();
    assert.deepEqual(acks, ["queued"]);
    assert.deepEqual(progress, [[10, "a"], [50, "b"]]);
    assert.equal(job.count, 1);
    assert.deepEqual(job.value, { total: 3 });
  });

  it("rejects with a typed StreamerError carrying code, message, details, retryable, requestId", async () => {
    const client = makeClient();
    const ws = await connected(client);
    const bad = client.request("generate_report", { duration_s: -1 }, { id: "v1" });
    ws.receive({
      type: "error",
      request_id: "v1",
      error: {
        code: "VALIDATION_ERROR",
        message: "Invalid payload",
        details: { errors: [{ field: "payload.duration_s", message: "must be >= 0" }] },
        retryable: false,
      },
    });
    await assert.rejects(bad, (e) => {
      assert.ok(e instanceof StreamerError);
      assert.ok(e instanceof Error);
      assert.equal(e.name, "StreamerError");
      assert.equal(e.code, "VALIDATION_ERROR");
      assert.equal(e.message, "Invalid payload");
      assert.equal(e.details.errors[0].field, "payload.duration_s");
      assert.equal(e.retryable, false);
      assert.equal(e.requestId, "v1");
      return true;
    });
    const limited = client.request("echo", {}, { id: "v2" });
    ws.receive({ type: "error", request_id: "v2", error: { code: "RATE_LIMITED", message: "Slow down", details: { retry_after_ms: 250 }, retryable: true } });
    await assert.rejects(limited, (e) => e.code === "RATE_LIMITED" && e.retryable === true && e.details.retry_after_ms === 250);
  });

  it("rejects a second pending request with the same id", async () => {
    const client = makeClient();
    await connected(client);
    client.request("echo", {}, { id: "same" }).catch(() => {});
    await assert.rejects(client.request("echo", {}, { id: "same" }), (e) => e.code === "DUPLICATE_REQUEST");
  });

  it("rejects with TIMEOUT when timeoutMs passes", async () => {
    const client = makeClient();
    await connected(client);
    const p = client.request("echo", {}, { timeoutMs: 1000 });
    const checked = assert.rejects(p, (e) => e.code === "TIMEOUT" && e.retryable === true);
    await clock.advance(999);
    assert.deepEqual(client.pendingIds.length, 1);
    await clock.advance(1);
    await checked;
  });

  it("cancel(id) sends request.cancel and settles the pending request from the record", async () => {
    const client = makeClient();
    const ws = await connected(client);
    const job = client.request("generate_report", {}, { id: "r9" });
    ws.receive({ type: "acknowledgment", request_id: "r9", status: "queued", message: "" });
    const cancelling = client.cancel("r9");
    const cancelFrame = ws.requests("request.cancel")[0];
    assert.deepEqual(cancelFrame.payload, { request_id: "r9" });
    ws.receive({ type: "response", request_id: cancelFrame.id, success: true, data: { request_id: "r9", status: "CANCELLED", error: { code: "CANCELLED", message: "Request cancelled" } } });
    assert.equal((await cancelling).status, "CANCELLED");
    await assert.rejects(job, (e) => e.code === "CANCELLED" && e.requestId === "r9");
  });
});

describe("abort", () => {
  it("sends request.cancel for an acknowledged request and rejects with CANCELLED once", async () => {
    const client = makeClient();
    const ws = await connected(client);
    const messages = [];
    client.addEventListener("message", (e) => messages.push(e.detail));
    const controller = new AbortController();
    const job = track(client.request("generate_report", { duration_s: 30 }, { id: "r1", signal: controller.signal }));
    ws.receive({ type: "acknowledgment", request_id: "r1", status: "queued", message: "" });
    controller.abort();
    await flush();
    const cancels = ws.requests("request.cancel");
    assert.equal(cancels.length, 1);
    assert.deepEqual(cancels[0].payload, { request_id: "r1" });
    assert.equal(job.count, 1);
    assert.equal(job.error.code, "CANCELLED");
    assert.equal(job.error.requestId, "r1");
    // The server's own CANCELLED error and the cancel's response come later: ignored.
    ws.receive({ type: "error", request_id: "r1", error: { code: "CANCELLED", message: "Request cancelled", retryable: false } });
    ws.receive({ type: "response", request_id: cancels[0].id, success: true, data: { status: "CANCELLED" } });
    await flush();
    assert.equal(job.count, 1);
    assert.deepEqual(messages, []);
  });

  it("an already aborted signal rejects at once and sends nothing", async () => {
    const client = makeClient();
    const ws = await connected(client);
    await assert.rejects(
      client.request("generate_report", {}, { signal: AbortSignal.abort() }),
      (e) => e.code === "CANCELLED",
    );
    assert.equal(ws.requests().length, 0);
  });

  it("aborting before the acknowledgment cancels again when it arrives", async () => {
    const client = makeClient();
    const ws = await connected(client);
    const controller = new AbortController();
    const job = client.request("generate_report", {}, { id: "r2", signal: controller.signal });
    controller.abort();
    await assert.rejects(job, (e) => e.code === "CANCELLED");
    assert.equal(ws.requests("request.cancel").length, 1);
    ws.receive({ type: "acknowledgment", request_id: "r2", status: "queued", message: "" });
    await flush();
    assert.equal(ws.requests("request.cancel").length, 2);
    assert.deepEqual(ws.requests("request.cancel")[1].payload, { request_id: "r2" });
  });

  it("aborting an acknowledged request while offline cancels it once reconnected", async () => {
    const client = makeClient({ backoff: { initialMs: 10, jitter: 0 } });
    const ws1 = await connected(client);
    const controller = new AbortController();
    const job = client.request("generate_report", {}, { id: "off", signal: controller.signal });
    ws1.receive({ type: "acknowledgment", request_id: "off", status: "queued", message: "" });
    ws1.serverClose(1006);
    controller.abort();
    await assert.rejects(job, (e) => e.code === "CANCELLED");
    await clock.advance(10);
    const ws2 = FakeWebSocket.last;
    ws2.open();
    await flush();
    assert.deepEqual(ws2.requests("request.cancel").map((f) => f.payload), [{ request_id: "off" }]);
    assert.equal(ws2.requests("request.status").length, 0, "a settled request is not resumed");
  });

  it("aborting a request queued while offline just drops it", async () => {
    const client = makeClient();
    const controller = new AbortController();
    const job = client.request("generate_report", {}, { signal: controller.signal });
    controller.abort();
    await assert.rejects(job, (e) => e.code === "CANCELLED");
    await flush();
    const ws = FakeWebSocket.last;
    ws.open();
    await flush();
    assert.equal(ws.requests().length, 0);
  });
});

describe("backoff", () => {
  it("backoffDelay grows by factor, is capped and jittered downwards", () => {
    const b = { initialMs: 100, maxMs: 1000, factor: 2, jitter: 0.5 };
    const noJitter = [0, 1, 2, 3, 4, 5].map((n) => backoffDelay(n, b, () => 0));
    assert.deepEqual(noJitter, [100, 200, 400, 800, 1000, 1000]);
    const fullJitter = [0, 1, 2, 3, 4, 5].map((n) => backoffDelay(n, b, () => 1));
    assert.deepEqual(fullJitter, [50, 100, 200, 400, 500, 500]);
    assert.equal(backoffDelay(3, { ...b, jitter: 0 }, () => 0.9), 800);
  });

  it("schedules reconnects with the capped exponential schedule (injected random)", async () => {
    const randoms = [0, 0.5, 1, 0.25, 0, 0, 0.5];
    let i = 0;
    const client = makeClient({
      random: () => randoms[i++ % randoms.length],
      backoff: { initialMs: 100, maxMs: 1000, factor: 2, jitter: 0.5 },
    });
    const seen = states(client);
    const delays = [];
    client.addEventListener("reconnect", (e) => delays.push(e.detail.delayMs));
    const ws = await connected(client);
    ws.serverClose(1006);
    for (let n = 0; n < 6; n++) {
      const before = FakeWebSocket.instances.length;
      const delay = delays.at(-1);
      await clock.advance(delay - 1);
      assert.equal(FakeWebSocket.instances.length, before, "no attempt before the delay");
      await clock.advance(1);
      assert.equal(FakeWebSocket.instances.length, before + 1, "an attempt after the delay");
      FakeWebSocket.last.serverClose(1006); // refused again
    }
    // base 100,200,400,800,1000,1000,1000 reduced by random*jitter of itself
    assert.deepEqual(delays, [100, 150, 200, 700, 1000, 1000, 750]);
    assert.deepEqual([...new Set(seen)], ["connecting", "open", "reconnecting"]);
  });

  it("resets the schedule after a healthy connection", async () => {
    const client = makeClient({ backoff: { initialMs: 100, maxMs: 1000, factor: 2, jitter: 0 } });
    const delays = [];
    client.addEventListener("reconnect", (e) => delays.push(e.detail.delayMs));
    const ws = await connected(client);
    ws.serverClose(1006);
    await clock.advance(100);
    FakeWebSocket.last.serverClose(1006);
    await clock.advance(200);
    FakeWebSocket.last.open(); // answers the ping: healthy
    await flush();
    assert.equal(client.state, "open");
    FakeWebSocket.last.serverClose(1006);
    assert.deepEqual(delays, [100, 200, 100]);
  });

  it("asks getToken for a fresh token on every (re)connection", async () => {
    let n = 0;
    const client = makeClient({ token: undefined, getToken: async () => `token-${++n}`, backoff: { initialMs: 10, jitter: 0 } });
    const ws1 = await connected(client);
    assert.equal(ws1.token, "token-1");
    ws1.serverClose(1006);
    await clock.advance(10);
    const ws2 = FakeWebSocket.last;
    assert.equal(ws2.token, "token-2");
    ws2.serverClose(1011, "Storage unavailable");
    await clock.advance(20);
    assert.equal(FakeWebSocket.last.token, "token-3");
    assert.equal(n, 3);
  });

  it("gives up after backoff.maxAttempts", async () => {
    const client = makeClient({ backoff: { initialMs: 10, jitter: 0, maxAttempts: 2 } });
    const errors = [];
    client.addEventListener("error", (e) => errors.push(e.detail.code));
    const ws = await connected(client);
    const pending = client.request("echo", {});
    ws.serverClose(1006);
    await clock.advance(10);
    FakeWebSocket.last.serverClose(1006);
    await clock.advance(20);
    FakeWebSocket.last.serverClose(1006);
    await assert.rejects(pending, (e) => e.code === "CONNECTION_LOST");
    assert.equal(client.state, "closed");
    assert.deepEqual(errors, ["CONNECTION_LOST"]);
  });
});

describe("authentication failures", () => {
  it("4401 with a fixed token: state closed, error event, pending rejected, no retry", async () => {
    const client = makeClient();
    const seen = states(client);
    const errors = [];
    client.addEventListener("error", (e) => errors.push(e.detail));
    const opening = client.connect();
    const pending = client.request("echo", {});
    await flush();
    FakeWebSocket.autoPong = false;
    const ws = FakeWebSocket.last;
    ws.open();
    ws.serverClose(4401, "Invalid token");
    await assert.rejects(opening, (e) => e.code === "UNAUTHORIZED" && e.closeCode === 4401);
    await assert.rejects(pending, (e) => e.code === "UNAUTHORIZED");
    assert.deepEqual(seen, ["connecting", "closed"]);
    assert.equal(errors.length, 1);
    assert.equal(errors[0].code, "UNAUTHORIZED");
    await clock.advance(120000);
    assert.equal(FakeWebSocket.instances.length, 1);
  });

  it("4401 with getToken: exactly one retry with a fresh token", async () => {
    const tokens = [];
    const client = makeClient({ token: undefined, getToken: () => `t${tokens.push(1)}` });
    const errors = [];
    client.addEventListener("error", (e) => errors.push(e.detail.code));
    FakeWebSocket.autoPong = false;
    const opening = client.connect();
    await flush();
    FakeWebSocket.last.serverClose(4401);
    await clock.advance(0);
    assert.equal(FakeWebSocket.instances.length, 2);
    assert.equal(FakeWebSocket.last.token, "t2");
    FakeWebSocket.last.serverClose(4401);
    await assert.rejects(opening, (e) => e.code === "UNAUTHORIZED");
    await clock.advance(120000);
    assert.equal(FakeWebSocket.instances.length, 2);
    assert.deepEqual(errors, ["UNAUTHORIZED"]);
    assert.equal(client.state, "closed");
  });

  it("4401 then a fresh token that works: connected", async () => {
    let n = 0;
    const client = makeClient({ token: undefined, getToken: () => `t${++n}` });
    const opening = client.connect();
    await flush();
    FakeWebSocket.last.serverClose(4401);
    await clock.advance(0);
    FakeWebSocket.last.open();
    await opening;
    assert.equal(client.state, "open");
    assert.equal(FakeWebSocket.last.token, "t2");
  });

  it("4403 stops at once; 4429 retries a few times then stops", async () => {
    const c1 = makeClient();
    const opening = c1.connect();
    await flush();
    FakeWebSocket.last.serverClose(4403, "Forbidden");
    await assert.rejects(opening, (e) => e.code === "TENANT_FORBIDDEN");
    assert.equal(c1.state, "closed");

    FakeWebSocket.instances = [];
    const c2 = makeClient({ tooManyConnectionsRetries: 2, backoff: { initialMs: 10, jitter: 0 } });
    const errors = [];
    c2.addEventListener("error", (e) => errors.push(e.detail.code));
    const opening2 = c2.connect();
    const refused = assert.rejects(opening2, (e) => e.code === "TOO_MANY_CONNECTIONS");
    await flush();
    for (let n = 0; n < 3; n++) {
      FakeWebSocket.last.serverClose(4429, "Too many connections");
      await clock.advance(1000);
    }
    await refused;
    assert.equal(FakeWebSocket.instances.length, 3);
    assert.deepEqual(errors, ["TOO_MANY_CONNECTIONS", "TOO_MANY_CONNECTIONS", "TOO_MANY_CONNECTIONS"]);
    assert.equal(c2.state, "closed");
  });
});

describe("heartbeat", () => {
  it("pings every heartbeatMs and drops a socket that stopped answering", async () => {
    const client = makeClient({ heartbeatMs: 1000, backoff: { initialMs: 50, jitter: 0 } });
    const ws = await connected(client);
    assert.equal(ws.framesOf("ping").length, 1); // the opening ping
    await clock.advance(1000);
    assert.equal(ws.framesOf("ping").length, 2);
    await clock.advance(1000);
    assert.equal(ws.framesOf("ping").length, 3);
    FakeWebSocket.autoPong = false;
    await clock.advance(1000); // ping 4, no pong
    assert.equal(ws.framesOf("ping").length, 4);
    assert.equal(client.state, "open");
    await clock.advance(1000); // still nothing back: dead
    assert.equal(ws.closed.code, 4000);
    assert.equal(client.state, "reconnecting");
    FakeWebSocket.autoPong = true;
    await clock.advance(50);
    assert.equal(FakeWebSocket.instances.length, 2);
    FakeWebSocket.last.open();
    await flush();
    assert.equal(client.state, "open");
  });
});

describe("resumption", () => {
  it("resumes an acknowledged request after a drop; it resolves exactly once", async () => {
    const client = makeClient({ backoff: { initialMs: 100, jitter: 0 } });
    const seen = states(client);
    const ws1 = await connected(client);
    const progress = [];
    const job = track(client.request("generate_report", { duration_s: 3 }, { id: "r1", onProgress: (p) => progress.push(p.percentage) }));
    ws1.receive({ type: "acknowledgment", request_id: "r1", status: "queued", message: "" });
    ws1.receive({ type: "progress", request_id: "r1", percentage: 20, message: "" });
    ws1.serverClose(1006);
    await clock.advance(100);
    const ws2 = FakeWebSocket.last;
    ws2.open();
    await flush();
    assert.deepEqual(seen, ["connecting", "open", "reconnecting", "open"]);
    const status = ws2.requests("request.status");
    assert.equal(status.length, 1);
    assert.deepEqual(status[0].payload, { request_id: "r1", subscribe: true });
    assert.equal(ws2.requests("generate_report").length, 0, "not sent again");
    ws2.receive({ type: "response", request_id: status[0].id, success: true, data: { request_id: "r1", status: "PROCESSING", percentage: 60, message: "Read 3 requests" } });
    await flush();
    ws2.receive({ type: "progress", request_id: "r1", percentage: 80, message: "" });
    ws2.receive({ type: "complete", request_id: "r1", success: true, result: { ok: true } });
    ws2.receive({ type: "complete", request_id: "r1", success: true, result: { ok: "again" } });
    await flush();
    assert.deepEqual(progress, [20, 60, 80]);
    assert.equal(job.count, 1);
    assert.deepEqual(job.value, { ok: true });
  });

  it("delivers output chunks once each, in seq order, and resumes after the last one", async () => {
    const client = makeClient({ backoff: { initialMs: 100, jitter: 0 } });
    const ws1 = await connected(client);
    const chunks = [];
    const job = track(client.request("generate_report", {}, { id: "o1", onOutput: (data, seq) => chunks.push([seq, data]) }));
    ws1.receive({ type: "acknowledgment", request_id: "o1", status: "queued", message: "" });
    ws1.receive({ type: "output", request_id: "o1", seq: 1, data: "a" });
    ws1.receive({ type: "output", request_id: "o1", seq: 3, data: "c" }); // ahead: waits
    ws1.receive({ type: "output", request_id: "o1", seq: 2, data: { b: 1 } });
    ws1.receive({ type: "output", request_id: "o1", seq: 2, data: "repeat" });
    await flush();
    assert.deepEqual(chunks, [[1, "a"], [2, { b: 1 }], [3, "c"]]);
    ws1.serverClose(1006);
    await clock.advance(100);
    const ws2 = FakeWebSocket.last;
    ws2.open();
    await flush();
    const [status] = ws2.requests("request.status");
    assert.deepEqual(status.payload, { request_id: "o1", subscribe: true, after_seq: 3 });
    // It ended meanwhile: the replayed chunks come after the response, then it settles.
    ws2.receive({ type: "response", request_id: status.id, success: true, data: { request_id: "o1", status: "COMPLETED", percentage: 100, message: "", result: { n: 5 }, output_seq: 5 } });
    await flush();
    assert.equal(job.count, 0, "waits for the replay");
    ws2.receive({ type: "output", request_id: "o1", seq: 4, data: "d" });
    ws2.receive({ type: "output", request_id: "o1", seq: 5, data: "e" });
    await flush();
    assert.deepEqual(chunks.map(([seq]) => seq), [1, 2, 3, 4, 5]);
    assert.equal(job.count, 1);
    assert.deepEqual(job.value, { n: 5 });
  });

  it("resume() with onOutput replays from afterSeq", async () => {
    const client = makeClient();
    const ws = await connected(client);
    const chunks = [];
    const job = track(client.resume("old", { afterSeq: 7, onOutput: (data, seq) => chunks.push(seq) }));
    await flush();
    const [status] = ws.requests("request.status");
    assert.deepEqual(status.payload, { request_id: "old", subscribe: true, after_seq: 7 });
    ws.receive({ type: "response", request_id: status.id, success: true, data: { request_id: "old", status: "PROCESSING", percentage: 10, message: "", output_seq: 8 } });
    ws.receive({ type: "output", request_id: "old", seq: 7, data: "seen before" });
    ws.receive({ type: "output", request_id: "old", seq: 8, data: "h" });
    ws.receive({ type: "complete", request_id: "old", success: true, result: 1 });
    await flush();
    assert.deepEqual(chunks, [8]);
    assert.equal(job.count, 1);
  });

  it("settles from the record when the request finished while disconnected", async () => {
    const client = makeClient({ backoff: { initialMs: 10, jitter: 0 } });
    const messages = [];
    client.addEventListener("message", (e) => messages.push(e.detail));
    const ws1 = await connected(client);
    const done = track(client.request("generate_report", {}, { id: "ok" }));
    const failed = track(client.request("generate_report", {}, { id: "bad" }));
    ws1.receive({ type: "acknowledgment", request_id: "ok", status: "queued", message: "" });
    ws1.receive({ type: "acknowledgment", request_id: "bad", status: "queued", message: "" });
    ws1.serverClose(1006);
    await clock.advance(10);
    const ws2 = FakeWebSocket.last;
    ws2.open();
    await flush();
    const [s1, s2] = ws2.requests("request.status");
    ws2.receive({ type: "response", request_id: s1.id, success: true, data: { request_id: "ok", status: "COMPLETED", percentage: 100, message: "done", result: { total: 7 } } });
    ws2.receive({ type: "response", request_id: s2.id, success: true, data: { request_id: "bad", status: "FAILED", percentage: 40, message: "", error: { code: "PROCESSING_FAILED", message: "Boom" } } });
    await flush();
    // the subscription's terminal frame can still follow the final record: ignored
    ws2.receive({ type: "complete", request_id: "ok", success: true, result: { total: 8 } });
    await flush();
    assert.equal(done.count, 1);
    assert.deepEqual(done.value, { total: 7 });
    assert.equal(failed.count, 1);
    assert.equal(failed.error.code, "PROCESSING_FAILED");
    assert.equal(failed.error.message, "Boom");
    assert.deepEqual(messages, []);
  });

  it("a terminal frame arriving before the status answer wins; the answer is ignored", async () => {
    const client = makeClient({ backoff: { initialMs: 10, jitter: 0 } });
    const ws1 = await connected(client);
    const job = track(client.request("generate_report", {}, { id: "r" }));
    ws1.receive({ type: "acknowledgment", request_id: "r", status: "queued", message: "" });
    ws1.serverClose(1006);
    await clock.advance(10);
    const ws2 = FakeWebSocket.last;
    ws2.open();
    await flush();
    ws2.receive({ type: "error", request_id: "r", error: { code: "CANCELLED", message: "Request cancelled", retryable: false } });
    const [status] = ws2.requests("request.status");
    ws2.receive({ type: "response", request_id: status.id, success: true, data: { request_id: "r", status: "CANCELLED" } });
    await flush();
    assert.equal(job.count, 1);
    assert.equal(job.error.code, "CANCELLED");
  });

  it("keeps resuming across several drops", async () => {
    const client = makeClient({ backoff: { initialMs: 10, jitter: 0 } });
    const ws1 = await connected(client);
    const job = track(client.request("generate_report", {}, { id: "r" }));
    ws1.receive({ type: "acknowledgment", request_id: "r", status: "queued", message: "" });
    ws1.serverClose(1006);
    await clock.advance(10);
    FakeWebSocket.last.open(); // status probe sent, then dropped again before its answer
    await flush();
    FakeWebSocket.last.serverClose(1006);
    await clock.advance(20);
    const ws3 = FakeWebSocket.last;
    ws3.open();
    await flush();
    const [status] = ws3.requests("request.status");
    ws3.receive({ type: "response", request_id: status.id, success: true, data: { request_id: "r", status: "COMPLETED", result: 42 } });
    await flush();
    assert.equal(job.count, 1);
    assert.equal(job.value, 42);
  });

  it("rejects with NOT_FOUND when the server no longer knows the request", async () => {
    const client = makeClient({ backoff: { initialMs: 10, jitter: 0 } });
    const ws1 = await connected(client);
    const job = client.request("generate_report", {}, { id: "gone" });
    ws1.receive({ type: "acknowledgment", request_id: "gone", status: "queued", message: "" });
    ws1.serverClose(1006);
    await clock.advance(10);
    const ws2 = FakeWebSocket.last;
    ws2.open();
    await flush();
    const [status] = ws2.requests("request.status");
    ws2.receive({ type: "error", request_id: status.id, error: { code: "NOT_FOUND", message: "Request not found", retryable: false } });
    await assert.rejects(job, (e) => e.code === "NOT_FOUND" && e.requestId === "gone");
  });

  it("re-sends an unanswered request with the same id; DUPLICATE_REQUEST switches to resuming", async () => {
    const client = makeClient({ backoff: { initialMs: 10, jitter: 0 } });
    const ws1 = await connected(client);
    const job = track(client.request("generate_report", {}, { id: "r" }));
    const echo = client.request("echo", { x: 1 }, { id: "e" });
    ws1.serverClose(1006); // neither answered
    await clock.advance(10);
    const ws2 = FakeWebSocket.last;
    ws2.open();
    await flush();
    assert.deepEqual(ws2.requests().map((f) => f.id).sort(), ["e", "r"]);
    ws2.receive({ type: "response", request_id: "e", success: true, data: { echo: { x: 1 } } });
    assert.deepEqual(await echo, { echo: { x: 1 } });
    ws2.receive({ type: "error", request_id: "r", error: { code: "DUPLICATE_REQUEST", message: "Duplicate", details: { status: "PROCESSING" }, retryable: false } });
    await flush();
    const [status] = ws2.requests("request.status");
    assert.deepEqual(status.payload, { request_id: "r", subscribe: true });
    ws2.receive({ type: "complete", request_id: "r", success: true, result: "done" });
    await flush();
    assert.equal(job.count, 1);
    assert.equal(job.value, "done");
  });

  it("with retryUnacknowledged=false, unanswered requests reject with CONNECTION_LOST", async () => {
    const client = makeClient({ retryUnacknowledged: false, backoff: { initialMs: 10, jitter: 0 } });
    const ws1 = await connected(client);
    const echo = client.request("echo", {});
    ws1.serverClose(1006);
    await clock.advance(10);
    FakeWebSocket.last.open();
    await assert.rejects(echo, (e) => e.code === "CONNECTION_LOST" && e.retryable);
  });

  it("resume(id) follows a request started elsewhere, after reconnects too", async () => {
    const client = makeClient({ backoff: { initialMs: 10, jitter: 0 } });
    const progress = [];
    const job = track(client.resume("old", { onProgress: (p) => progress.push(p.percentage) }));
    await flush();
    const ws1 = FakeWebSocket.last;
    ws1.open();
    await flush();
    const [s1] = ws1.requests("request.status");
    assert.deepEqual(s1.payload, { request_id: "old", subscribe: true });
    assert.equal(ws1.requests().length, 1, "nothing else is sent");
    ws1.receive({ type: "response", request_id: s1.id, success: true, data: { request_id: "old", status: "PROCESSING", percentage: 30, message: "" } });
    await flush();
    ws1.serverClose(1006);
    await clock.advance(10);
    const ws2 = FakeWebSocket.last;
    ws2.open();
    await flush();
    const [s2] = ws2.requests("request.status");
    assert.deepEqual(s2.payload, { request_id: "old", subscribe: true });
    ws2.receive({ type: "progress", request_id: "old", percentage: 70, message: "" });
    ws2.receive({ type: "complete", request_id: "old", success: true, result: "r" });
    await flush();
    assert.deepEqual(progress, [30, 70]);
    assert.equal(job.count, 1);
    assert.equal(job.value, "r");
    const controller = new AbortController();
    const other = client.resume("other", { signal: controller.signal });
    controller.abort();
    await assert.rejects(other, (e) => e.code === "CANCELLED");
    assert.deepEqual(ws2.requests("request.cancel").map((f) => f.payload), [{ request_id: "other" }]);
  });

  it("dropConnection() closes the socket, reconnects and resumes", async () => {
    const client = makeClient({ backoff: { initialMs: 10, jitter: 0 } });
    const ws1 = await connected(client);
    const job = track(client.request("generate_report", {}, { id: "r" }));
    ws1.receive({ type: "acknowledgment", request_id: "r", status: "queued", message: "" });
    client.dropConnection();
    assert.equal(ws1.closed.code, 4000);
    assert.equal(client.state, "reconnecting");
    await clock.advance(10);
    const ws2 = FakeWebSocket.last;
    assert.notEqual(ws2, ws1);
    ws2.open();
    await flush();
    assert.equal(ws2.requests("request.status").length, 1);
    ws2.receive({ type: "complete", request_id: "r", success: true, result: 1 });
    await flush();
    assert.equal(job.count, 1);
  });
});

// --- token refresh (auth.refresh, docs/protocol.md 1.1) ------------------------------------------

/** An unsigned JWT-shaped token whose `exp` is `expSeconds` (the client never verifies). */
function jwtWith(claims) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  return `${part({ alg: "HS256" })}.${part(claims)}.sig`;
}

describe("token refresh", () => {
  it("decodes exp from a JWT, and null for anything else", () => {
    assert.equal(tokenExpiresAt(jwtWith({ exp: 1234 })), 1234000);
    for (const bad of [null, "", "abc", "a.!!!.c", jwtWith({ exp: "soon" }), jwtWith({})]) {
      assert.equal(tokenExpiresAt(bad), null, String(bad));
    }
  });

  it("sends auth.refresh with getToken's new token before exp; keeps the socket", async () => {
    // the fake clock starts at 0: tokens expire at 120 s, 240 s, ...
    let n = 0;
    const issued = [];
    const getToken = () => {
      const token = jwtWith({ sub: "u", exp: 120 * ++n });
      issued.push(token);
      return token;
    };
    const client = makeClient({ token: undefined, getToken, refreshLeadMs: 30000 });
    const refreshes = [];
    client.addEventListener("refresh", (e) => refreshes.push(e.detail));
    const ws = await connected(client);
    assert.equal(ws.token, issued[0]);
    await clock.advance(89000);
    assert.equal(ws.requests("auth.refresh").length, 0, "not yet: 30 s before exp is at 90 s");
    await clock.advance(1000);
    const [refresh] = ws.requests("auth.refresh");
    assert.deepEqual(refresh.payload, { token: issued[1] });
    ws.receive({ type: "response", request_id: refresh.id, success: true, data: { expires_at: 240000 } });
    await flush();
    assert.deepEqual(refreshes, [{ ok: true, expiresAt: 240000 }]);
    // the next refresh is scheduled from the new token: 30 s before 240 s
    await clock.advance(120000);
    assert.equal(ws.requests("auth.refresh").length, 2);
    assert.equal(FakeWebSocket.instances.length, 1, "no reconnection");
    assert.equal(client.state, "open");
  });

  it("a refused refresh keeps the socket; the server's 4401 then reconnects with a fresh token", async () => {
    let n = 0;
    const getToken = () => jwtWith({ sub: "u", exp: 100 * ++n });
    const client = makeClient({ token: undefined, getToken, refreshLeadMs: 10000 });
    const refreshes = [];
    client.addEventListener("refresh", (e) => refreshes.push(e.detail));
    const ws = await connected(client);
    await clock.advance(90000);
    const [refresh] = ws.requests("auth.refresh");
    ws.receive({
      type: "error",
      request_id: refresh.id,
      error: { code: "FORBIDDEN", message: "Token refused", retryable: false },
    });
    await flush();
    assert.deepEqual(refreshes, [{ ok: false, reason: "FORBIDDEN" }]);
    assert.equal(client.state, "open");
    assert.equal(ws.closed, null, "the client does not close the socket itself");
    ws.serverClose(4401, "Token expired");
    await clock.advance(0);
    assert.equal(FakeWebSocket.instances.length, 2);
    assert.equal(tokenExpiresAt(FakeWebSocket.last.token), 300000, "a fresh token");
  });

  it("does not refresh without getToken, nor when getToken has nothing newer", async () => {
    const fixed = makeClient({ token: jwtWith({ exp: 100 }) });
    const ws1 = await connected(fixed);
    await clock.advance(200000);
    assert.equal(ws1.requests("auth.refresh").length, 0);
    fixed.close();

    const same = jwtWith({ exp: 400 });
    const stale = makeClient({ token: undefined, getToken: () => same, refreshLeadMs: 10000 });
    const refreshes = [];
    stale.addEventListener("refresh", (e) => refreshes.push(e.detail));
    const ws2 = await connected(stale);
    await clock.advance(395000);
    assert.equal(ws2.requests("auth.refresh").length, 0);
    assert.deepEqual(refreshes, [{ ok: false, reason: "no newer token" }]);
  });
});

describe("watch", () => {
  it("announces each request it did not start, with the promise and progress of its own", async () => {
    const client = makeClient();
    const watched = [];
    client.addEventListener("request", (e) => watched.push(e.detail));
    const answer = client.watch();
    const ws = await connected(client);
    const [w] = ws.requests("request.watch");
    assert.deepEqual(w.payload, { enabled: true });
    ws.receive({ type: "response", request_id: w.id, success: true, data: { watching: true, requests: [] } });
    assert.deepEqual(await answer, { watching: true, requests: [] });

    ws.receive({ type: "acknowledgment", request_id: "tab2", status: "queued", message: "Request queued", action: "generate_report" });
    await flush();
    assert.equal(watched.length, 1);
    const job = watched[0];
    assert.equal(job.requestId, "tab2");
    assert.equal(job.action, "generate_report");
    const progress = [];
    assert.equal(job.onProgress((p) => progress.push(p.percentage)), job);
    const outcome = track(job.result);
    ws.receive({ type: "progress", request_id: "tab2", percentage: 40, message: "" });
    ws.receive({ type: "progress", request_id: "tab2", percentage: 20, message: "" });
    ws.receive({ type: "complete", request_id: "tab2", success: true, result: { rows: 3 } });
    ws.receive({ type: "acknowledgment", request_id: "tab2", status: "queued", message: "", action: "generate_report" });
    await flush();
    assert.deepEqual(progress, [40]);
    assert.deepEqual([outcome.count, outcome.value], [1, { rows: 3 }]);
    assert.equal(watched.length, 1, "a settled request is not announced again");
    assert.equal(ws.requests().length, 1, "following a watched request sends nothing");
  });

  it("a watched request's output reaches onOutput in seq order, once each, and resumes after a reconnect", async () => {
    const client = makeClient({ backoff: { initialMs: 10, jitter: 0 } });
    const watched = [];
    client.addEventListener("request", (e) => watched.push(e.detail));
    const ws1 = await connected(client);
    client.watch();
    await flush();
    ws1.receive({ type: "acknowledgment", request_id: "w1", status: "queued", message: "", action: "generate_report" });
    await flush();
    const chunks = [];
    const job = watched[0];
    assert.equal(job.onOutput((chunk, seq) => chunks.push([seq, chunk])), job);
    ws1.receive({ type: "output", request_id: "w1", seq: 2, data: "b" });
    ws1.receive({ type: "output", request_id: "w1", seq: 1, data: "a" });
    ws1.receive({ type: "output", request_id: "w1", seq: 1, data: "a" });
    await flush();
    assert.deepEqual(chunks, [[1, "a"], [2, "b"]]);
    ws1.serverClose(1006);
    await clock.advance(10);
    const ws2 = FakeWebSocket.last;
    ws2.open();
    await flush();
    assert.deepEqual(ws2.requests("request.status").map((f) => f.payload), [{ request_id: "w1", subscribe: true, after_seq: 2 }]);
  });

  it("a failed watched request rejects with a StreamerError; its own requests are not announced", async () => {
    const client = makeClient();
    const watched = [];
    client.addEventListener("request", (e) => watched.push(e.detail));
    const ws = await connected(client);
    client.watch();
    await flush();
    const own = track(client.request("generate_report", {}, { id: "mine" }));
    ws.receive({ type: "acknowledgment", request_id: "mine", status: "queued", message: "" });
    ws.receive({ type: "acknowledgment", request_id: "srv", status: "queued", message: "", action: "export" });
    await flush();
    assert.deepEqual(watched.map((w) => w.requestId), ["srv"]);
    ws.receive({ type: "error", request_id: "srv", error: { code: "PROCESSING_FAILED", message: "disk full", retryable: false } });
    await flush();
    await assert.rejects(watched[0].result, (e) => e instanceof StreamerError && e.code === "PROCESSING_FAILED");
    assert.equal(own.count, 0);
  });

  it("watches again after a reconnect, resumes what it followed, and stops with watch(false)", async () => {
    const client = makeClient({ backoff: { initialMs: 10, jitter: 0 } });
    const watched = [];
    client.addEventListener("request", (e) => watched.push(e.detail));
    const ws1 = await connected(client);
    client.watch();
    await flush();
    ws1.receive({ type: "acknowledgment", request_id: "r1", status: "queued", message: "", action: "export" });
    await flush();
    ws1.serverClose(1006);
    await clock.advance(10);
    const ws2 = FakeWebSocket.last;
    ws2.open();
    await flush();
    assert.deepEqual(ws2.requests("request.watch").map((f) => f.payload), [{ enabled: true }]);
    assert.deepEqual(ws2.requests("request.status").map((f) => f.payload), [{ request_id: "r1", subscribe: true }]);
    const stop = client.watch(false);
    await flush();
    const [, off] = ws2.requests("request.watch");
    assert.deepEqual(off.payload, { enabled: false });
    ws2.receive({ type: "response", request_id: off.id, success: true, data: { watching: false, requests: [] } });
    assert.deepEqual(await stop, { watching: false, requests: [] });
    ws2.receive({ type: "acknowledgment", request_id: "r2", status: "queued", message: "", action: "export" });
    await flush();
    assert.deepEqual(watched.map((w) => w.requestId), ["r1"], "not watching: no more announcements");
  });
});
