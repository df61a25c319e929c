"""One request pipeline for every entry point (the Channels consumer and the API
Gateway handlers): rate limit → parse → route → permission → validate → run or
enqueue → frames to send back. Every failure becomes an error frame; nothing raised
here reaches a client as library text."""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings

from protocol import frames
from protocol.errors import ErrorCode, ProtocolError
from protocol.parsing import ClientRequest, Ping, parse_frame
from storage.errors import StorageUnavailable
from storage.requests.store import RequestStore, request_store
from streaming import lifecycle
from streaming.actions.registry import ActionContext, ActionRegistry, ActionSpec, registry
from streaming.metrics import ERRORS, FRAMES_IN
from streaming.ratelimit import utf8_size
from streaming.session import Session

log = logging.getLogger(__name__)


def _rate_limited(wait_ms: int, request_id: str | None) -> ProtocolError:
    return ProtocolError(
        ErrorCode.RATE_LIMITED,
        "Too many messages",
        {"retry_after_ms": wait_ms},
        request_id=request_id,
    )


class Pipeline:
    """Turns one client frame into the frames that answer it."""

    def __init__(
        self,
        *,
        actions: ActionRegistry = registry,
        store: RequestStore = request_store,
        max_frame_bytes: int = 128 * 1024,
    ) -> None:
        self.actions = actions
        self.store = store
        self.max_frame_bytes = max_frame_bytes

    async def handle(
        self, session: Session, data: str | bytes | None, *, binary: bool = False
    ) -> list[dict[str, Any]]:
        """Answer one frame. Never raises."""
        request_id: str | None = None
        try:
            # A frame refused by the frame bucket spends no inbound bytes.
            wait_ms = session.limiter.take() or session.inbound.take(utf8_size(data))
            try:
                message = parse_frame(data, binary=binary, max_bytes=self.max_frame_bytes)
            except ProtocolError as exc:
                if not wait_ms:
                    raise
                # docs/protocol.md §5 limits frames, not just requests: a flood of bad
                # frames is rate limited like any other.
                raise _rate_limited(wait_ms, exc.request_id) from None
            if isinstance(message, Ping):
                FRAMES_IN.labels("ping").inc()
                if wait_ms:
                    raise _rate_limited(wait_ms, None)
                return [frames.pong()]
            FRAMES_IN.labels("request").inc()
            request_id = message.id
            if wait_ms:
                raise _rate_limited(wait_ms, request_id)
            return await self.dispatch(session, message)
        except ProtocolError as exc:
            if request_id is None:
                FRAMES_IN.labels("invalid").inc()
                request_id = exc.request_id
            return [self._error(request_id, exc)]
        except StorageUnavailable:
            return [self._error(request_id, ProtocolError(ErrorCode.SERVICE_UNAVAILABLE))]
        except Exception:
            log.exception("unexpected error handling a frame")
            return [self._error(request_id, ProtocolError(ErrorCode.INTERNAL_ERROR))]

    async def dispatch(self, session: Session, request: ClientRequest) -> list[dict[str, Any]]:
        """Route a parsed request to its action."""
        spec = self.actions.get(request.action)
        if spec.permission and spec.permission not in session.identity.permissions:
            raise ProtocolError(ErrorCode.FORBIDDEN, "Not allowed", {"action": request.action})
        payload = spec.validate(request.payload)
        if spec.mode == "async":
            return [await self.enqueue(session, request, spec)]
        ctx = ActionContext(session=session, request=request)
        if spec.is_coroutine:
            data = await spec.handler(ctx, payload)
        else:
            data = await sync_to_async(spec.handler, thread_sensitive=False)(ctx, payload)
        return [frames.response(request.id, data, metadata=request.metadata)]

    async def enqueue(
        self, session: Session, request: ClientRequest, spec: ActionSpec
    ) -> dict[str, Any]:
        """Store the request durably and acknowledge it (:func:`lifecycle.submit`: quota
        holds from the session's tenant policy, one conditional write, a worker woken)."""
        record = await lifecycle.submit(
            spec,
            tenant_id=session.identity.tenant_id,
            user_id=session.identity.user_id,
            request_id=request.id,
            payload=request.payload,
            metadata=request.metadata,
            origin=session.target,
            limits=lifecycle.quota_limits(session.policy),
            store=self.store,
        )
        return lifecycle.acknowledgment(record)

    @staticmethod
    def _error(request_id: str | None, exc: ProtocolError) -> dict[str, Any]:
        ERRORS.labels(exc.code.value).inc()
        return frames.error_from(request_id, exc)


_pipeline: Pipeline | None = None


def get_pipeline() -> Pipeline:
    """The process-wide pipeline, built from settings on first use (both transports
    answer frames with it)."""
    global _pipeline
    if _pipeline is None:
        _pipeline = Pipeline(max_frame_bytes=settings.STREAMER_MAX_FRAME_BYTES)
    return _pipeline
