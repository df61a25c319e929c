"""The Streamer client for Python (asyncio, on ``websockets``): wire protocol version 1.1.

Same behaviour as the JavaScript client (``clients/js/src/streamer-client.js``;
docs/clients.md describes both):

* requests are correlated by ``id`` (a UUID4 unless given); a request made while the
  socket is down is sent once it is open;
* :meth:`StreamerClient.request` returns ``data`` (synchronous actions) or ``result``
  (asynchronous actions) and raises :class:`StreamerError`; it settles exactly once;
* cancelling the awaiting task (``asyncio`` cancellation, ``asyncio.timeout``...) sends
  ``request.cancel``; so does :meth:`StreamerClient.cancel`;
* a ``ping`` frame every ``heartbeat_s``; a socket that answers nothing for a whole
  period is treated as dead;
* after a drop the client reconnects with capped exponential backoff and jitter, asking
  ``get_token`` for a fresh token each time, and resumes every acknowledged
  asynchronous request with ``request.status`` + ``subscribe``;
* close codes 4401 / 4403 / 4429 are not retried forever.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import inspect
import json
import logging
import random as _random
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

log = logging.getLogger(__name__)

IDLE = "idle"
CONNECTING = "connecting"
OPEN = "open"
RECONNECTING = "reconnecting"
CLOSED = "closed"

CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN_TENANT = 4403
CLOSE_TOO_MANY_CONNECTIONS = 4429
CLOSE_DROPPED = 4000

FINAL_STATUSES = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
_SETTLED_MEMORY = 1000

TokenSource = Callable[[], "str | Awaitable[str]"]
ProgressCallback = Callable[["Progress"], Any]
OutputCallback = Callable[[Any, int], Any]  # (chunk, seq): protocol 1.1 output streams


class StreamerError(Exception):
    """An ``error`` frame from the server, or a failure of the client itself.

    Client-side codes: ``UNAUTHORIZED`` (close 4401), ``TENANT_FORBIDDEN`` (4403),
    ``TOO_MANY_CONNECTIONS`` (4429), ``CONNECTION_LOST``, ``CLOSED``, ``CANCELLED``,
    ``TIMEOUT``; every other code is the server's (docs/protocol.md §4).
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        details: Any = None,
        retryable: bool = False,
        request_id: str | None = None,
        close_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.retryable = bool(retryable)
        self.request_id = request_id
        self.close_code = close_code

    @classmethod
    def from_server(cls, error: Any, request_id: str | None) -> StreamerError:
        """From the ``error`` object of an ``error`` frame or of a request record."""
        e = error if isinstance(error, dict) else {}
        code = e.get("code")
        message = e.get("message")
        return cls(
            code if isinstance(code, str) else "INTERNAL_ERROR",
            message if isinstance(message, str) else "Request failed",
            details=e.get("details"),
            retryable=bool(e.get("retryable", False)),
            request_id=request_id,
        )

    def for_request(self, request_id: str) -> StreamerError:
        """A copy about ``request_id``."""
        return StreamerError(
            self.code,
            self.message,
            details=self.details,
            retryable=self.retryable,
            request_id=request_id,
            close_code=self.close_code,
        )

    def __repr__(self) -> str:
        return f"StreamerError({self.code!r}, {self.message!r}, request_id={self.request_id!r})"


@dataclass(frozen=True)
class Backoff:
    """Reconnection delays: ``min(max_s, initial_s * factor ** attempt)``, reduced at random
    by up to ``jitter`` (0..1) of itself; ``max_attempts`` consecutive failures (None: no
    limit) and the client gives up with ``CONNECTION_LOST``."""

    initial_s: float = 0.5
    max_s: float = 30.0
    factor: float = 2.0
    jitter: float = 0.5
    max_attempts: int | None = None

    def delay(self, attempt: int, random: Callable[[], float] = _random.random) -> float:
        base = min(self.max_s, self.initial_s * self.factor ** max(0, attempt))
        jitter = min(1.0, max(0.0, self.jitter))
        return max(0.0, base * (1 - jitter * random()))


