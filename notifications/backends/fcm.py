"""Firebase Cloud Messaging, HTTP v1 API.

Sends data messages (the app renders them, respecting the user's preview setting) with the
conversation as ``collapse_key``. Authentication is an OAuth 2 access token taken as is
from ``FCM_ACCESS_TOKEN``: minting it from a service account (and refreshing it hourly) is
left to the deployment for now (docs/push.md).
"""

from __future__ import annotations

from functools import cache

import httpx
from django.conf import settings

from notifications.backends.base import Outcome, Push, Result, classify
from notifications.models import PushSubscription


@cache
def _client() -> httpx.Client:
    return httpx.Client(http2=True)


class FCMBackend:
    def configured(self) -> bool:
        return bool(settings.FCM_PROJECT_ID and settings.FCM_ACCESS_TOKEN)

    def send(self, subscription: PushSubscription, push: Push) -> Result:
        url = f"{settings.FCM_ENDPOINT.rstrip('/')}/v1/projects/{settings.FCM_PROJECT_ID}/messages:send"
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
                headers={"Authorization": f"Bearer {settings.FCM_ACCESS_TOKEN}"},
                timeout=settings.PUSH_HTTP_TIMEOUT_SECONDS,
            )
        except httpx.HTTPError as exc:
            return Result(Outcome.RETRY, detail=f"{type(exc).__name__}: {exc}"[:255])
        return classify(response.status_code, response.headers.get("Retry-After"), response.text[:200])
