"""What every DynamoDB model and store shares: where the tables are, time, cursors and
the owner key (failures are mapped in :mod:`storage.error_mapping`, arguments checked
in :mod:`storage.validators`).

Models register themselves with :func:`register_model`; :func:`configure` points all of
them at an endpoint and table prefix (done from settings at start-up, and by tests for
moto or the embedded server).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import botocore.session
import orjson
import pynamodb.connection.base as pynamodb_connection_base
from prometheus_client import Counter
from pynamodb.models import Model

from protocol.frames import now_ms as now_ms  # stored times are epoch ms, like frame timestamps
from storage.errors import ValidationError

M = TypeVar("M", bound=type[Model])
T = TypeVar("T")

_MODELS: list[type[Model]] = []


@dataclass(frozen=True)
class StoreConfig:
    """Where the tables live."""

    endpoint_url: str | None
    region: str = "us-east-1"
    table_prefix: str = "streamer"
    connect_timeout_s: int = 2
    read_timeout_s: int = 5
    #: Retries after the first call of each DynamoDB request. They are botocore's own
    #: ``standard`` retry mode (exponential backoff with jitter, throttling and 5xx
    #: only): PynamoDB's default ``retry_configuration`` passes
    #: ``total_max_attempts = 1 + max_retry_attempts`` to the client.
    max_retry_attempts: int = 2
    #: HTTP connections each model's client keeps (PynamoDB's default is 10): at least
    #: the storage pool's threads, or a burst opens and discards connections per call.
    max_pool_connections: int = 64


_config = StoreConfig(endpoint_url=None)
_shared_loader: Any = None


def _session_with_shared_loader() -> botocore.session.Session:
    """A botocore session that reuses one data loader: each new session would
    otherwise re-read the DynamoDB service model from disk (~0.5 s per client)."""
    global _shared_loader
    session = botocore.session.get_session()
    if _shared_loader is None:
        _shared_loader = session.get_component("data_loader")
    else:
        session.register_component("data_loader", _shared_loader)
    return session


pynamodb_connection_base.get_session = _session_with_shared_loader


def register_model(model: M) -> M:
    """Class decorator: the model takes part in :func:`configure` and ``create_tables``."""
    _MODELS.append(model)
    _apply(model, _config)
    return model


def registered_models() -> list[type[Model]]:
    """Every registered model, in registration order."""
    return list(_MODELS)


def configure(config: StoreConfig) -> None:
    """Point every registered model at ``config`` (resets their cached connections)."""
    global _config
    _config = config
    for model in _MODELS:
        _apply(model, config)


def current_config() -> StoreConfig:
    """The configuration in force."""
    return _config


def _apply(model: type[Model], config: StoreConfig) -> None:
    meta: Any = model.Meta
    base_name = getattr(meta, "base_table_name", None) or meta.table_name
    meta.base_table_name = base_name
    meta.table_name = f"{config.table_prefix}-{base_name}"
    meta.host = config.endpoint_url
    meta.region = config.region
    meta.connect_timeout_seconds = config.connect_timeout_s
    meta.read_timeout_seconds = config.read_timeout_s
    meta.max_retry_attempts = config.max_retry_attempts
    meta.max_pool_connections = config.max_pool_connections
    if config.endpoint_url:
        # Local endpoints accept any credentials; real AWS uses the normal chain.
        meta.aws_access_key_id = "local"
        meta.aws_secret_access_key = "local"  # noqa: S105
    else:
        meta.aws_access_key_id = None
        meta.aws_secret_access_key = None
    model._connection = None
    for index in model._indexes.values():
        index.Meta.model = model  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list: the items and the cursor of the next page (None at the end)."""

    items: list[T]
    cursor: str | None


def owner_of(tenant_id: str, user_id: str) -> str:
    """The key of a user's items (``"{tenant_id}#{user_id}"``): the ``by_user`` index of
    connections and the hash key of requests. Tenant ids hold no ``#``
    (:func:`storage.validators.require_tenant`), so it splits at its first ``#``."""
    return f"{tenant_id}#{user_id}"


def encode_cursor(last_evaluated_key: dict[str, Any] | None) -> str | None:
    """Turn DynamoDB's LastEvaluatedKey into an opaque URL-safe cursor."""
    if not last_evaluated_key:
        return None
    return base64.urlsafe_b64encode(orjson.dumps(last_evaluated_key)).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> dict[str, Any] | None:
    """Inverse of :func:`encode_cursor`; a malformed cursor is a ValidationError."""
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, orjson.JSONDecodeError) as exc:
        raise ValidationError("invalid cursor") from exc
    if not isinstance(value, dict):
        raise ValidationError("invalid cursor")
    return value


DYNAMODB_CALLS = Counter(
    "streamer_dynamodb_calls_total", "DynamoDB API calls made by this process", ["operation"]
)


def _count_call(model: Any = None, **kwargs: Any) -> None:
    DYNAMODB_CALLS.labels(getattr(model, "name", "unknown")).inc()


def warm_up() -> None:
    """Create every model's botocore client now (a first call otherwise pays ~100 ms)
    and count its calls in ``streamer_dynamodb_calls_total``."""
    for model in _MODELS:
        client = model._get_connection().connection.client
        if not getattr(client, "_streamer_counted", False):
            client.meta.events.register("before-call.dynamodb", _count_call)
            client._streamer_counted = True
