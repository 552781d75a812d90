"""Firebase Cloud Messaging, HTTP v1 API.

Sends data messages (the app renders them, respecting the user's preview setting) with the
conversation as ``collapse_key``. Authentication is an OAuth 2 access token minted from the
service account in ``FCM_SERVICE_ACCOUNT_FILE`` (notifications.backends.google_auth), or
taken as is from ``FCM_ACCESS_TOKEN``.
"""

from __future__ import annotations

from functools import cache

import httpx
from django.conf import settings

from notifications.backends import google_auth
from notifications.backends.base import Outcome, Push, Result, classify
from notifications.models import PushSubscription


@cache
def _client() -> httpx.Client:
    return httpx.Client(http2=True)


class FCMBackend:
    def configured(self) -> bool:
        try:
            has_credentials = bool(settings.FCM_ACCESS_TOKEN or google_auth.configured_account())
        except (OSError, ValueError, google_auth.TokenUnavailable):
            return False
        return has_credentials and bool(google_auth.project_id())

    def send(self, subscription: PushSubscription, push: Push) -> Result:
        try:
            token = google_auth.access_token()
        except google_auth.TokenUnavailable as exc:
            return Result(Outcome.RETRY, detail=str(exc)[:255])
        url = f"{settings.FCM_ENDPOINT.rstrip('/')}/v1/projects/{google_auth.project_id()}/messages:send"
        message = {
            "token": subscription.token,
            # FCM data values are strings; the app parses them back.
            "data": {key: value if isinstance(value, str) else str(value) for key, value in push.data.items()},
            "android": {
                "priority": "HIGH" if push.urgent else "NORMAL",
                "ttl": f"{push.ttl}s",
                "collapse_key": push.collapse_key,
            },
        }
        try:
            response = _client().post(
                url,
                json={"message": message},
                headers={"Authorization": f"Bearer {token}"},
                timeout=settings.PUSH_HTTP_TIMEOUT_SECONDS,
            )
        except httpx.HTTPError as exc:
            return Result(Outcome.RETRY, detail=f"{type(exc).__name__}: {exc}"[:255])
        if response.status_code == 401 and not settings.FCM_ACCESS_TOKEN:
            google_auth.forget_token()  # expired or revoked: mint a new one for the retry
            return Result(Outcome.RETRY, 401, detail="access token refused")
        return classify(response.status_code, response.headers.get("Retry-After"), response.text[:200])
