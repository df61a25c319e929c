/**
 * Streamer JavaScript client — wire protocol version 1.1 (see docs/clients.md).
 *
 * An ES module with no dependencies and no build step, and the whole npm package
 * `streamer-client` (clients/js/): import it from the package, from
 * `/static/streaming/streamer-client.js` in a browser, or from Node >= 20 (pass a
 * WebSocket implementation with the `WebSocket` option where there is no global one).
 *
 *   const client = new StreamerClient("/ws", { getToken: async () => fetchToken() });
 *   client.addEventListener("state", (e) => console.log(e.detail));
 *   await client.connect();
 *   const { echo } = await client.request("echo", { hello: "world" });
 *   const report = await client.request("generate_report", { duration_s: 5 }, {
 *     onProgress: ({ percentage, message }) => console.log(percentage, message),
 *     signal: abortController.signal,
 *   });
 *
 * Behaviour, in short:
 * - requests are correlated by `id` (crypto.randomUUID() unless given); a request sent
 *   while the socket is down is queued and sent once it is open;
 * - `request()` resolves with `data` (synchronous actions) or `result` (asynchronous
 *   actions) and rejects with a StreamerError; it settles exactly once;
 * - an AbortSignal sends `request.cancel` and rejects with code CANCELLED;
 * - a `ping` every `heartbeatMs`; a socket that answers nothing for a whole heartbeat
 *   period is treated as dead;
 * - after a drop the client reconnects with capped exponential backoff and jitter,
 *   asking `getToken` for a fresh token each time, and resumes every asynchronous
 *   request that was acknowledged with `request.status` + `subscribe`;
 * - close codes 4401/4403/4429 are not retried forever (see `_onClose`).
 */

/** The wire protocol version this client speaks (docs/protocol.md). */
export const PROTOCOL_VERSION = "1.1";

/** Connection states, as carried by the "state" event's `detail`. */
export const State = Object.freeze({
  IDLE: "idle",
  CONNECTING: "connecting",
  OPEN: "open",
  RECONNECTING: "reconnecting",
  CLOSED: "closed",
});

/** Close codes of docs/protocol.md §1. */
export const CloseCode = Object.freeze({
  UNAUTHORIZED: 4401,
  FORBIDDEN_TENANT: 4403,
  TOO_MANY_CONNECTIONS: 4429,
  STORAGE_DOWN: 1011,
});

/** Client-side error codes (the server's codes of docs/protocol.md §4 are used as they are). */
export const ClientErrorCode = Object.freeze({
  UNAUTHORIZED: "UNAUTHORIZED", // close 4401
  TENANT_FORBIDDEN: "TENANT_FORBIDDEN", // close 4403
  TOO_MANY_CONNECTIONS: "TOO_MANY_CONNECTIONS", // close 4429
  CONNECTION_LOST: "CONNECTION_LOST",
  CLOSED: "CLOSED",
  CANCELLED: "CANCELLED",
  TIMEOUT: "TIMEOUT",
});

const FINAL_STATUSES = new Set(["COMPLETED", "FAILED", "CANCELLED"]);
const SETTLED_MEMORY = 1000;

/** An error from the server (`error` frame) or from the client itself. */
export class StreamerError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{details?: any, retryable?: boolean, requestId?: string|null, closeCode?: number}} [extra]
   */
  constructor(code, message, extra = {}) {
    super(message);
    this.name = "StreamerError";
    this.code = code;
    this.details = extra.details;
    this.retryable = Boolean(extra.retryable);
    this.requestId = extra.requestId ?? null;
    if (extra.closeCode !== undefined) this.closeCode = extra.closeCode;
  }

  /** Build from the `error` object of an `error` frame or of a request record. */
  static fromServer(error, requestId) {
    const e = error && typeof error === "object" ? error : {};
    return new StreamerError(
      typeof e.code === "string" ? e.code : "INTERNAL_ERROR",
      typeof e.message === "string" ? e.message : "Request failed",
      { details: e.details, retryable: e.retryable, requestId },
    );
  }
}

/**
 * The delay before reconnection attempt `attempt` (0 for the first retry):
 * `min(maxMs, initialMs * factor ** attempt)`, then reduced by up to `jitter` (0..1) of
 * itself at random — so it always lies in `[base * (1 - jitter), base]` and never
 * exceeds `maxMs`.
 */
