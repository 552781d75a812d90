"""Apple Push Notification service over HTTP/2 with token (JWT, ES256) authentication.

Notifications are alerts with the badge and the conversation as ``thread-id`` and
``apns-collapse-id``; a clear is a background push (``content-available``) that lets the
app remove the delivered notifications of a conversation.
"""

from __future__ import annotations

import threading
import time
from functools import cache
from pathlib import Path

import httpx
import jwt
from django.conf import settings

from notifications.backends.base import Outcome, Push, Result, classify
from notifications.models import PushSubscription

# Apple refuses tokens older than an hour and too-frequent refreshes: renew after 50 minutes.
TOKEN_SECONDS = 50 * 60
GONE_REASONS = {"BadDeviceToken", "Unregistered", "DeviceTokenNotForTopic"}
STALE_TOKEN_REASONS = {"ExpiredProviderToken", "InvalidProviderToken"}


@cache
def _client() -> httpx.Client:
    return httpx.Client(http2=True)


class APNsBackend:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._token: tuple[float, str] | None = None

    def configured(self) -> bool:
        return bool(
            settings.APNS_TEAM_ID and settings.APNS_KEY_ID and settings.APNS_PRIVATE_KEY and settings.APNS_TOPIC
        )

    def _signing_key(self) -> str:
        value: str = settings.APNS_PRIVATE_KEY
        return value if value.lstrip().startswith("-----BEGIN") else Path(value).read_text()

    def provider_token(self, *, renew: bool = False) -> str:
        with self._lock:
            now = time.time()
            if renew or self._token is None or now - self._token[0] > TOKEN_SECONDS:
                token = jwt.encode(
                    {"iss": settings.APNS_TEAM_ID, "iat": int(now)},
                    self._signing_key(),
                    algorithm="ES256",
                    headers={"kid": settings.APNS_KEY_ID},
                )
                self._token = (now, token)
            return self._token[1]

    def send(self, subscription: PushSubscription, push: Push) -> Result:
        data = push.data
        if push.kind == "notify":
            aps = {
                "alert": {"title": data.get("title", ""), "body": data.get("body", "")},
                "badge": data.get("badge", 0),
                "sound": "default",
                "thread-id": push.collapse_key,
                "mutable-content": 1,
            }
        else:
            aps = {"content-available": 1, "badge": data.get("badge", 0)}
        headers = {
            "apns-topic": settings.APNS_TOPIC,
            "apns-push-type": "alert" if push.kind == "notify" else "background",
            "apns-priority": "10" if push.urgent else "5",
            "apns-expiration": str(int(time.time()) + push.ttl),
            "apns-collapse-id": push.collapse_key,
        }
        url = f"{settings.APNS_ENDPOINT.rstrip('/')}/3/device/{subscription.token}"
        result = Result(Outcome.RETRY)
        for renew in (False, True):
            headers["authorization"] = f"bearer {self.provider_token(renew=renew)}"
            try:
                response = _client().post(
                    url, json={"aps": aps, "chat": data}, headers=headers, timeout=settings.PUSH_HTTP_TIMEOUT_SECONDS
                )
            except httpx.HTTPError as exc:
                return Result(Outcome.RETRY, detail=f"{type(exc).__name__}: {exc}"[:255])
            reason = _reason(response)
            if response.status_code == 403 and reason in STALE_TOKEN_REASONS and not renew:
                continue  # our provider token went stale: sign a new one and try once more
            if reason in GONE_REASONS:
                return Result(Outcome.GONE, response.status_code, detail=reason)
            result = classify(response.status_code, response.headers.get("Retry-After"), reason)
            break
        return result


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("reason", "")) if isinstance(body, dict) else ""
