"""The project's one exception hierarchy and its one REST error shape.

Services raise :class:`ApplicationError` subclasses; the REST exception handler and the
WebSocket consumer turn them into ``{"error": {"code", "detail", "fields"}}`` and
``{"type": "error", "code", "detail", "id"}`` respectively. See docs/protocol.md.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework_simplejwt.exceptions import InvalidToken


class ApplicationError(Exception):
    """A failure we expect and explain to the client, with a stable machine-readable code."""

    code: ClassVar[str] = "error"
    status_code: ClassVar[int] = status.HTTP_400_BAD_REQUEST
    default_detail: ClassVar[str] = "The request could not be completed."

    def __init__(self, detail: str | None = None, *, fields: dict[str, list[str]] | None = None):
        self.detail = detail or self.default_detail
        self.fields = fields or {}
        super().__init__(self.detail)


class InvalidInput(ApplicationError):
    code = "invalid"
    default_detail = "Some fields are not valid."


class NotFound(ApplicationError):
    """Raised for missing objects and for objects the caller may not see, alike."""

    code = "not_found"
    status_code = status.HTTP_404_NOT_FOUND
    default_detail = "Not found."


class Forbidden(ApplicationError):
    code = "forbidden"
    status_code = status.HTTP_403_FORBIDDEN
    default_detail = "You may not do this."


class RateLimited(ApplicationError):
    code = "rate_limited"
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_detail = "Too many attempts; try again later."

    def __init__(self, detail: str | None = None, *, retry_after: float):
        super().__init__(detail)
        self.retry_after = max(1, math.ceil(retry_after))


_DRF_CODES: dict[type[exceptions.APIException], str] = {
    exceptions.ParseError: "malformed",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "forbidden",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "rate_limited",
    exceptions.ValidationError: "invalid",
}


def error_body(code: str, detail: str, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build the one REST error body."""
    return {"error": {"code": code, "detail": detail, "fields": fields or {}}}


def _flatten_fields(data: Any) -> dict[str, Any]:
    """Turn DRF's validation detail into ``{field: [messages]}`` (non-field errors under ``_``)."""
    if isinstance(data, dict):
        return {("_" if key == "non_field_errors" else str(key)): value for key, value in data.items()}
    return {"_": data if isinstance(data, list) else [data]}


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF exception handler: every API error leaves in the shape of :func:`error_body`."""
    if isinstance(exc, ApplicationError):
        response = Response(error_body(exc.code, exc.detail, exc.fields), status=exc.status_code)
        if isinstance(exc, RateLimited):
            response["Retry-After"] = str(exc.retry_after)
        return response
    if isinstance(exc, InvalidToken):
        # Expired, tampered and blacklisted tokens alike; the detail says which.
        detail = exc.detail.get("detail") if isinstance(exc.detail, dict) else exc.detail
        return Response(
            error_body("token_not_valid", str(detail or "Token is invalid or expired.")),
            status=status.HTTP_401_UNAUTHORIZED,
            headers={"WWW-Authenticate": 'Bearer realm="api"'},
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    handled = drf_exception_handler(exc, context)
    if handled is None or not isinstance(exc, exceptions.APIException):
        return handled
    code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), "error")
    if isinstance(exc, exceptions.ValidationError):
        body = error_body(code, "Some fields are not valid.", _flatten_fields(exc.detail))
    else:
        body = error_body(code, str(exc.detail))
    handled.data = body
    return handled


def api_not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """404 for unknown URLs under /api/, in the API's error shape."""
    return JsonResponse(error_body("not_found", "Not found."), status=404)