@dataclass(frozen=True)
class Progress:
    """One progress update of an asynchronous request."""

    request_id: str
    percentage: float
    message: str
    details: Any = None


@dataclass(eq=False)
class _Pending:
    id: str
    frame: dict[str, Any]
    future: asyncio.Future[Any]
    on_progress: ProgressCallback | None = None
    on_acknowledged: Callable[[dict[str, Any]], Any] | None = None
    on_output: OutputCallback | None = None
    output_seq: int = 0  # the last output seq delivered; a resume asks for what follows
    held_output: dict[int, Any] = field(default_factory=dict)
    record_after_output: dict[str, Any] | None = None  # a final record, settled after replay
    sent: bool = False
    resent: bool = False
    acked: bool = False
    settled: bool = False
    percentage: float = -1.0
    message: str | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)


class WatchedRequest:
    """A request of this user that this client did not start, announced while
    :meth:`StreamerClient.watch` is on (``on_request``). ``result`` ends like
    :meth:`StreamerClient.request`: ``await watched.result`` returns the result or raises
    :class:`StreamerError`."""

    def __init__(self, client: StreamerClient, entry: _Pending, action: str) -> None:
        self._client = client
        self._entry = entry
        self.request_id = entry.id
        self.action = action
        self.result: asyncio.Future[Any] = entry.future

    def on_progress(self, callback: ProgressCallback) -> WatchedRequest:
        """Call ``callback(Progress)`` for its progress from now on; returns ``self``."""
        self._entry.on_progress = callback
        return self

    async def cancel(self) -> dict[str, Any]:
        """Cancel it (it is this user's); returns its public record."""
        return await self._client.cancel(self.request_id)


def token_expires_at(token: str | None) -> float | None:
    """The ``exp`` of a JWT in epoch seconds, or None when it has none or is not a JWT.

    Decoded only, never verified: the client just needs to know when to refresh.
    """
    if not isinstance(token, str) or token.count(".") != 2:
        return None
    part = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (binascii.Error, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return float(exp)


def _with_token(url: str, token: str | None) -> str:
    if not token:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "token"]
    query.append(("token", token))
    return urlunsplit(parts._replace(query=urlencode(query)))


