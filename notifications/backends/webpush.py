"""Web Push (RFC 8030) with VAPID (RFC 8292) and an aes128gcm-encrypted payload (RFC 8291),
through pywebpush. The payload is end-to-end encrypted to the browser: the push service
cannot read it."""

from __future__ import annotations

import json
from functools import cache
from urllib.parse import urlsplit

import requests
from django.conf import settings

from notifications import vapid
from notifications.backends.base import Outcome, Push, Result, classify
from notifications.models import PushSubscription


def endpoint_allowed(endpoint: str) -> bool:
    """Whether we may POST to this endpoint: a known push service (WEBPUSH_ENDPOINT_HOSTS,
    suffixes), over HTTPS unless WEBPUSH_ALLOW_HTTP. Anything else would let a user make
    the worker request arbitrary URLs (server-side request forgery)."""
    try:
        parts = urlsplit(endpoint)
    except ValueError:
        return False
    host = (parts.hostname or "").lower().rstrip(".")
    if not host or parts.username or parts.password:
        return False
    if parts.scheme != "https" and not (parts.scheme == "http" and settings.WEBPUSH_ALLOW_HTTP):
        return False
    allowed: list[str] = settings.WEBPUSH_ENDPOINT_HOSTS
    return any(host == suffix or host.endswith(f".{suffix}") for suffix in (s.lower().strip(".") for s in allowed))


@cache
def _session() -> requests.Session:
    """One keep-alive session per worker process."""
    return requests.Session()


class WebPushBackend:
    def configured(self) -> bool:
        return True  # the VAPID key is generated when none is configured

    def send(self, subscription: PushSubscription, push: Push) -> Result:
        from pywebpush import WebPusher, WebPushException  # type: ignore[import-untyped]  # ships no type information

        if not endpoint_allowed(subscription.endpoint):
            return Result(Outcome.REJECTED, detail="endpoint not allowed (WEBPUSH_ENDPOINT_HOSTS)")
        parts = urlsplit(subscription.endpoint)
        headers = {
            **vapid.authorization(f"{parts.scheme}://{parts.netloc}"),
            "Urgency": "high" if push.urgent else "normal",
            # RFC 8030 5.4: a push service replaces a stored push with the same topic.
            "Topic": push.collapse_key,
        }
        info = {"endpoint": subscription.endpoint, "keys": {"p256dh": subscription.p256dh, "auth": subscription.auth}}
        body = json.dumps(push.data, separators=(",", ":")).encode()
        try:
            response = WebPusher(info, requests_session=_session()).send(
                body, headers, ttl=push.ttl, content_encoding="aes128gcm", timeout=settings.PUSH_HTTP_TIMEOUT_SECONDS
            )
        except WebPushException as exc:  # malformed keys: this subscription can never work
            return Result(Outcome.REJECTED, detail=str(exc)[:255])
        except requests.RequestException as exc:
            return Result(Outcome.RETRY, detail=f"{type(exc).__name__}: {exc}"[:255])
        return classify(response.status_code, response.headers.get("Retry-After"), response.text[:200])