export function backoffDelay(attempt, backoff, random = Math.random) {
  const { initialMs, maxMs, factor, jitter } = backoff;
  const base = Math.min(maxMs, initialMs * Math.pow(factor, Math.max(0, attempt)));
  const j = Math.min(1, Math.max(0, jitter));
  return Math.max(0, Math.round(base * (1 - j * random())));
}

const DEFAULT_BACKOFF = Object.freeze({
  initialMs: 500,
  maxMs: 30000,
  factor: 2,
  jitter: 0.5,
  maxAttempts: Infinity,
});

function resolveUrl(url) {
  const text = String(url);
  if (/^wss?:\/\//i.test(text)) return text;
  const loc = globalThis.location;
  if (loc && loc.host) {
    const absolute = new URL(text, loc.href);
    absolute.protocol = absolute.protocol === "https:" ? "wss:" : "ws:";
    return absolute.toString();
  }
  if (/^https?:\/\//i.test(text)) return text.replace(/^http/i, "ws");
  throw new TypeError(`StreamerClient: cannot resolve WebSocket URL ${text}`);
}

function withToken(url, token) {
  if (!token) return url;
  const u = new URL(url);
  u.searchParams.set("token", token);
  return u.toString();
}

/** A new request id: crypto.randomUUID(), with a fallback for insecure contexts. */
/**
 * The `exp` of a JWT in epoch milliseconds, or null when it has none or is not a JWT.
 * Decoded only, never verified: the client just needs to know when to refresh.
 */
export function tokenExpiresAt(token) {
  if (typeof token !== "string") return null;
  const part = token.split(".")[1];
  if (!part) return null;
  try {
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const padded = b64 + "===".slice((b64.length + 3) % 4);
    const json = typeof atob === "function" ? atob(padded) : Buffer.from(padded, "base64").toString("binary");
    const exp = JSON.parse(json).exp;
    return typeof exp === "number" && Number.isFinite(exp) ? exp * 1000 : null;
  } catch {
    return null;
  }
}

export function newRequestId() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === "function") return c.randomUUID();
  // Fallback for insecure contexts (plain http on a non-localhost host).
  const bytes = new Uint8Array(16);
  if (c && typeof c.getRandomValues === "function") c.getRandomValues(bytes);
  else for (let i = 0; i < 16; i++) bytes[i] = Math.floor(Math.random() * 256);
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function makeEvent(type, detail) {
  if (typeof CustomEvent === "function") return new CustomEvent(type, { detail });
  const event = new Event(type);
  Object.defineProperty(event, "detail", { value: detail });
  return event;
}

/**
 * A Streamer connection with request correlation, progress, cancellation, heartbeat,
 * reconnection and resumption. Events (all `CustomEvent`s, payload in `detail`):
 * - "state": the new state string (connecting, open, reconnecting, closed);
 * - "reconnect": `{attempt, delayMs, code, reason}` when a reconnection is scheduled;
 * - "message": a server frame that is not about a pending request (e.g. pushed by
 *   `send_to_user`), or an `error` frame the server could not tie to a request;
 * - "error": a StreamerError about the connection (authentication refused, tenant
 *   disabled, connection limit reached).
 */
export class StreamerClient extends EventTarget {
  /**
   * @param {string} url  ws:// or wss:// URL, or a path such as "/ws" in a browser
   * @param {object} [options]
   */
  constructor(url, options = {}) {
    super();
    this.url = url;
    this._token = options.token ?? null;
    this._getToken = typeof options.getToken === "function" ? options.getToken : null;
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this._WebSocket !== "function") {
      throw new TypeError("StreamerClient: no WebSocket implementation (pass options.WebSocket)");
    }
    this.heartbeatMs = options.heartbeatMs ?? 25000;
    this.backoff = { ...DEFAULT_BACKOFF, ...(options.backoff || {}) };
    this.stableMs = options.stableMs ?? 5000;
    this.handshakeTimeoutMs = options.handshakeTimeoutMs ?? 3000;
    this.retryUnacknowledged = options.retryUnacknowledged ?? true;
    this.tooManyConnectionsRetries = options.tooManyConnectionsRetries ?? 3;
    this.refreshLeadMs = options.refreshLeadMs ?? 60000;
    this._random = options.random ?? Math.random;
    this._setTimeout = options.setTimeout ?? globalThis.setTimeout.bind(globalThis);
    this._clearTimeout = options.clearTimeout ?? globalThis.clearTimeout.bind(globalThis);
    this._setInterval = options.setInterval ?? globalThis.setInterval.bind(globalThis);
    this._clearInterval = options.clearInterval ?? globalThis.clearInterval.bind(globalThis);
    this._now = options.now ?? (() => Date.now());

    this._state = State.IDLE;
    this._ws = null;
    this._attempt = 0; // consecutive failed connection attempts
    this._authRetried = false;
    this._limitRetries = 0;
    this._reconnectTimer = null;
    this._heartbeatTimer = null;
    this._handshakeTimer = null;
    this._refreshTimer = null;
    this._socketOpen = false;
    this._awaitingPong = false;
    this._openedAt = 0;
    this._gotFrame = false;
    this._pending = new Map(); // id -> entry (caller's requests)
    this._internal = new Map(); // id -> {resolve, reject} (client's own requests)
    this._cancelAfterAck = new Set();
    this._cancelOnOpen = new Set();
    this._settled = new Set();
    this._connectWaiters = [];
    this._watching = false;
    this._watchReply = null;
    this.lastClose = null;
  }

  /** The current state: idle, connecting, open, reconnecting or closed. */
  get state() {
    return this._state;
  }

  /** Ids of the requests still waiting for their outcome. */
  get pendingIds() {
    return [...this._pending.keys()];
  }

  /**
   * Open the connection (again after `close()`). Resolves when the socket is open;
   * rejects with a StreamerError when the server refuses it for good (4401, 4403,
   * 4429) or `close()` is called first. Reconnection after later drops is automatic.
   */
  connect() {
    if (this._state === State.OPEN) return Promise.resolve();
    const waiter = new Promise((resolve, reject) => this._connectWaiters.push({ resolve, reject }));
    if (this._state === State.IDLE || this._state === State.CLOSED) {
      this._attempt = 0;
      this._authRetried = false;
      this._limitRetries = 0;
      this._setState(State.CONNECTING);
      this._open();
    }
    return waiter;
  }

  /**
   * Close for good: no reconnection; every pending request is rejected with CLOSED
   * (asynchronous requests keep running on the server and can be fetched later with
   * `request.status`).
   */
  close(code = 1000, reason = "Client closed") {
    const error = new StreamerError(ClientErrorCode.CLOSED, "The client was closed");
    this._shutdown(error, code, reason);
  }

  /**
   * Close the current socket as a network failure would, without giving up: the
   * client reconnects and resumes. Meant for demos and tests.
   */
  dropConnection() {
    const ws = this._ws;
    if (!ws) return;
    this._handleClose(ws, { code: 4000, reason: "Dropped by the client", wasClean: false });
    try {
      ws.close(4000, "Dropped by the client");
    } catch {
      /* already closing */
    }
  }

  /**
   * Send a request; resolves with `data` (sync) or `result` (async).
   * @param {string} action
   * @param {object} [payload]
   * @param {{onProgress?: Function, onOutput?: Function, signal?: AbortSignal, id?: string,
   *          metadata?: object, timeoutMs?: number, onAcknowledged?: Function}} [options]
   */
  request(action, payload = {}, options = {}) {
    const id = options.id ?? newRequestId();
    const frame = { type: "request", id, action, payload: payload ?? {} };
    if (options.metadata !== undefined) frame.metadata = options.metadata;
    return this._track(id, frame, options);
  }

  /**
   * Follow a request started earlier — before a page reload, or by another client —
   * until it ends: `request.status` + `subscribe` now and after every reconnection.
   * Resolves with its `result`, rejects like `request()` (NOT_FOUND for an unknown id).
   * @param {string} requestId
   * With `onOutput`, the output chunks after `afterSeq` (default 0: all of them) are
   * replayed first, then the live ones, each once and in `seq` order.
   * @param {{onProgress?: Function, onOutput?: Function, afterSeq?: number,
   *          signal?: AbortSignal, timeoutMs?: number}} [options]
   */
  resume(requestId, options = {}) {
    return this._track(requestId, null, options);
  }

  _track(id, frame, options) {
    const { signal } = options;
    return new Promise((resolve, reject) => {
      if (this._state === State.CLOSED) {
        reject(new StreamerError(ClientErrorCode.CLOSED, "The client is closed", { requestId: id }));
        return;
      }
      if (signal && signal.aborted) {
        reject(cancelledError(id));
        return;
      }
      if (this._pending.has(id)) {
        reject(
          new StreamerError("DUPLICATE_REQUEST", "A request with this id is already pending", {
            requestId: id,
          }),
        );
        return;
      }
      const entry = {
        id,
        frame,
        resolve,
        reject,
        onProgress: options.onProgress,
        onOutput: options.onOutput,
        // The last output seq delivered; a resume asks for what follows it.
        outputSeq: Number.isInteger(options.afterSeq) && options.afterSeq > 0 ? options.afterSeq : 0,
        heldOutput: new Map(),
        recordAfterOutput: null,
        onAcknowledged: options.onAcknowledged,
        // A followed request (no frame) is already stored on the server.
        sent: !frame,
        resent: false,
        acked: !frame,
        percentage: -1,
        settled: false,
        timer: null,
        abort: null,
        signal,
      };
      this._pending.set(id, entry);
      this._settled.delete(id);
      if (signal) {
        entry.abort = () => this._abort(entry);
        signal.addEventListener("abort", entry.abort, { once: true });
      }
      if (options.timeoutMs > 0) {
        entry.timer = this._setTimeout(() => {
          this._settle(entry, false, new StreamerError(ClientErrorCode.TIMEOUT, "No answer in time", {
            requestId: id,
            retryable: true,
          }));
        }, options.timeoutMs);
      }
      if (options.adopted) return; // its frames already arrive: nothing to send
      if (this._state === State.OPEN) {
        if (frame) this._sendEntry(entry);
        else this._resume(entry);
      } else if (this._state === State.IDLE) this.connect().catch(() => {});
    });
  }

  /**
   * Cancel a request by id (yours, from this or an earlier connection). Resolves with
   * the request's public record. A pending `request()` for it rejects with CANCELLED.
   */
  async cancel(requestId) {
    const record = await this.request("request.cancel", { request_id: requestId });
    const entry = this._pending.get(requestId);
    if (entry && record && FINAL_STATUSES.has(record.status)) this._settleFromRecord(entry, record);
    return record;
  }

  /**
   * Receive every request of this user on this connection, however it was started
   * (another tab, server code, the HTTP API): `request.watch` now and after every
   * reconnection. Each request this client did not start fires a `request` event whose
   * `detail` is a WatchedRequest: `{requestId, action, result, onProgress(fn), onOutput(fn),
   * cancel()}`,
   * where `result` settles like the promise of `request()`. `watch(false)` stops.
   * Resolves with the server's answer (`{watching, requests}`).
   * @param {boolean} [enabled]
   */
  watch(enabled = true) {
    this._watching = Boolean(enabled);
    if (this._state === State.OPEN) return this._sendWatch();
    if (!this._watching) return Promise.resolve({ watching: false, requests: [] });
    // Sent by _confirmOpen once the socket is open (and again after each reconnect).
    return this.connect().then(() => this._watchReply);
  }

  _sendWatch() {
    this._watchReply = this._internalRequest("request.watch", { enabled: this._watching });
    this._watchReply.catch(() => {}); // a failed re-watch is retried on the next open
    return this._watchReply;
  }

  /** A request announced to this watching connection: tracked like one it started. */
  _adopt(frame) {
    const id = frame.request_id;
    let entry = null;
    const result = this._track(id, null, { adopted: true });
    result.catch(() => {}); // a watcher may ignore how a request ends
    entry = this._pending.get(id);
    const watched = {
      requestId: id,
      action: frame.action,
      result,
      onProgress: (fn) => {
        if (entry) entry.onProgress = fn;
        return watched;
      },
      onOutput: (fn) => {
        if (entry) entry.onOutput = fn;
        return watched;
      },
      cancel: () => this.cancel(id),
    };
    this.dispatchEvent(makeEvent("request", watched));
  }

  // --- connection ------------------------------------------------------------------

  _setState(state) {
    if (this._state === state) return;
    this._state = state;
    this.dispatchEvent(makeEvent("state", state));
  }

  async _currentToken() {
    if (this._getToken) {
      const token = await this._getToken();
      this._token = token;
      return token;
    }
    return this._token;
  }

  async _open() {
    let token;
    try {
      token = await this._currentToken();
    } catch (err) {
      if (this._state === State.CLOSED) return;
      this._scheduleReconnect({ code: 0, reason: `getToken failed: ${err && err.message}` });
      return;
    }
    if (this._state === State.CLOSED) return;
    let ws;
    try {
      ws = new this._WebSocket(withToken(resolveUrl(this.url), token));
    } catch (err) {
      this._scheduleReconnect({ code: 0, reason: String(err && err.message) });
      return;
    }
    this._ws = ws;
    this._gotFrame = false;
    ws.onopen = () => this._onOpen(ws);
    ws.onmessage = (event) => this._onMessage(ws, event);
    ws.onclose = (event) => this._handleClose(ws, event);
    ws.onerror = () => {
      /* a close event follows */
    };
  }

  _onOpen(ws) {
    if (ws !== this._ws) return;
    // The server accepts every handshake and only then closes a refused one (4401...),
    // so the socket counts as open once the server has answered a first ping.
    this._socketOpen = true;
    this._openedAt = this._now();
    this._startHeartbeat();
    this._awaitingPong = true;
    this._sendRaw({ type: "ping" });
    if (this.handshakeTimeoutMs > 0) {
      this._handshakeTimer = this._setTimeout(() => {
        this._handshakeTimer = null;
        if (ws === this._ws) this._confirmOpen();
      }, this.handshakeTimeoutMs);
    }
  }

  _confirmOpen() {
    if (this._state === State.OPEN || this._state === State.CLOSED || !this._ws) return;
    this._clearTimeout(this._handshakeTimer);
    this._handshakeTimer = null;
    this._setState(State.OPEN);
    const cancels = [...this._cancelOnOpen];
    this._cancelOnOpen.clear();
    for (const id of cancels) this._sendCancel(id);
    // Resume acknowledged asynchronous requests, then send what waited for the socket.
    for (const entry of [...this._pending.values()]) {
      if (entry.acked) this._resume(entry);
    }
    for (const entry of [...this._pending.values()]) {
      if (entry.acked || entry.settled) continue;
      if (!entry.sent) this._sendEntry(entry);
      else if (this.retryUnacknowledged) {
        entry.resent = true;
        this._sendEntry(entry);
      } else {
        this._settle(entry, false, new StreamerError(
          ClientErrorCode.CONNECTION_LOST,
          "The connection dropped before the server answered",
          { requestId: entry.id, retryable: true },
        ));
      }
    }
    if (this._watching) this._sendWatch();
    this._scheduleRefresh();
    const waiters = this._connectWaiters.splice(0);
    for (const w of waiters) w.resolve();
  }

  /**
   * With a `getToken` hook, send `auth.refresh` (docs/protocol.md §3) shortly before the
   * current token's `exp`: `refreshLeadMs` before it, or half-way through a shorter
   * remaining life. A refused or failed refresh keeps the socket; the server then
   * closes it with 4401 and the client reconnects with a fresh token as usual.
   */
  _scheduleRefresh() {
    this._clearTimeout(this._refreshTimer);
    this._refreshTimer = null;
    const expiresAt = tokenExpiresAt(this._token);
    if (!this._getToken || expiresAt === null) return;
    const now = this._now();
    const at = Math.max(expiresAt - this.refreshLeadMs, now + (expiresAt - now) / 2);
    this._refreshTimer = this._setTimeout(() => {
      this._refreshTimer = null;
      this._refresh(expiresAt);
    }, Math.max(0, at - now));
  }

  async _refresh(currentExpiry) {
    if (this._state !== State.OPEN) return;
    let token;
    try {
      token = await this._getToken();
    } catch (err) {
      this.dispatchEvent(makeEvent("refresh", { ok: false, reason: `getToken failed: ${err && err.message}` }));
      return;
    }
    const expiresAt = tokenExpiresAt(token);
    if (this._state !== State.OPEN || expiresAt === null || expiresAt <= currentExpiry) {
      // nothing newer to offer: the server closes at expiry and we reconnect then
      this.dispatchEvent(makeEvent("refresh", { ok: false, reason: "no newer token" }));
      return;
    }
    try {
      await this._internalRequest("auth.refresh", { token });
    } catch (err) {
      this.dispatchEvent(makeEvent("refresh", { ok: false, reason: (err && err.code) || "failed" }));
      return;
    }
    this._token = token;
    this.dispatchEvent(makeEvent("refresh", { ok: true, expiresAt }));
    if (this._state === State.OPEN) this._scheduleRefresh();
  }

  _handleClose(ws, event) {
    if (ws !== this._ws) return; // a socket we already gave up on
    this._ws = null;
    this._socketOpen = false;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    this._stopHeartbeat();
    this._clearTimeout(this._handshakeTimer);
    this._handshakeTimer = null;
    this._clearTimeout(this._refreshTimer);
    this._refreshTimer = null;
    const code = event && typeof event.code === "number" ? event.code : 1006;
    const reason = (event && event.reason) || "";
    this.lastClose = { code, reason };
    if (this._state === State.CLOSED) return;
    // Internal requests (resume probes, cancels) die with their socket.
    const internal = [...this._internal.values()];
    this._internal.clear();
    for (const h of internal) h.reject(new StreamerError(ClientErrorCode.CONNECTION_LOST, "Connection lost", { retryable: true }));
    this._onClose(code, reason);
  }

  _onClose(code, reason) {
    const wasHealthy = this._openedAt > 0 && (this._gotFrame || this._now() - this._openedAt >= this.stableMs);
    this._openedAt = 0;
    if (wasHealthy) {
      this._attempt = 0;
      this._limitRetries = 0;
      this._authRetried = false;
    }
    if (code === CloseCode.UNAUTHORIZED) {
      // One retry with a fresh token when we can get one; otherwise (or if the fresh
      // token is refused too) stop for good.
      if (this._getToken && !this._authRetried) {
        this._authRetried = true;
        this._scheduleReconnect({ code, reason }, 0);
        return;
      }
      this._fail(new StreamerError(ClientErrorCode.UNAUTHORIZED, "The server refused the token (invalid or expired)", { closeCode: code, details: { reason } }));
      return;
    }
    if (code === CloseCode.FORBIDDEN_TENANT) {
      this._fail(new StreamerError(ClientErrorCode.TENANT_FORBIDDEN, "The tenant is unknown or disabled", { closeCode: code, details: { reason } }));
      return;
    }
    if (code === CloseCode.TOO_MANY_CONNECTIONS) {
      const error = new StreamerError(ClientErrorCode.TOO_MANY_CONNECTIONS, "The tenant's connection limit is reached", { closeCode: code, retryable: true, details: { reason } });
      if (this._limitRetries >= this.tooManyConnectionsRetries) {
        this._fail(error);
        return;
      }
      this._limitRetries += 1;
      this.dispatchEvent(makeEvent("error", error));
    }
    this._scheduleReconnect({ code, reason });
  }

  _scheduleReconnect({ code, reason }, forcedDelay) {
    if (this._state === State.CLOSED) return;
    if (this._attempt >= this.backoff.maxAttempts) {
      this._fail(new StreamerError(ClientErrorCode.CONNECTION_LOST, "Could not reconnect", { retryable: true, closeCode: code, details: { reason } }));
      return;
    }
    const delayMs = forcedDelay ?? backoffDelay(this._attempt, this.backoff, this._random);
    const attempt = this._attempt + 1;
    this._attempt = attempt;
    this._setState(State.RECONNECTING);
    this.dispatchEvent(makeEvent("reconnect", { attempt, delayMs, code, reason }));
    this._clearTimeout(this._reconnectTimer);
    this._reconnectTimer = this._setTimeout(() => {
      this._reconnectTimer = null;
      if (this._state === State.RECONNECTING) this._open();
    }, delayMs);
  }

  _fail(error) {
    this.dispatchEvent(makeEvent("error", error));
    this._shutdown(error);
  }

  _shutdown(error, code = 1000, reason = "Client closed") {
    this._clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    this._clearTimeout(this._refreshTimer);
    this._refreshTimer = null;
    this._stopHeartbeat();
    this._clearTimeout(this._handshakeTimer);
    this._handshakeTimer = null;
    const ws = this._ws;
    this._ws = null;
    this._socketOpen = false;
    const wasClosed = this._state === State.CLOSED;
    this._state = State.CLOSED;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(code, reason);
      } catch {
        /* already closed */
      }
    }
    for (const entry of [...this._pending.values()]) {
      this._settle(entry, false, new StreamerError(error.code, error.message, {
        details: error.details,
        retryable: error.retryable,
        requestId: entry.id,
        closeCode: error.closeCode,
      }));
    }
    const internal = [...this._internal.values()];
    this._internal.clear();
    for (const h of internal) h.reject(error);
    const waiters = this._connectWaiters.splice(0);
    for (const w of waiters) w.reject(error);
    if (!wasClosed) this.dispatchEvent(makeEvent("state", State.CLOSED));
  }

  // --- heartbeat -----------------------------------------------------------------

  _startHeartbeat() {
    this._stopHeartbeat();
    this._awaitingPong = false;
    if (!(this.heartbeatMs > 0)) return;
    this._heartbeatTimer = this._setInterval(() => this._beat(), this.heartbeatMs);
  }

  _stopHeartbeat() {
    if (this._heartbeatTimer !== null) this._clearInterval(this._heartbeatTimer);
    this._heartbeatTimer = null;
  }

  _beat() {
    const ws = this._ws;
    if (!ws || !this._socketOpen) return;
    if (this._awaitingPong) {
      // Nothing came back for a whole period: the socket is dead even if the
      // browser has not noticed yet.
      this.dropConnection();
      return;
    }
    this._awaitingPong = true;
    this._sendRaw({ type: "ping" });
  }

  // --- frames ----------------------------------------------------------------------

  _sendRaw(frame) {
    const ws = this._ws;
    if (!ws || !this._socketOpen) return false;
    try {
      ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  _sendEntry(entry) {
    if (this._sendRaw(entry.frame)) entry.sent = true;
  }

  /** A request of the client's own (resume probes, cancels): resolves with data. */
  _internalRequest(action, payload) {
    const id = newRequestId();
    return new Promise((resolve, reject) => {
      if (this._state !== State.OPEN) {
        reject(new StreamerError(ClientErrorCode.CONNECTION_LOST, "Not connected", { retryable: true }));
        return;
      }
      this._internal.set(id, { resolve, reject });
      this._sendRaw({ type: "request", id, action, payload });
    });
  }

  _onMessage(ws, event) {
    if (ws !== this._ws) return;
    this._gotFrame = true;
    this._awaitingPong = false;
    if (this._state !== State.OPEN) this._confirmOpen();
    let frame;
    try {
      frame = JSON.parse(typeof event.data === "string" ? event.data : String(event.data));
    } catch {
      return;
    }
    if (!frame || typeof frame !== "object") return;
    if (frame.type === "pong") return;
    const id = frame.request_id;
    if (typeof id === "string") {
      const internal = this._internal.get(id);
      if (internal) {
        this._internal.delete(id);
        if (frame.type === "response") internal.resolve(frame.data);
        else if (frame.type === "error") internal.reject(StreamerError.fromServer(frame.error, id));
        return;
      }
      const entry = this._pending.get(id);
      if (entry) {
        this._onRequestFrame(entry, frame);
        return;
      }
      if (this._cancelAfterAck.has(id)) {
        if (frame.type === "acknowledgment") this._sendCancel(id);
        if (frame.type !== "progress") this._cancelAfterAck.delete(id);
        return;
      }
      if (this._settled.has(id)) return; // late frames of a request that already settled
      if (frame.type === "acknowledgment" && typeof frame.action === "string" && this._watching) {
        this._adopt(frame);
        return;
      }
    }
    this.dispatchEvent(makeEvent("message", frame));
  }

  _onRequestFrame(entry, frame) {
    switch (frame.type) {
      case "acknowledgment":
        entry.acked = true;
        if (typeof entry.onAcknowledged === "function") safeCall(entry.onAcknowledged, frame);
        return;
      case "progress":
        entry.acked = true;
        this._progress(entry, frame.percentage, frame.message, frame.details);
        return;
      case "output":
        entry.acked = true;
        this._output(entry, frame.seq, frame.data);
        return;
      case "response":
        if (frame.success === false) {
          const err = frame.data && frame.data.error;
          this._settle(entry, false, StreamerError.fromServer(err || { code: "PROCESSING_FAILED", message: "Request failed" }, entry.id));
        } else this._settle(entry, true, frame.data);
        return;
      case "complete":
        this._settle(entry, true, frame.result);
        return;
      case "error": {
        const error = StreamerError.fromServer(frame.error, entry.id);
        if (error.code === "DUPLICATE_REQUEST" && entry.resent) {
          // We re-sent a request the server had already stored before the drop:
          // follow the stored one instead.
          entry.acked = true;
          this._resume(entry);
          return;
        }
        this._settle(entry, false, error);
        return;
      }
      default:
        this.dispatchEvent(makeEvent("message", frame));
    }
  }

  _progress(entry, percentage, message, details) {
    if (typeof percentage !== "number" || percentage < entry.percentage) return;
    if (percentage === entry.percentage && message === entry.message) return;
    entry.percentage = percentage;
    entry.message = message;
    if (typeof entry.onProgress === "function") {
      safeCall(entry.onProgress, { requestId: entry.id, percentage, message: message ?? "", details });
    }
  }

  _output(entry, seq, data) {
    // In seq order, once each: a chunk ahead of a replay waits for it, a repeat is dropped.
    if (!Number.isInteger(seq) || seq <= entry.outputSeq) return;
    entry.heldOutput.set(seq, data);
    while (entry.heldOutput.has(entry.outputSeq + 1)) {
      entry.outputSeq += 1;
      const chunk = entry.heldOutput.get(entry.outputSeq);
      entry.heldOutput.delete(entry.outputSeq);
      if (typeof entry.onOutput === "function") safeCall(entry.onOutput, chunk, entry.outputSeq);
    }
    const record = entry.recordAfterOutput;
    if (record && entry.outputSeq >= record.output_seq) this._settleFromRecord(entry, record);
  }

  async _resume(entry) {
    let record;
    const status = { request_id: entry.id, subscribe: true };
    if (typeof entry.onOutput === "function") status.after_seq = entry.outputSeq;
    try {
      record = await this._internalRequest("request.status", status);
    } catch (err) {
      if (entry.settled) return;
      if (err instanceof StreamerError && err.code === ClientErrorCode.CONNECTION_LOST) return; // next open resumes
      if (err instanceof StreamerError && err.retryable) {
        this._setTimeout(() => {
          if (!entry.settled && this._state === State.OPEN) this._resume(entry);
        }, backoffDelay(0, this.backoff, this._random));
        return;
      }
      this._settle(entry, false, err instanceof StreamerError ? new StreamerError(err.code, err.message, { details: err.details, retryable: err.retryable, requestId: entry.id }) : err);
      return;
    }
    if (entry.settled || !record) return;
    const missing = typeof entry.onOutput === "function" && (record.output_seq ?? 0) > entry.outputSeq;
    if (FINAL_STATUSES.has(record.status) && missing) entry.recordAfterOutput = record; // replay first
    else if (FINAL_STATUSES.has(record.status)) this._settleFromRecord(entry, record);
    else this._progress(entry, record.percentage, record.message);
  }

  _settleFromRecord(entry, record) {
    if (record.status === "COMPLETED") {
      this._progress(entry, 100, record.message);
      this._settle(entry, true, record.result);
    } else {
      const fallback = record.status === "CANCELLED"
        ? { code: "CANCELLED", message: "Request cancelled" }
        : { code: "PROCESSING_FAILED", message: "Request failed" };
      this._settle(entry, false, StreamerError.fromServer(record.error || fallback, entry.id));
    }
  }

  _abort(entry) {
    if (entry.settled) return;
    if (entry.sent) {
      // Offline: cancel as soon as the socket is open again.
      if (this._state === State.OPEN) this._sendCancel(entry.id);
      else this._cancelOnOpen.add(entry.id);
      // If the acknowledgment is still to come, cancel again once it does.
      if (!entry.acked) this._cancelAfterAck.add(entry.id);
    }
    this._settle(entry, false, cancelledError(entry.id));
  }

  _sendCancel(requestId) {
    this._internalRequest("request.cancel", { request_id: requestId }).catch((err) => {
      if (err instanceof StreamerError && err.code === ClientErrorCode.CONNECTION_LOST) {
        this._cancelOnOpen.add(requestId);
      }
    });
  }

  _settle(entry, ok, value) {
    if (entry.settled) return;
    entry.settled = true;
    this._pending.delete(entry.id);
    this._settled.add(entry.id);
    if (this._settled.size > SETTLED_MEMORY) {
      this._settled.delete(this._settled.values().next().value);
    }
    if (entry.timer !== null) this._clearTimeout(entry.timer);
    if (entry.signal && entry.abort) entry.signal.removeEventListener("abort", entry.abort);
    if (ok) entry.resolve(value);
    else entry.reject(value);
  }
}

function cancelledError(requestId) {
  return new StreamerError(ClientErrorCode.CANCELLED, "Request cancelled", { requestId });
}

function safeCall(fn, ...args) {
  try {
    fn(...args);
  } catch (err) {
    setTimeout(() => {
      throw err;
    }, 0);
  }
}

export default StreamerClient;
