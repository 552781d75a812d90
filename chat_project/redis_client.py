"""The process's one asyncio Redis client, for the ephemeral state the web process keeps there
(presence leases, per-user rate windows). None on the embedded default."""

from __future__ import annotations

from functools import cache
from typing import Any

from django.conf import settings


@cache
def async_redis() -> Any:
    """A pooled ``redis.asyncio.Redis`` for REDIS_URL, or None without Redis."""
    if not settings.REDIS_URL:
        return None
    import redis.asyncio as redis

    return redis.Redis.from_url(settings.REDIS_URL)


def key(*parts: object) -> str:
    """A Redis key under this deployment's prefix."""
    return ":".join([settings.CACHE_KEY_PREFIX, *map(str, parts)])
