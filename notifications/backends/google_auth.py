"""OAuth 2 access tokens for FCM from a Google service account (the JWT bearer grant).

The service account's key file (``FCM_SERVICE_ACCOUNT_FILE``, as downloaded from the
Firebase console) signs a one-hour assertion for the firebase.messaging scope; Google's token
endpoint exchanges it for an access token, which this process caches until shortly before
it expires. A token FCM refuses (401) is forgotten, and the next send mints a new one.
"""

from __future__ import annotations

import json
import threading
import time
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jwt
from django.conf import settings

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_SECONDS = 3600
REFRESH_MARGIN_SECONDS = 120


class TokenUnavailable(Exception):
    """No access token could be had (no credentials, or the token endpoint failed)."""


@cache
def service_account(path: str) -> dict[str, Any]:
    """The parsed key file: client_email, private_key, token_uri, project_id."""
    account: dict[str, Any] = json.loads(Path(path).read_text())
    missing = {"client_email", "private_key", "token_uri"} - account.keys()
    if missing:
        raise TokenUnavailable(f"service account file lacks {sorted(missing)}")
    return account


def configured_account() -> dict[str, Any] | None:
    path = settings.FCM_SERVICE_ACCOUNT_FILE
    return service_account(path) if path else None


_lock = threading.Lock()
_cached: dict[str, Any] = {}


def _mint(account: dict[str, Any]) -> tuple[str, float]:
    now = int(time.time())
    assertion = jwt.encode(
        {
            "iss": account["client_email"],
            "scope": SCOPE,
            "aud": account["token_uri"],
            "iat": now,
            "exp": now + ASSERTION_SECONDS,
        },
        account["private_key"],
        algorithm="RS256",
        headers={"kid": account.get("private_key_id")} if account.get("private_key_id") else None,
    )
    try:
        response = httpx.post(
            account["token_uri"],
            data={"grant_type": GRANT, "assertion": assertion},
            timeout=settings.PUSH_HTTP_TIMEOUT_SECONDS,
        )
    except httpx.HTTPError as exc:
        raise TokenUnavailable(f"token endpoint unreachable: {type(exc).__name__}") from exc
    if response.status_code != 200:
        raise TokenUnavailable(f"token endpoint answered {response.status_code}: {response.text[:120]}")
    body = response.json()
    return str(body["access_token"]), time.time() + float(body.get("expires_in", ASSERTION_SECONDS))


def access_token() -> str:
    """An access token for FCM: the configured one, or a cached or newly minted one."""
    if settings.FCM_ACCESS_TOKEN:
        return str(settings.FCM_ACCESS_TOKEN)
    account = configured_account()
    if account is None:
        raise TokenUnavailable("set FCM_SERVICE_ACCOUNT_FILE (or FCM_ACCESS_TOKEN)")
    with _lock:
        if _cached.get("expires", 0) - REFRESH_MARGIN_SECONDS > time.time():
            return str(_cached["token"])
        token, expires = _mint(account)
        _cached.update(token=token, expires=expires)
        return token


def forget_token() -> None:
    """Drop the cached token (FCM refused it)."""
    with _lock:
        _cached.clear()


def project_id() -> str:
    """FCM_PROJECT_ID, or the service account's project."""
    if settings.FCM_PROJECT_ID:
        return str(settings.FCM_PROJECT_ID)
    account = configured_account()
    return str(account.get("project_id", "")) if account else ""