class StreamerClient:
    """A Streamer connection with correlation, progress, cancellation, heartbeat,
    reconnection and resumption.

    ``on_state(state)``, ``on_message(frame)`` and ``on_error(error)`` may be plain
    functions or coroutine functions. ``on_message`` gets every server frame that is not
    about a pending request (for example frames pushed with ``send_to_user``).
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        get_token: TokenSource | None = None,
        heartbeat_s: float = 25.0,
        backoff: Backoff | None = None,
        handshake_timeout_s: float = 3.0,
        stable_s: float = 5.0,
        open_timeout_s: float = 10.0,
        retry_unacknowledged: bool = True,
        too_many_connections_retries: int = 3,
        refresh_lead_s: float = 60.0,
        on_state: Callable[[str], Any] | None = None,
        on_message: Callable[[dict[str, Any]], Any] | None = None,
        on_error: Callable[[StreamerError], Any] | None = None,
        on_request: Callable[[WatchedRequest], Any] | None = None,
        random: Callable[[], float] | None = None,
        connect_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.url = url
        self._token = token
        self._get_token = get_token
        self.heartbeat_s = heartbeat_s
        self.backoff = backoff or Backoff()
        self.handshake_timeout_s = handshake_timeout_s
        self.stable_s = stable_s
        self.open_timeout_s = open_timeout_s
        self.retry_unacknowledged = retry_unacknowledged
        self.too_many_connections_retries = too_many_connections_retries
        self.refresh_lead_s = refresh_lead_s
        self.on_state = on_state
        self.on_message = on_message
        self.on_error = on_error
        self.on_request = on_request
        self._random = random or _random.random
        self._connect_kwargs = connect_kwargs or {}

        self._state = IDLE
        self._ws: ClientConnection | None = None
        self._runner: asyncio.Task[None] | None = None
        self._pending: dict[str, _Pending] = {}
        self._internal: dict[str, asyncio.Future[Any]] = {}
        self._cancel_after_ack: set[str] = set()
        self._cancel_on_open: set[str] = set()
        self._settled: OrderedDict[str, None] = OrderedDict()
        self._waiters: list[asyncio.Future[None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._attempt = 0
        self._auth_retried = False
        self._limit_retries = 0
        self._awaiting_pong = False
        self._got_frame = False
        self._opened_at = 0.0
        self._send_lock: asyncio.Lock | None = None
        self._refresher: asyncio.Task[Any] | None = None
        self._watching = False
        self._watch_reply: asyncio.Task[Any] | None = None
        self.last_close: tuple[int, str] | None = None

    # --- public API ------------------------------------------------------------------

    @property
    def state(self) -> str:
        """idle, connecting, open, reconnecting or closed."""
        return self._state

    @property
    def pending_ids(self) -> list[str]:
        """Ids of the requests still waiting for their outcome."""
        return list(self._pending)

    async def __aenter__(self) -> StreamerClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the connection; returns once the server answered. Raises StreamerError
        when the server refuses it for good (4401 / 4403 / 4429) or ``close()`` comes
        first. Later drops are handled in the background."""
        if self._state == OPEN:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._start()
        await waiter

    async def close(self) -> None:
        """Close for good; pending requests raise ``CLOSED`` (their jobs go on running on
        the server and can be fetched later with ``request.status``)."""
        await self._shutdown(StreamerError("CLOSED", "The client was closed"))

    def drop_connection(self) -> None:
        """Abort the socket as a network failure would; the client reconnects and
        resumes. Meant for tests and demos."""
        ws = self._ws
        if ws is not None and ws.transport is not None:
            ws.transport.abort()

    async def request(
        self,
        action: str,
        payload: dict[str, Any] | None = None,
        *,
        on_progress: ProgressCallback | None = None,
        on_acknowledged: Callable[[dict[str, Any]], Any] | None = None,
        on_output: OutputCallback | None = None,
        id: str | None = None,
        metadata: dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        """Send a request and return its ``data`` (sync) or ``result`` (async).

        ``on_output(chunk, seq)`` gets the request's output stream, once each and in
        ``seq`` order, across reconnections too.

        Cancelling the calling task sends ``request.cancel`` for it. ``timeout_s`` raises
        ``StreamerError("TIMEOUT")`` (the request itself is left alone on the server).
        """
        request_id = id or str(uuid.uuid4())
        frame: dict[str, Any] = {
            "type": "request",
            "id": request_id,
            "action": action,
            "payload": payload if payload is not None else {},
        }
        if metadata is not None:
            frame["metadata"] = metadata
        return await self._track(
            request_id, frame, on_progress, on_acknowledged, timeout_s, on_output=on_output
        )

    async def resume(
        self,
        request_id: str,
        *,
        on_progress: ProgressCallback | None = None,
        on_output: OutputCallback | None = None,
        after_seq: int = 0,
        timeout_s: float | None = None,
    ) -> Any:
        """Follow a request started earlier (by another process, or before a restart)
        until it ends: ``request.status`` + ``subscribe`` now and after every
        reconnection. Returns its ``result``; raises like :meth:`request` (``NOT_FOUND``
        for an unknown id). Cancelling the awaiting task cancels the request. With
        ``on_output``, the output after ``after_seq`` is replayed first, then the live."""
        return await self._track(
            request_id, None, on_progress, None, timeout_s, on_output=on_output, after_seq=after_seq
        )

    async def _track(
        self,
        request_id: str,
        frame: dict[str, Any] | None,
        on_progress: ProgressCallback | None,
        on_acknowledged: Callable[[dict[str, Any]], Any] | None,
        timeout_s: float | None,
        *,
        on_output: OutputCallback | None = None,
        after_seq: int = 0,
    ) -> Any:
        if self._state == CLOSED:
            raise StreamerError("CLOSED", "The client is closed", request_id=request_id)
        if request_id in self._pending:
            raise StreamerError(
                "DUPLICATE_REQUEST",
                "A request with this id is already pending",
                request_id=request_id,
            )
        followed = frame is None
        entry = _Pending(
            id=request_id,
            frame=frame or {},
            future=asyncio.get_running_loop().create_future(),
            on_progress=on_progress,
            on_acknowledged=on_acknowledged,
            on_output=on_output,
            output_seq=max(0, int(after_seq)),
            sent=followed,
            acked=followed,
        )
        self._pending[request_id] = entry
        self._settled.pop(request_id, None)
        if self._state == IDLE:
            self._start()
        elif self._state == OPEN:
            if followed:
                self._spawn(self._resume(entry))
            else:
                await self._send_entry(entry)
        try:
            if timeout_s is None:
                return await asyncio.shield(entry.future)
            try:
                return await asyncio.wait_for(asyncio.shield(entry.future), timeout_s)
            except TimeoutError:
                if not entry.settled:
                    self._settle(
                        entry,
                        error=StreamerError(
                            "TIMEOUT", "No answer in time", retryable=True, request_id=request_id
                        ),
                    )
                return entry.future.result()
        except asyncio.CancelledError:
            if not entry.settled:
                self._abort(entry)
            raise

    async def cancel(self, request_id: str) -> dict[str, Any]:
        """Cancel a request by id (from this or an earlier connection); returns its public
        record. A pending ``request()`` for it raises ``CANCELLED``."""
        record = await self.request("request.cancel", {"request_id": request_id})
        entry = self._pending.get(request_id)
        if (
            entry is not None
            and isinstance(record, dict)
            and record.get("status") in FINAL_STATUSES
        ):
            self._settle_from_record(entry, record)
        return record

    async def watch(self, enabled: bool = True) -> dict[str, Any]:
        """Receive every request of this user on this connection, however it was started
        (``request.watch``), now and after every reconnection: each one this client did
        not start is passed to ``on_request`` as a :class:`WatchedRequest`.
        ``watch(False)`` stops. Returns the server's answer ``{"watching", "requests"}``."""
        self._watching = bool(enabled)
        if self._state == OPEN:
            return await self._internal_request("request.watch", {"enabled": self._watching})
        if not self._watching:
            return {"watching": False, "requests": []}
        await self.connect()  # opening sends request.watch (see _confirm_open)
        assert self._watch_reply is not None
        return await self._watch_reply

    def _send_watch(self) -> None:
        self._watch_reply = self._spawn(self._internal_request("request.watch", {"enabled": True}))
        # A failed re-watch is retried on the next open; nobody else may look at it.
        self._watch_reply.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _adopt(self, frame: dict[str, Any]) -> None:
        """Track a request announced to this watching connection like one it started."""
        entry = _Pending(
            id=frame["request_id"],
            frame={},
            future=asyncio.get_running_loop().create_future(),
            sent=True,
            acked=True,
        )
        # A watcher may never look at how it ends: mark an error as retrieved.
        entry.future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._pending[entry.id] = entry
        self._emit(self.on_request, WatchedRequest(self, entry, frame["action"]))

    # --- connection loop -------------------------------------------------------------

    def _start(self) -> None:
        if self._runner is not None and not self._runner.done():
            return
        self._attempt = 0
        self._auth_retried = False
        self._limit_retries = 0
        self._set_state(CONNECTING)
        self._runner = asyncio.get_running_loop().create_task(self._run(), name="streamer-client")

    def _set_state(self, state: str) -> None:
        if self._state == state:
            return
        self._state = state
        self._emit(self.on_state, state)

    def _emit(self, callback: Callable[[Any], Any] | None, arg: Any) -> None:
        if callback is None:
            return
        try:
            result = callback(arg)
            if inspect.isawaitable(result):
                self._spawn(result)
        except Exception:
            log.exception("streamer client callback failed")

    def _spawn(self, awaitable: Awaitable[Any]) -> asyncio.Task[Any]:
        async def run() -> Any:
            return await awaitable

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _current_token(self) -> str | None:
        if self._get_token is not None:
            self._token = await self._fresh_token()
        return self._token

    async def _fresh_token(self) -> str:
        assert self._get_token is not None
        token = self._get_token()
        if inspect.isawaitable(token):
            token = await token
        return token

    async def _refresh_loop(self, ws: ClientConnection) -> None:
        """With ``get_token``, send ``auth.refresh`` (docs/protocol.md §3) shortly before the
        token's ``exp``: ``refresh_lead_s`` before it, or half-way through a shorter
        remaining life. A refused or failed refresh keeps the socket: the server then
        closes it with 4401 and the client reconnects with a fresh token as usual."""
        while self._get_token is not None and ws is self._ws:
            expires_at = token_expires_at(self._token)
            if expires_at is None:
                return
            now = time.time()
            at = max(expires_at - self.refresh_lead_s, now + (expires_at - now) / 2)
            await asyncio.sleep(max(0.0, at - now))
            if ws is not self._ws or self._state != OPEN:
                return
            try:
                token = await self._fresh_token()
            except Exception as exc:
                log.info("token refresh skipped: get_token failed (%s)", type(exc).__name__)
                return
            new_expiry = token_expires_at(token)
            if new_expiry is None or new_expiry <= expires_at:
                log.info("token refresh skipped: get_token gave no newer token")
                return
            try:
                await self._internal_request("auth.refresh", {"token": token})
            except StreamerError as exc:
                log.info("token refresh refused: %s", exc.code)
                return
            self._token = token

    async def _run(self) -> None:
        while self._state != CLOSED:
            code, reason = await self._connect_once()
            if self._state == CLOSED:
                return
            delay = self._after_close(code, reason)
            if delay is None:
                return
            await asyncio.sleep(delay)

    async def _connect_once(self) -> tuple[int, str]:
        """One connection, from token to close; returns (close code, reason)."""
        try:
            token = await self._current_token()
        except Exception as exc:
            return 0, f"get_token failed: {type(exc).__name__}"
        kwargs: dict[str, Any] = {
            "open_timeout": self.open_timeout_s,
            "ping_interval": None,  # heartbeat with protocol pings (they count as activity)
            "max_size": None,
            "close_timeout": 2,
        }
        kwargs.update(self._connect_kwargs)
        try:
            ws = await ws_connect(_with_token(self.url, token), **kwargs)
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            return 1006, f"connection failed: {type(exc).__name__}"
        if self._state == CLOSED:
            await ws.close()
            return 1000, ""
        self._ws = ws
        self._send_lock = asyncio.Lock()
        self._got_frame = False
        self._opened_at = time.monotonic()
        self._awaiting_pong = True
        heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(ws))
        handshake = asyncio.get_running_loop().call_later(
            self.handshake_timeout_s, lambda: self._spawn(self._confirm_open(ws))
        )
        try:
            await self._send_raw({"type": "ping"}, ws)
            while True:
                text = await ws.recv()
                await self._on_text(ws, text)
        except ConnectionClosed:
            pass
        finally:
            handshake.cancel()
            heartbeat.cancel()
            if self._refresher is not None:
                self._refresher.cancel()
                self._refresher = None
            if self._ws is ws:
                self._ws = None
            self._fail_internal()
        code = ws.close_code if ws.close_code is not None else 1006
        return code, ws.close_reason or ""

    def _after_close(self, code: int, reason: str) -> float | None:
        """Decide what follows a close: a delay before the next attempt, or None (stop)."""
        self.last_close = (code, reason)
        healthy = self._opened_at > 0 and (
            self._got_frame or time.monotonic() - self._opened_at >= self.stable_s
        )
        self._opened_at = 0.0
        if healthy:
            self._attempt = 0
            self._limit_retries = 0
            self._auth_retried = False
        if code == CLOSE_UNAUTHORIZED:
            if self._get_token is not None and not self._auth_retried:
                self._auth_retried = True
                return self._schedule(code, reason, 0.0)
            self._fail(
                StreamerError(
                    "UNAUTHORIZED",
                    "The server refused the token (invalid or expired)",
                    close_code=code,
                    details={"reason": reason},
                )
            )
            return None
        if code == CLOSE_FORBIDDEN_TENANT:
            self._fail(
                StreamerError(
                    "TENANT_FORBIDDEN",
                    "The tenant is unknown or disabled",
                    close_code=code,
                    details={"reason": reason},
                )
            )
            return None
        if code == CLOSE_TOO_MANY_CONNECTIONS:
            error = StreamerError(
                "TOO_MANY_CONNECTIONS",
                "The tenant's connection limit is reached",
                retryable=True,
                close_code=code,
                details={"reason": reason},
            )
            if self._limit_retries >= self.too_many_connections_retries:
                self._fail(error)
                return None
            self._limit_retries += 1
            self._emit(self.on_error, error)
        return self._schedule(code, reason, None)

    def _schedule(self, code: int, reason: str, delay: float | None) -> float | None:
        if self.backoff.max_attempts is not None and self._attempt >= self.backoff.max_attempts:
            self._fail(
                StreamerError(
                    "CONNECTION_LOST",
                    "Could not reconnect",
                    retryable=True,
                    close_code=code,
                    details={"reason": reason},
                )
            )
            return None
        if delay is None:
            delay = self.backoff.delay(self._attempt, self._random)
        self._attempt += 1
        self._set_state(RECONNECTING)
        log.debug("reconnecting in %.3fs (attempt %d, close %s)", delay, self._attempt, code)
        return delay

    def _fail(self, error: StreamerError) -> None:
        self._emit(self.on_error, error)
        self._close_now(error)

    def _close_now(self, error: StreamerError) -> None:
        was_closed = self._state == CLOSED
        self._state = CLOSED
        for entry in list(self._pending.values()):
            self._settle(entry, error=error.for_request(entry.id))
        self._fail_internal(error)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(error)
        if not was_closed:
            self._emit(self.on_state, CLOSED)

    async def _shutdown(self, error: StreamerError) -> None:
        self._close_now(error)
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        runner = self._runner
        if runner is not None and runner is not asyncio.current_task() and not runner.done():
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await runner
        for task in list(self._tasks):
            task.cancel()

    def _fail_internal(self, error: StreamerError | None = None) -> None:
        internal, self._internal = self._internal, {}
        for future in internal.values():
            if not future.done():
                future.set_exception(
                    error or StreamerError("CONNECTION_LOST", "Connection lost", retryable=True)
                )

    async def _confirm_open(self, ws: ClientConnection) -> None:
        if ws is not self._ws or self._state in (OPEN, CLOSED):
            return
        self._set_state(OPEN)
        cancels, self._cancel_on_open = self._cancel_on_open, set()
        for request_id in cancels:
            self._spawn(self._cancel_quietly(request_id))
        for entry in list(self._pending.values()):
            if entry.acked and not entry.settled:
                self._spawn(self._resume(entry))
        for entry in list(self._pending.values()):
            if entry.acked or entry.settled:
                continue
            if not entry.sent:
                await self._send_entry(entry)
            elif self.retry_unacknowledged:
                entry.resent = True
                await self._send_entry(entry)
            else:
                self._settle(
                    entry,
                    error=StreamerError(
                        "CONNECTION_LOST",
                        "The connection dropped before the server answered",
                        retryable=True,
                        request_id=entry.id,
                    ),
                )
        if self._watching:
            self._send_watch()
        if self._refresher is None:
            self._refresher = self._spawn(self._refresh_loop(ws))
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _heartbeat(self, ws: ClientConnection) -> None:
        if not self.heartbeat_s or self.heartbeat_s <= 0:
            return
        while True:
            await asyncio.sleep(self.heartbeat_s)
            if ws is not self._ws:
                return
            if self._awaiting_pong:
                log.info("no answer for %.1fs: dropping the socket", self.heartbeat_s)
                if ws.transport is not None:
                    ws.transport.abort()
                return
            self._awaiting_pong = True
            await self._send_raw({"type": "ping"}, ws)

    # --- frames ----------------------------------------------------------------------

    async def _send_raw(self, frame: dict[str, Any], ws: ClientConnection | None = None) -> bool:
        ws = ws or self._ws
        if ws is None or self._send_lock is None:
            return False
        try:
            async with self._send_lock:
                await ws.send(json.dumps(frame, separators=(",", ":")))
        except ConnectionClosed:
            return False
        return True

    async def _send_entry(self, entry: _Pending) -> None:
        if await self._send_raw(entry.frame):
            entry.sent = True

    async def _internal_request(self, action: str, payload: dict[str, Any]) -> Any:
        if self._state != OPEN or self._ws is None:
            raise StreamerError("CONNECTION_LOST", "Not connected", retryable=True)
        request_id = str(uuid.uuid4())
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._internal[request_id] = future
        if not await self._send_raw(
            {"type": "request", "id": request_id, "action": action, "payload": payload}
        ):
            self._internal.pop(request_id, None)
            raise StreamerError("CONNECTION_LOST", "Not connected", retryable=True)
        return await future

    async def _on_text(self, ws: ClientConnection, text: str | bytes) -> None:
        self._got_frame = True
        self._awaiting_pong = False
        if self._state != OPEN:
            await self._confirm_open(ws)
        try:
            frame = json.loads(text)
        except ValueError:
            return
        if not isinstance(frame, dict) or frame.get("type") == "pong":
            return
        request_id = frame.get("request_id")
        if isinstance(request_id, str):
            future = self._internal.pop(request_id, None)
            if future is not None:
                if not future.done():
                    if frame.get("type") == "error":
                        future.set_exception(
                            StreamerError.from_server(frame.get("error"), request_id)
                        )
                    else:
                        future.set_result(frame.get("data"))
                return
            entry = self._pending.get(request_id)
            if entry is not None:
                self._on_request_frame(entry, frame)
                return
            if request_id in self._cancel_after_ack:
                if frame.get("type") == "acknowledgment":
                    self._spawn(self._cancel_quietly(request_id))
                if frame.get("type") != "progress":
                    self._cancel_after_ack.discard(request_id)
                return
            if request_id in self._settled:
                return
            if (
                self._watching
                and frame.get("type") == "acknowledgment"
                and isinstance(frame.get("action"), str)
            ):
                self._adopt(frame)
                return
        self._emit(self.on_message, frame)

    def _on_request_frame(self, entry: _Pending, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "acknowledgment":
            entry.acked = True
            if entry.on_acknowledged is not None:
                self._emit(entry.on_acknowledged, frame)
        elif kind == "progress":
            entry.acked = True
            self._progress(
                entry, frame.get("percentage"), frame.get("message"), frame.get("details")
            )
        elif kind == "output":
            entry.acked = True
            self._output(entry, frame.get("seq"), frame.get("data"))
        elif kind == "response":
            if frame.get("success") is False:
                data = frame.get("data")
                error = data.get("error") if isinstance(data, dict) else None
                self._settle(
                    entry,
                    error=StreamerError.from_server(
                        error or {"code": "PROCESSING_FAILED", "message": "Request failed"},
                        entry.id,
                    ),
                )
            else:
                self._settle(entry, result=frame.get("data"))
        elif kind == "complete":
            self._settle(entry, result=frame.get("result"))
        elif kind == "error":
            error = StreamerError.from_server(frame.get("error"), entry.id)
            if error.code == "DUPLICATE_REQUEST" and entry.resent:
                # The server had stored the request before the drop: follow that one.
                entry.acked = True
                self._spawn(self._resume(entry))
                return
            self._settle(entry, error=error)
        else:
            self._emit(self.on_message, frame)

    def _progress(
        self, entry: _Pending, percentage: Any, message: Any, details: Any = None
    ) -> None:
        if not isinstance(percentage, int | float) or percentage < entry.percentage:
            return
        if percentage == entry.percentage and message == entry.message:
            return
        entry.percentage = float(percentage)
        entry.message = message
        if entry.on_progress is not None:
            self._emit(
                entry.on_progress,
                Progress(
                    entry.id,
                    float(percentage),
                    message if isinstance(message, str) else "",
                    details,
                ),
            )

    def _output(self, entry: _Pending, seq: Any, data: Any) -> None:
        """In seq order, once each: a chunk ahead of a replay waits, a repeat is dropped."""
        if not isinstance(seq, int) or seq <= entry.output_seq:
            return
        entry.held_output[seq] = data
        while entry.output_seq + 1 in entry.held_output:
            entry.output_seq += 1
            chunk = entry.held_output.pop(entry.output_seq)
            if entry.on_output is not None:
                self._emit(functools.partial(entry.on_output, chunk), entry.output_seq)
        record = entry.record_after_output
        if record is not None and entry.output_seq >= int(record.get("output_seq") or 0):
            self._settle_from_record(entry, record)

    async def _resume(self, entry: _Pending) -> None:
        status: dict[str, Any] = {"request_id": entry.id, "subscribe": True}
        if entry.on_output is not None:
            status["after_seq"] = entry.output_seq
        while not entry.settled:
            try:
                record = await self._internal_request("request.status", status)
            except StreamerError as exc:
                if entry.settled or exc.code == "CONNECTION_LOST":
                    return  # the next open resumes it again
                if exc.retryable:
                    await asyncio.sleep(self.backoff.delay(0, self._random))
                    continue
                self._settle(entry, error=exc.for_request(entry.id))
                return
            if entry.settled or not isinstance(record, dict):
                return
            missing = int(record.get("output_seq") or 0) > entry.output_seq
            if record.get("status") in FINAL_STATUSES and entry.on_output and missing:
                entry.record_after_output = record  # the replayed chunks come first
            elif record.get("status") in FINAL_STATUSES:
                self._settle_from_record(entry, record)
            else:
                self._progress(entry, record.get("percentage"), record.get("message"))
            return

    def _settle_from_record(self, entry: _Pending, record: dict[str, Any]) -> None:
        status = record.get("status")
        if status == "COMPLETED":
            self._progress(entry, 100.0, record.get("message"))
            self._settle(entry, result=record.get("result"))
            return
        fallback = (
            {"code": "CANCELLED", "message": "Request cancelled"}
            if status == "CANCELLED"
            else {"code": "PROCESSING_FAILED", "message": "Request failed"}
        )
        self._settle(
            entry, error=StreamerError.from_server(record.get("error") or fallback, entry.id)
        )

    async def _cancel_quietly(self, request_id: str) -> None:
        try:
            await self._internal_request("request.cancel", {"request_id": request_id})
        except StreamerError as exc:
            if exc.code == "CONNECTION_LOST":
                self._cancel_on_open.add(request_id)

    def _abort(self, entry: _Pending) -> None:
        if entry.sent:
            # Offline: cancel as soon as the socket is open again.
            if self._state == OPEN:
                self._spawn(self._cancel_quietly(entry.id))
            else:
                self._cancel_on_open.add(entry.id)
            if not entry.acked:
                self._cancel_after_ack.add(entry.id)
        self._settle(
            entry, error=StreamerError("CANCELLED", "Request cancelled", request_id=entry.id)
        )

    def _settle(
        self, entry: _Pending, *, result: Any = None, error: StreamerError | None = None
    ) -> None:
        if entry.settled:
            return
        entry.settled = True
        self._pending.pop(entry.id, None)
        self._settled[entry.id] = None
        while len(self._settled) > _SETTLED_MEMORY:
            self._settled.popitem(last=False)
        if entry.future.done():
            return
        if error is not None:
            entry.future.set_exception(error)
            # Nobody may be waiting any more (the caller was cancelled): mark retrieved.
            entry.future.add_done_callback(lambda f: f.exception())
        else:
            entry.future.set_result(result)
