"""The HTTP API for back-end services, ``/api/v1/`` (django-ninja): publishing frames and
the jobs API (start, read, list and cancel requests for a tenant's users), with its
OpenAPI document at ``/api/v1/openapi.json``.

Every call carries ``Authorization: Bearer <tenant API key>`` and reaches only that
tenant. Errors are ``{"error": {"code", "message", "details"?, "retryable"}}`` with the
codes of docs/protocol.md §4, plus ``UNAUTHORIZED`` (401) and ``PAYLOAD_TOO_LARGE`` (413)
for what happens before a request is looked at. ``POST /api/v1/publish`` keeps its 1.0
error shape, ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import logging
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.security.base import AuthBase

from connections.models import ApiKey
from protocol.errors import ErrorCode, ProtocolError, field_errors
from storage.errors import StorageUnavailable
from streaming.api import API_KEY_SCOPE, NO_API_KEY, PUBLISH_PATH, authenticate_publisher, too_large
from streaming.body_guard import TOO_LARGE, Refusal, error_body
from streaming.http_routes import publish_router, requests_router

log = logging.getLogger(__name__)

STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_MESSAGE: 400,
    ErrorCode.VALIDATION_ERROR: 400,
    ErrorCode.INVALID_ACTION: 400,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.DUPLICATE_REQUEST: 409,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.QUOTA_EXCEEDED: 429,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
}
"""HTTP status of each protocol error code an API call can end with (others: 500)."""

BAD_BODY = "Body must be a JSON object"


class Refused(Exception):
    """A call refused before it was looked at (no key, body too large)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


class TenantApiKey(AuthBase):
    """``Authorization: Bearer <tenant API key>`` (``manage.py create_api_key``); the
    key the body guard already checked is taken from the ASGI scope. The caller is
    checked before the size of the body, and both before the body is parsed."""

    openapi_type = "http"
    openapi_scheme = "bearer"

    def __call__(self, request: HttpRequest) -> Any:
        return self.authenticate(request)

    async def authenticate(self, request: HttpRequest) -> ApiKey | None:
        scope = getattr(request, "scope", {})
        key = scope.get(API_KEY_SCOPE) or await authenticate_publisher(
            request.headers.get("Authorization", "")
        )
        if key is None:
            return None
        if too_large(request):
            raise Refused(TOO_LARGE)
        return key


api = NinjaAPI(
    title="Streamer API",
    version="1.1",
    description="Publish frames to a tenant's sockets; start, read, list and cancel "
    "requests on behalf of a tenant's users. See docs/jobs.md.",
    auth=TenantApiKey(),
    urls_namespace="api-v1",
    docs_url=None,
    openapi_url="/openapi.json",
)


def error_response(
    request: HttpRequest,
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
) -> HttpResponse:
    """The API's error answer; the publish endpoint keeps its 1.0 shape."""
    if request.path == PUBLISH_PATH:
        body: dict[str, Any] = {"error": {"code": code, "message": message}}
    else:
        retryable = code in ErrorCode.__members__ and ErrorCode(code).retryable
        body = {"error": {"code": code, "message": message, "retryable": retryable}}
        if details:
            body["error"]["details"] = details
    return api.create_response(request, body, status=status)


@api.exception_handler(ProtocolError)
def _protocol_error(request: HttpRequest, exc: ProtocolError) -> HttpResponse:
    return error_response(
        request, STATUS.get(exc.code, 500), exc.code.value, exc.message, exc.details
    )


@api.exception_handler(NinjaValidationError)
def _invalid(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    # ninja locates a body field under the parameter's name too: body.body.user_id
    errors = field_errors(
        {**e, "loc": ("body", *e["loc"][2:]) if e["loc"][:1] == ("body",) else e["loc"]}
        for e in exc.errors
    )
    return error_response(
        request, 400, ErrorCode.VALIDATION_ERROR.value, "Validation failed", {"errors": errors}
    )


@api.exception_handler(Refused)
def _refused(request: HttpRequest, exc: Refused) -> HttpResponse:
    refusal = exc.refusal
    if request.path == PUBLISH_PATH:
        return api.create_response(request, error_body(refusal), status=refusal.status)
    return api.create_response(request, error_body(refusal, retryable=True), status=refusal.status)


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    """ninja's own refusals, in the API's words (never the library's)."""
    if isinstance(exc, AuthenticationError):
        return _refused(request, Refused(NO_API_KEY))
    if exc.status_code == 400:  # the body is not JSON
        return error_response(request, 400, ErrorCode.VALIDATION_ERROR.value, BAD_BODY)
    return error_response(request, exc.status_code, "HTTP_ERROR", "Request refused")


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return error_response(request, 404, ErrorCode.NOT_FOUND.value, "Not found")


@api.exception_handler(StorageUnavailable)
def _storage_down(request: HttpRequest, exc: StorageUnavailable) -> HttpResponse:
    code = ErrorCode.SERVICE_UNAVAILABLE
    return error_response(request, 503, code.value, "Service temporarily unavailable")


@api.exception_handler(Exception)
def _unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
    log.error("unexpected error in %s %s", request.method, request.path, exc_info=exc)
    code = ErrorCode.INTERNAL_ERROR
    return error_response(request, 500, code.value, "Internal server error")


api.add_router("/", publish_router)
api.add_router("/requests", requests_router)
