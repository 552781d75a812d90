"""Login throttling: repeated failures for one username or one client address get 429.

Counters live in the cache (Redis in the full stack, so every web process shares them) in
fixed windows of ``LOGIN_FAILURE_WINDOW_SECONDS``.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from rest_framework.request import Request
from rest_framework.throttling import ScopedRateThrottle

from chat_project.errors import RateLimited


def client_ip(request: HttpRequest) -> str:
    """The client's address, trusting X-Forwarded-For only as far as our own proxies."""
    proxies = settings.TRUSTED_PROXY_COUNT
    if proxies:
        forwarded = [p.strip() for p in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if p.strip()]
        if len(forwarded) >= proxies:
            return str(forwarded[-proxies])
    return str(request.META.get("REMOTE_ADDR", ""))


class ClientAddressRateThrottle(ScopedRateThrottle):
    """DRF's scoped rate throttle, keyed by :func:`client_ip`.

    DRF's own ``get_ident`` trusts the whole X-Forwarded-For header unless ``NUM_PROXIES``
    is set, so any client could dodge the limit by sending a new header each time.
    """

    def get_ident(self, request: Request) -> str:
        return client_ip(request)


def _window() -> tuple[int, float]:
    """The current window's number and the seconds until it ends."""
    length = settings.LOGIN_FAILURE_WINDOW_SECONDS
    now = time.time()
    number = int(now // length)
    return number, (number + 1) * length - now


def _keys(username: str, ip: str, window: int) -> tuple[str, str]:
    return f"login-fail:u:{username.lower()}:{window}", f"login-fail:ip:{ip}:{window}"


def check_login_allowed(*, username: str, ip: str) -> None:
    """Raise :class:`RateLimited` if this username or address failed too often lately."""
    window, remaining = _window()
    user_key, ip_key = _keys(username, ip, window)
    counts = cache.get_many([user_key, ip_key])
    if (
        counts.get(user_key, 0) >= settings.LOGIN_FAILURES_PER_USERNAME
        or counts.get(ip_key, 0) >= settings.LOGIN_FAILURES_PER_IP
    ):
        raise RateLimited("Too many failed logins; try again later.", retry_after=remaining)


def record_login_failure(*, username: str, ip: str) -> None:
    """Count one failed login against the username and the address."""
    window, remaining = _window()
    for key in _keys(username, ip, window):
        cache.add(key, 0, timeout=int(remaining) + 1)
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=int(remaining) + 1)


def clear_login_failures(*, username: str) -> None:
    """Forget a username's failures after it logs in (the address's count stays)."""
    window, _ = _window()
    cache.delete(_keys(username, "", window)[0])
