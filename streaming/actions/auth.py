"""``auth.refresh`` (docs/protocol.md §3, 1.1): a new token for a live connection.

The new token goes through every check of the handshake (signature, claims, issuer,
audience, lifetime cap, tenant still active) and must name the same ``sub`` and
``tenant_id``; otherwise the answer is FORBIDDEN and the connection keeps its current
token. On success the session's identity is replaced (permissions come from the new
token from then on) and the connection record gets the new permissions and expiry in
one UpdateItem, so API Gateway sessions rebuilt from it and the expiry sweep agree.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from connections.storage_pool import run_storage
from protocol.errors import ErrorCode, ProtocolError
from storage.connection import connection_store
from storage.errors import NotFound
from streaming.actions.registry import ActionContext, action
from streaming.auth import MAX_TOKEN_BYTES, TOKEN_EXPIRED, AuthFailure, verify_token
from streaming.session import active_policy


class RefreshPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")
    token: str = Field(min_length=1, max_length=MAX_TOKEN_BYTES)


def _forbidden(reason: str) -> ProtocolError:
    return ProtocolError(ErrorCode.FORBIDDEN, "Token refused", {"reason": reason})


@action("auth.refresh", schema=RefreshPayload)
async def auth_refresh(ctx: ActionContext, payload: RefreshPayload) -> dict[str, Any]:
    """Replace the connection's token without reconnecting; ``data = {"expires_at": ms}``."""
    session = ctx.session
    try:
        identity = verify_token(payload.token)
        await active_policy(identity.tenant_id)
    except AuthFailure as failure:
        reason = "expired" if failure.reason == TOKEN_EXPIRED else "invalid_token"
        raise _forbidden(reason) from None
    current = session.identity
    if (identity.tenant_id, identity.user_id) != (current.tenant_id, current.user_id):
        raise _forbidden("identity_mismatch")
    assert identity.expires_at is not None  # verify_token requires exp
    try:
        await run_storage(
            connection_store.set_token,
            session.connection_id,
            tuple(sorted(identity.permissions)),
            identity.expires_at,
        )
    except NotFound:
        # The record is gone (cleanup, admin disconnect): the socket is on its way out.
        raise _forbidden("connection_gone") from None
    session.identity = identity
    return {"expires_at": identity.expires_at}
