// Type declarations for streamer-client.js (Streamer wire protocol version 1.1).

/** The wire protocol version this client speaks (docs/protocol.md). */
export declare const PROTOCOL_VERSION: "1.1";

export type ConnectionState = "idle" | "connecting" | "open" | "reconnecting" | "closed";

export declare const State: Readonly<{
  IDLE: "idle";
  CONNECTING: "connecting";
  OPEN: "open";
  RECONNECTING: "reconnecting";
  CLOSED: "closed";
}>;

export declare const CloseCode: Readonly<{
  UNAUTHORIZED: 4401;
  FORBIDDEN_TENANT: 4403;
  TOO_MANY_CONNECTIONS: 4429;
  STORAGE_DOWN: 1011;
}>;

/** Codes the server sends (docs/protocol.md §4). */
export type ServerErrorCode =
  | "INVALID_MESSAGE"
  | "VALIDATION_ERROR"
  | "INVALID_ACTION"
  | "FORBIDDEN"
  | "NOT_FOUND"
  | "DUPLICATE_REQUEST"
  | "RATE_LIMITED"
  | "QUOTA_EXCEEDED"
  | "TIMEOUT"
  | "CANCELLED"
  | "PROCESSING_FAILED"
  | "SERVICE_UNAVAILABLE"
  | "INTERNAL_ERROR";

/** Codes the client raises itself. */
export type ClientErrorCodeValue =
  | "UNAUTHORIZED"
  | "TENANT_FORBIDDEN"
  | "TOO_MANY_CONNECTIONS"
  | "CONNECTION_LOST"
  | "CLOSED"
  | "CANCELLED"
  | "TIMEOUT";

export declare const ClientErrorCode: Readonly<{
  UNAUTHORIZED: "UNAUTHORIZED";
  TENANT_FORBIDDEN: "TENANT_FORBIDDEN";
  TOO_MANY_CONNECTIONS: "TOO_MANY_CONNECTIONS";
  CONNECTION_LOST: "CONNECTION_LOST";
  CLOSED: "CLOSED";
  CANCELLED: "CANCELLED";
  TIMEOUT: "TIMEOUT";
}>;

export type ErrorCode = ServerErrorCode | ClientErrorCodeValue | (string & {});

export declare class StreamerError extends Error {
  constructor(
    code: ErrorCode,
    message: string,
    extra?: { details?: unknown; retryable?: boolean; requestId?: string | null; closeCode?: number },
  );
  readonly name: "StreamerError";
  code: ErrorCode;
  details: unknown;
  retryable: boolean;
  /** The request this error is about, or null for connection-level errors. */
  requestId: string | null;
  /** The WebSocket close code, for connection-level errors. */
  closeCode?: number;
  static fromServer(
    error: { code?: string; message?: string; details?: unknown; retryable?: boolean } | null | undefined,
    requestId?: string | null,
  ): StreamerError;
}

export interface BackoffOptions {
  /** Delay before the first reconnection attempt (default 500). */
  initialMs?: number;
  /** Cap of the delay (default 30000). */
  maxMs?: number;
  /** Growth per attempt (default 2). */
  factor?: number;
  /** 0..1: the delay is reduced at random by up to this share of itself (default 0.5). */
  jitter?: number;
  /** Give up (state "closed", CONNECTION_LOST) after this many consecutive failures (default Infinity). */
  maxAttempts?: number;
}

/** The `exp` of a JWT in epoch ms (decoded, not verified); null when absent or not a JWT. */
export declare function tokenExpiresAt(token: string | null | undefined): number | null;

/** A new request id (crypto.randomUUID() where available). */
export declare function newRequestId(): string;

export declare function backoffDelay(
  attempt: number,
  backoff: Required<Omit<BackoffOptions, "maxAttempts">>,
  random?: () => number,
): number;

/** Anything shaped like the browser's WebSocket class. */
export interface WebSocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string; wasClean?: boolean }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface StreamerClientOptions {
  /** A fixed token (JWT); sent as the `token` query parameter. */
  token?: string;
  /**
   * Called before every connection attempt (so each reconnect uses a fresh token), and
   * shortly before the current token's `exp` to replace it with `auth.refresh` without
   * reconnecting.
   */
  getToken?: () => string | Promise<string>;
  /** Refresh this long before the token's `exp` (default 60000; half-way through a shorter life). */
  refreshLeadMs?: number;
  /** WebSocket implementation (default: globalThis.WebSocket). */
  WebSocket?: WebSocketConstructor;
  /** Interval of `ping` frames; a period without any frame back drops the socket (default 25000, 0 = off). */
  heartbeatMs?: number;
  backoff?: BackoffOptions;
  /** A connection open this long (or that received a frame) resets the backoff (default 5000). */
  stableMs?: number;
  /** Consider the socket open after this long without a first answer (default 3000). */
  handshakeTimeoutMs?: number;
  /** Re-send requests that got no answer before a drop, with the same id (default true). */
  retryUnacknowledged?: boolean;
  /** Retries after close code 4429 before giving up (default 3). */
  tooManyConnectionsRetries?: number;
  /** Injected for tests. */
  random?: () => number;
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (handle: unknown) => void;
  setInterval?: (fn: () => void, ms: number) => unknown;
  clearInterval?: (handle: unknown) => void;
  now?: () => number;
}

export interface Progress {
  requestId: string;
  /** 0..100, never decreasing. */
  percentage: number;
  message: string;
  details?: unknown;
}

