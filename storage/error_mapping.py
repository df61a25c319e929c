"""The one translation of what PynamoDB and botocore raise into our typed errors.

Every store makes its DynamoDB calls inside :func:`storage_call`, so no PynamoDB or
botocore exception leaves ``storage/`` and no library text reaches a client frame.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from botocore.exceptions import BotoCoreError
from botocore.exceptions import ClientError as BotoClientError
from pynamodb.exceptions import PynamoDBConnectionError, PynamoDBException

from storage.errors import StorageUnavailable, StoreError

#: DynamoDB error codes that mean "try again later" (past botocore's own retries);
#: any other code DynamoDB answers means the request itself was wrong (a bug).
RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
    }
)
_CONDITIONAL_CODES = frozenset({"ConditionalCheckFailedException", "TransactionCanceledException"})


class ConditionFailed(Exception):
    """The ConditionExpression of a write did not hold: the caller says what it means
    (missing item, lost race, invalid transition)."""


def _response_code(exc: BaseException) -> str | None:
    code = getattr(exc, "cause_response_code", None)
    cause = getattr(exc, "cause", None) or exc.__cause__
    if code is None and isinstance(cause, BotoClientError):
        code = cause.response.get("Error", {}).get("Code")
    return code


@contextlib.contextmanager
def storage_call(operation: str) -> Iterator[None]:
    """Run DynamoDB calls for ``operation`` and map their failures.

    * a failed ConditionExpression → :class:`ConditionFailed`, for the caller to read;
    * refused connections, timeouts and throttling (after botocore's bounded retries)
      → :class:`StorageUnavailable`;
    * anything else DynamoDB answered (ValidationException, …: a bug) → a plain
      :class:`StoreError`;
    * PynamoDB's own signals without a response (``DoesNotExist``) pass untouched.

    Messages name only ``operation``, never library text. (PynamoDB's PutError,
    UpdateError, GetError … all subclass PynamoDBConnectionError, so the class alone
    says nothing: the response code decides.)
    """
    try:
        yield
    except PynamoDBException as exc:
        code = _response_code(exc)
        if code in _CONDITIONAL_CODES:
            raise ConditionFailed(operation) from exc
        cause = getattr(exc, "cause", None) or exc.__cause__
        if (
            code in RETRYABLE_CODES
            or isinstance(cause, BotoCoreError | OSError)
            or (code is None and isinstance(exc, PynamoDBConnectionError))
        ):
            raise StorageUnavailable(f"storage unavailable during {operation}") from exc
        if code is not None:
            raise StoreError(f"storage rejected {operation}") from exc
        raise
    except (BotoCoreError, OSError) as exc:
        raise StorageUnavailable(f"storage unavailable during {operation}") from exc
