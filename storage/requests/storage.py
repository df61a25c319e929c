"""How the request and quota stores call DynamoDB: one mapping of what it answers into
our typed errors, shared so that no PynamoDB or botocore exception leaves either store."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from pynamodb.exceptions import PynamoDBException

from storage.base import is_conditional_failure, storage_errors
from storage.errors import StoreError

# DynamoDB error codes that mean "try again later" (the rest of ClientErrors are bugs).
RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
    }
)


class ConditionFailed(Exception):
    """The ConditionExpression of a write did not hold (internal signal)."""


@contextlib.contextmanager
def storage_call(operation: str) -> Iterator[None]:
    """:func:`storage_errors` plus our own mapping of what DynamoDB answered.

    A failed condition becomes :class:`ConditionFailed` for the caller to interpret;
    a request DynamoDB rejected (e.g. ValidationException: a bug) becomes a plain
    :class:`StoreError` without library text; transport failures and throttling go
    on to ``storage_errors`` and become StorageUnavailable. (This is decided here,
    inside ``storage_errors``, because PynamoDB's PutError/UpdateError/GetError all
    subclass PynamoDBConnectionError.)
    """
    with storage_errors(operation):
        try:
            yield
        except PynamoDBException as exc:
            if is_conditional_failure(exc):
                raise ConditionFailed(operation) from exc
            code = getattr(exc, "cause_response_code", None)
            if code is not None and code not in RETRYABLE_CODES:
                raise StoreError(f"storage rejected {operation}") from exc
            raise