export interface RequestOptions {
  /** Called for every progress update (asynchronous actions). */
  onProgress?: (progress: Progress) => void;
  /**
   * Called for every chunk of the request's output stream (protocol 1.1), once each and
   * in `seq` order, also across reconnections (a resume asks for the chunks after the
   * last `seq` seen).
   */
  onOutput?: (chunk: string | Record<string, unknown>, seq: number) => void;
  /** Called when the server acknowledges an asynchronous action. */
  onAcknowledged?: (frame: AcknowledgmentFrame) => void;
  /** Aborting sends `request.cancel` and rejects with code CANCELLED. */
  signal?: AbortSignal;
  /** Request id (1–128 characters); default crypto.randomUUID(). */
  id?: string;
  /** Echoed back by the server in response/complete frames. */
  metadata?: Record<string, unknown>;
  /** Reject with TIMEOUT when nothing settles the request in time. */
  timeoutMs?: number;
}

export type RequestStatus = "PENDING" | "PROCESSING" | "RETRYING" | "COMPLETED" | "FAILED" | "CANCELLED";

export interface RequestRecord<R = unknown> {
  request_id: string;
  action: string;
  status: RequestStatus;
  percentage: number;
  message: string;
  created_at: number;
  started_at: number | null;
  ended_at: number | null;
  result?: R;
  error?: { code: string; message: string; details?: unknown };
}

export interface AcknowledgmentFrame {
  type: "acknowledgment";
  timestamp: number;
  request_id: string;
  status: "queued";
  message: string;
  /** Set when a watching connection hears of a request it did not start (1.1). */
  action?: string;
}

/** A request of this user that this client did not start, announced by `watch()`. */
export interface WatchedRequest<T = unknown> {
  readonly requestId: string;
  readonly action: string;
  /** Settles like the promise of `request()`: the result, or a StreamerError. */
  readonly result: Promise<T>;
  /** Called like `RequestOptions.onProgress`; returns the same object. */
  onProgress(callback: (progress: Progress) => void): WatchedRequest<T>;
  /** Called like `RequestOptions.onOutput` for the chunks heard from now on (and, after a
   * reconnect, those missed meanwhile); returns the same object. */
  onOutput(callback: (chunk: string | Record<string, unknown>, seq: number) => void): WatchedRequest<T>;
  cancel(): Promise<RequestRecord>;
}

/** Any server frame (the `message` event carries those not about a pending request). */
export interface ServerFrame {
  type: string;
  timestamp?: number;
  request_id?: string | null;
  [key: string]: unknown;
}

export interface StreamerClientEventMap {
  state: CustomEvent<ConnectionState>;
  reconnect: CustomEvent<{ attempt: number; delayMs: number; code: number; reason: string }>;
  /** Outcome of an automatic `auth.refresh`; a failed one keeps the socket until the server closes it. */
  refresh: CustomEvent<{ ok: boolean; expiresAt?: number; reason?: string }>;
  message: CustomEvent<ServerFrame>;
  error: CustomEvent<StreamerError>;
  /** A request this client did not start, while `watch()` is on. */
  request: CustomEvent<WatchedRequest>;
}

export declare class StreamerClient extends EventTarget {
  constructor(url: string, options?: StreamerClientOptions);
  readonly url: string;
  readonly state: ConnectionState;
  readonly pendingIds: string[];
  /** Code and reason of the last socket close, if any. */
  lastClose: { code: number; reason: string } | null;

  /** Resolves once open; rejects when refused for good (4401/4403/4429) or closed first. */
  connect(): Promise<void>;
  /** Close for good; pending requests reject with CLOSED. */
  close(code?: number, reason?: string): void;
  /** Close the socket as a network failure would; the client reconnects and resumes. */
  dropConnection(): void;

  request(action: "echo", payload?: Record<string, unknown>, options?: RequestOptions): Promise<{ echo: Record<string, unknown> }>;
  request(
    action: "request.status",
    payload: { request_id: string; subscribe?: boolean },
    options?: RequestOptions,
  ): Promise<RequestRecord>;
  request(action: "request.cancel", payload: { request_id: string }, options?: RequestOptions): Promise<RequestRecord>;
  request(
    action: "request.list",
    payload?: { status?: RequestStatus; limit?: number; cursor?: string | null },
    options?: RequestOptions,
  ): Promise<{ requests: RequestRecord[]; cursor: string | null }>;

  /** Any other action: resolves with `data` (sync) or `result` (async). */
  request<T = unknown>(action: string, payload?: Record<string, unknown>, options?: RequestOptions): Promise<T>;

  /**
   * Follow a request started earlier (before a page reload, or by another client) until
   * it ends; resolves with its result. Re-subscribes after every reconnection.
   */
  resume<T = unknown>(
    requestId: string,
    options?: Pick<RequestOptions, "onProgress" | "onOutput" | "signal" | "timeoutMs"> & {
      /** With `onOutput`: the last chunk already seen (default 0: replay them all). */
      afterSeq?: number;
    },
  ): Promise<T>;

  /** Cancel a request by id; resolves with its record. */
  cancel(requestId: string): Promise<RequestRecord>;

  /**
   * Receive every request of this user (`request.watch`), now and after each
   * reconnection; each one this client did not start fires a `request` event.
   * `watch(false)` stops.
   */
  watch(enabled?: boolean): Promise<{ watching: boolean; requests: string[] }>;

  addEventListener<K extends keyof StreamerClientEventMap>(
    type: K,
    listener: (event: StreamerClientEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  removeEventListener<K extends keyof StreamerClientEventMap>(
    type: K,
    listener: (event: StreamerClientEventMap[K]) => void,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void;
}

export default StreamerClient;
