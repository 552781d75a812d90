"""WebSocket handshake gate: origin validation and authentication, before any consumer runs.

- A browser authenticates with its session cookie, and then must send an allowed
  ``Origin``: that is what stops cross-site WebSocket hijacking.
- An app authenticates with ``Authorization: Bearer <access token>``; native apps send no
  ``Origin``, which is accepted only for bearer-token sockets. A present ``Origin`` must be
  allowed whatever the credential.

Refused sockets are accepted and closed at once with a documented close code (4401, 4403;
docs/protocol.md) so that clients can tell "log in again" from "wrong origin". Nothing is
sent before the close. Tokens are read from headers only, never from the URL, so they never
reach an access log.
"""

from __future__ import annotations

from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import validate_host

from accounts.models import Device
from accounts.selectors import device_for_access_token, device_for_session
from chat_project.asyncdb import db

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN_ORIGIN = 4403


def origin_allowed(origin: str) -> bool:
    """An Origin is allowed if it is listed, or its host is one of ALLOWED_HOSTS."""
    if origin in settings.WS_ALLOWED_ORIGINS:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    allowed = settings.ALLOWED_HOSTS or (["localhost", "127.0.0.1", "[::1]"] if settings.DEBUG else [])
    return validate_host(host, allowed)


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    return {name.decode("latin1").lower(): value.decode("latin1") for name, value in scope.get("headers", [])}


async def _device_from_token(raw: str) -> Device | None:
    device: Device | None = await db(device_for_access_token)(raw)
    return device


async def _device_from_session(session_key: str) -> Device | None:
    device: Device | None = await db(device_for_session)(session_key)
    return device


async def authenticate_handshake(scope: dict[str, Any]) -> tuple[Device | None, int | None]:
    """Return the connecting device, or the close code to refuse the socket with."""
    headers = _headers(scope)
    origin = headers.get("origin")
    if origin is not None and not origin_allowed(origin):
        return None, CLOSE_FORBIDDEN_ORIGIN

    authorization = headers.get("authorization", "")
    if authorization:
        scheme, _, raw = authorization.partition(" ")
        if scheme.lower() != "bearer" or not raw.strip():
            return None, CLOSE_UNAUTHENTICATED
        device = await _device_from_token(raw.strip())
        return (device, None) if device else (None, CLOSE_UNAUTHENTICATED)

    cookie: SimpleCookie = SimpleCookie()
    try:
        cookie.load(headers.get("cookie", ""))
    except CookieError:
        return None, CLOSE_UNAUTHENTICATED
    morsel = cookie.get(settings.SESSION_COOKIE_NAME)
    if morsel is None or not morsel.value:
        return None, CLOSE_UNAUTHENTICATED
    if origin is None:  # a cookie without an Origin is not a browser we can trust
        return None, CLOSE_FORBIDDEN_ORIGIN
    device = await _device_from_session(morsel.value)
    return (device, None) if device else (None, CLOSE_UNAUTHENTICATED)


class WebSocketAuthMiddleware:
    """Puts ``user`` and ``device`` in the scope, or ``ws_refusal`` with the close code."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        device, refusal = await authenticate_handshake(scope)
        scope = dict(scope, device=device, user=device.user if device else None, ws_refusal=refusal)
        return await self.app(scope, receive, send)
