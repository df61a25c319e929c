"""Which connections receive the frames of which request, in DynamoDB.

One item per (request, connection) pair: hash key ``request_key`` (the request's storage
key, opaque here), range key ``connection_id``. The frames of a request go to every
subscriber (a query on the hash key); the ``by_connection`` index (``connection_id``,
``request_key``) finds a connection's subscriptions when it goes away. Items expire
(DynamoDB TTL) 8 days after they were made: one day longer than a request record lives.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from pynamodb.attributes import NumberAttribute, TTLAttribute, UnicodeAttribute
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from storage.base import now_ms, register_model
from storage.batching import delete_in_batches
from storage.connection import MAX_ADDRESS, TRANSPORTS
from storage.error_mapping import ConditionFailed, storage_call
from storage.errors import ValidationError
from storage.validators import MAX_CONNECTION_ID, require_choice, require_text

#: A subscription expires (DynamoDB TTL) this long after it was made.
SUBSCRIPTION_TTL_MS = 8 * 24 * 60 * 60 * 1000

_PAGE = 100  # page size of the list queries


class ByConnectionIndex(GlobalSecondaryIndex["SubscriptionModel"]):
    """A connection's subscriptions."""

    class Meta:
        index_name = "by_connection"
        projection = AllProjection()

    connection_id = UnicodeAttribute(hash_key=True)
    request_key = UnicodeAttribute(range_key=True)


@register_model
class SubscriptionModel(Model):
    """Connection ``connection_id`` receives the frames of request ``request_key``."""

    class Meta:
        table_name = "subscriptions"

    request_key = UnicodeAttribute(hash_key=True)
    connection_id = UnicodeAttribute(range_key=True)
    transport = UnicodeAttribute()
    address = UnicodeAttribute()
    created_at = NumberAttribute()
    ttl = TTLAttribute(null=True)

    by_connection = ByConnectionIndex()


@dataclass(frozen=True)
class Subscription:
    """One subscription: where to deliver the frames of a request (``created_at`` in ms)."""

    request_key: str
    connection_id: str
    transport: str
    address: str
    created_at: int = 0


def _to_subscription(model: SubscriptionModel) -> Subscription:
    return Subscription(
        request_key=model.request_key,
        connection_id=model.connection_id,
        transport=model.transport,
        address=model.address,
        created_at=int(model.created_at),
    )


def _request_key(value: str) -> str:
    return require_text("request_key", value, 1024)


def _connection_id(value: str) -> str:
    return require_text("connection_id", value, MAX_CONNECTION_ID)


class SubscriptionStore:
    """Typed operations on subscriptions.

    Stateless: use the module-level :data:`subscription_store`. Arguments are validated
    before any network call (``ValidationError``); unreachable or throttled storage is
    ``StorageUnavailable``.
    """

    def subscribe(
        self, request_key: str, connection_id: str, transport: str, address: str
    ) -> Subscription:
        """Subscribe a connection to a request (one PutItem; subscribing again refreshes it)."""
        _request_key(request_key)
        _connection_id(connection_id)
        require_choice("transport", transport, TRANSPORTS)
        require_text("address", address, MAX_ADDRESS)
        created_at = now_ms()
        item = SubscriptionModel(
            request_key,
            connection_id,
            transport=transport,
            address=address,
            created_at=created_at,
            ttl=datetime.fromtimestamp((created_at + SUBSCRIPTION_TTL_MS) / 1000, tz=UTC),
        )
        with storage_call("subscription.subscribe"):
            item.save()
        return Subscription(request_key, connection_id, transport, address, created_at)

    def unsubscribe(self, request_key: str, connection_id: str) -> bool:
        """Remove one subscription; True if it existed (idempotent, one call)."""
        _request_key(request_key)
        _connection_id(connection_id)
        try:
            with storage_call("subscription.unsubscribe"):
                SubscriptionModel(request_key, connection_id).delete(
                    condition=SubscriptionModel.request_key.exists()
                )
        except ConditionFailed:
            return False
        return True

    def list_by_request(self, request_key: str) -> list[Subscription]:
        """Every subscriber of a request (all pages of a key query)."""
        _request_key(request_key)
        with storage_call("subscription.list_by_request"):
            return [
                _to_subscription(row)
                for row in SubscriptionModel.query(request_key, page_size=_PAGE)
            ]

    def list_by_connection(self, connection_id: str) -> list[Subscription]:
        """Every subscription of a connection (all pages of a ``by_connection`` query)."""
        _connection_id(connection_id)
        with storage_call("subscription.list_by_connection"):
            return [
                _to_subscription(row)
                for row in SubscriptionModel.by_connection.query(connection_id, page_size=_PAGE)
            ]

    def delete_by_connection(self, connection_id: str) -> int:
        """Delete every subscription of a connection; returns how many were deleted."""
        _connection_id(connection_id)
        with storage_call("subscription.delete_by_connection"):
            return delete_in_batches(
                SubscriptionModel,
                SubscriptionModel.by_connection.query(connection_id, page_size=_PAGE),
            )

    def delete_many(self, connection_id: str, request_keys: Iterable[str]) -> int:
        """Delete the subscriptions of ``connection_id`` to ``request_keys`` without a query.

        For a disconnect that already knows its subscriptions. Duplicate keys are sent
        once; returns the number of distinct keys (batch deletes cannot tell whether an
        item existed).
        """
        _connection_id(connection_id)
        if isinstance(request_keys, str):
            raise ValidationError("request_keys must be an iterable of strings, not a string")
        keys = list(dict.fromkeys(_request_key(key) for key in request_keys))
        if not keys:
            return 0
        with storage_call("subscription.delete_many"):
            return delete_in_batches(
                SubscriptionModel, (SubscriptionModel(key, connection_id) for key in keys)
            )


#: The store every caller uses.
subscription_store = SubscriptionStore()
