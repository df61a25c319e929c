"""ASGI middleware for the back-end HTTP APIs (publish, the jobs API, API Gateway
events): check the caller from the headers, then read at most a capped number of body
bytes, before Django sees the request.

Django's ASGI handler reads a whole request body (to memory or a temporary file) before
any view runs, so a view can neither authenticate first nor refuse a huge body unread.
Here an unauthenticated caller gets its 401/403 with no body byte read, and a body over
the cap (by ``Content-Length``, or counted while it streams in) gets 413 as soon as the
cap is passed; a body within the cap is handed on to Django unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from protocol import codec

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[Scope, Any, Any], Awaitable[None]]


@dataclass(frozen=True)
class Refusal:
    """An error answer: HTTP status and the API's ``{"error": {code, message}}``."""

    status: int
    code: str
    message: str


TOO_LARGE = Refusal(413, "PAYLOAD_TOO_LARGE", "Request body too large")
BAD_LENGTH = Refusal(400, "VALIDATION_ERROR", "Invalid Content-Length")

# Checks the caller from the (lower-cased) headers; may add entries for the view to the
# scope it gets (e.g. the authenticated key), so the view need not check again.
Gate = Callable[[Mapping[str, str], dict[str, Any]], Awaitable[Refusal | None]]


class BodyGuard:
    """Wraps the HTTP application; ``gates`` maps a path to the check of its callers (a
    key ending in ``/`` covers every path below it); ``max_bytes`` gives the cap (read
    per request, so a settings change applies).

    Refusals on the paths in ``with_retryable`` (keys of ``gates``) carry the jobs API's
    ``"retryable": false``; the others keep the 1.0 shape ``{code, message}`` of
    ``POST /api/v1/publish``.
    """

    def __init__(
        self,
        app: App,
        gates: Mapping[str, Gate],
        max_bytes: Callable[[], int],
        *,
        with_retryable: Collection[str] = (),
    ) -> None:
        self.app = app
        self.gates = dict(gates)
        self.prefixes = sorted((p for p in self.gates if p.endswith("/")), key=len, reverse=True)
        self.with_retryable = frozenset(with_retryable)
        self.max_bytes = max_bytes

    def _route(self, path: str) -> str | None:
        """The key of ``gates`` that covers ``path``: itself, else its longest prefix."""
        if path in self.gates:
            return path
        return next((p for p in self.prefixes if path.startswith(p)), None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._route(scope.get("path", "")) if scope["type"] == "http" else None
        if route is None:
            return await self.app(scope, receive, send)
        gate = self.gates[route]
        retryable = route in self.with_retryable
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope.get("headers", [])
        }
        extra: dict[str, Any] = {}
        limit = self.max_bytes()
        refusal = await gate(headers, extra) or self._length_refusal(headers, limit)
        if refusal is not None:
            await respond(send, refusal, retryable=retryable)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > limit:
                await respond(send, TOO_LARGE, retryable=retryable)
                return
            if not message.get("more_body", False):
                break
        await self.app({**scope, **extra}, _replay(bytes(body), receive), send)

    @staticmethod
    def _length_refusal(headers: Mapping[str, str], limit: int) -> Refusal | None:
        declared = headers.get("content-length")
        if declared is None:
            return None  # chunked: counted while it arrives
        if not declared.strip().isdigit():
            return BAD_LENGTH
        return TOO_LARGE if int(declared) > limit else None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields the buffered body once, then the client's own events."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> dict[str, Any]:
        return pending.pop() if pending else await receive()

    return replay


def error_body(refusal: Refusal, *, retryable: bool = False) -> dict[str, Any]:
    """The API's ``{"error": {...}}`` for ``refusal`` (a refusal is never retryable:
    the same request is refused again), with ``retryable`` only when asked."""
    error: dict[str, Any] = {"code": refusal.code, "message": refusal.message}
    if retryable:
        error["retryable"] = False
    return {"error": error}


async def respond(send: Send, refusal: Refusal, *, retryable: bool = False) -> None:
    """Send ``refusal`` as the JSON error body the API uses."""
    body = codec.dumps(error_body(refusal, retryable=retryable))
    await send(
        {
            "type": "http.response.start",
            "status": refusal.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
