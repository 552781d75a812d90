"""HTTP middleware of our own."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse


def content_security_policy(media_sources: list[str] | None = None) -> str:
    """No inline script or style anywhere: pages load ES modules and CSS from /static/ only.
    The WebSocket is same-origin ('self' covers ws: and wss: on the page's own host).

    Media is fetched through /api/v1/media/{id}/download/, which redirects to the store: an
    https store is covered by "https:"; a plain-http one (MinIO on a LAN, the tests' moto)
    is allowed by its origin, given in ``media_sources``.
    """
    extra = media_sources or []
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            " ".join(["img-src 'self' data: blob: https:", *extra]),
            " ".join(["media-src 'self' blob: https:", *extra]),
            "connect-src 'self'",
            "worker-src 'self'",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def media_sources() -> list[str]:
    """The origin of the configured S3 endpoint, when it is not already covered by https:."""
    options = settings.STORAGES.get("default", {}).get("OPTIONS", {})
    parts = urlsplit(str(options.get("endpoint_url") or ""))
    if parts.scheme != "http" or not parts.netloc:
        return []
    return [f"http://{parts.netloc}"]


class ContentSecurityPolicyMiddleware:
    """Send a strict Content-Security-Policy with every HTML page.

    The API docs page (drf-spectacular's Swagger UI) loads its assets from a CDN and runs
    inline script, so it is the one page served without the policy.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response
        self.policy = content_security_policy(media_sources())

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if request.path.startswith("/api/docs"):
            return response
        response.headers.setdefault("Content-Security-Policy", self.policy)
        return response
