"""Presence: who is online, kept in Redis with expiry, never written to PostgreSQL per beat.

Each user has a sorted set of their open sockets, scored by when each socket's lease runs
out. A socket renews its lease on every heartbeat; a crashed server's sockets simply
expire. A user is online while any lease is current. Only the transitions (first socket
opened, last socket closed) are announced, and the last close writes ``last_seen`` once.

The embedded default (no Redis, one process) keeps the same structure in memory.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from django.conf import settings

from chat_project.redis_client import async_redis, key


class PresenceStore(Protocol):
    async def connect(self, user_id: int, socket: str) -> bool:
        """Register a socket; True if the user just came online."""

    async def renew(self, user_id: int, socket: str) -> None:
        """Extend a socket's lease."""

    async def disconnect(self, user_id: int, socket: str) -> bool:
        """Drop a socket; True if the user just went offline."""

    async def online(self, user_ids: list[int]) -> dict[int, bool]:
        """Which of these users have a current lease."""


def lease_seconds() -> int:
    return int(settings.WS_HEARTBEAT_SECONDS * 2.5)


class RedisPresence:
    def __init__(self, client: Any):
        self.redis = client

    def _key(self, user_id: int) -> str:
        return key("presence", user_id)

    async def _count_after_prune(self, pipe_key: str, now: float) -> int:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(pipe_key, "-inf", now)
            pipe.zcard(pipe_key)
            _, count = await pipe.execute()
        return int(count)

    async def connect(self, user_id: int, socket: str) -> bool:
        key, now = self._key(user_id), time.time()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.zadd(key, {socket: now + lease_seconds()})
            pipe.zcard(key)
            pipe.expire(key, lease_seconds() * 2)
            _, _, count, _ = await pipe.execute()
        return int(count) == 1

    async def renew(self, user_id: int, socket: str) -> None:
        key = self._key(user_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(key, {socket: time.time() + lease_seconds()})
            pipe.expire(key, lease_seconds() * 2)
            await pipe.execute()

    async def disconnect(self, user_id: int, socket: str) -> bool:
        key = self._key(user_id)
        removed = await self.redis.zrem(key, socket)
        return bool(removed) and await self._count_after_prune(key, time.time()) == 0

    async def online(self, user_ids: list[int]) -> dict[int, bool]:
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                pipe.zcount(self._key(user_id), now, "+inf")
            counts = await pipe.execute()
        return {u: int(c) > 0 for u, c in zip(user_ids, counts, strict=True)}


class LocalPresence:
    """One process's presence, for the embedded default."""

    def __init__(self) -> None:
        self.leases: dict[int, dict[str, float]] = {}

    def _current(self, user_id: int) -> dict[str, float]:
        now = time.time()
        leases = {s: t for s, t in self.leases.get(user_id, {}).items() if t > now}
        self.leases[user_id] = leases
        return leases

    async def connect(self, user_id: int, socket: str) -> bool:
        leases = self._current(user_id)
        leases[socket] = time.time() + lease_seconds()
        return len(leases) == 1

    async def renew(self, user_id: int, socket: str) -> None:
        self._current(user_id)[socket] = time.time() + lease_seconds()

    async def disconnect(self, user_id: int, socket: str) -> bool:
        leases = self._current(user_id)
        return leases.pop(socket, None) is not None and not leases

    async def online(self, user_ids: list[int]) -> dict[int, bool]:
        return {u: bool(self._current(u)) for u in user_ids}


_store: PresenceStore | None = None


def store() -> PresenceStore:
    """The process's presence store (Redis in the full stack)."""
    global _store
    if _store is None:
        client = async_redis()
        _store = RedisPresence(client) if client is not None else LocalPresence()
    return _store


def online_now(user_ids: list[int]) -> dict[int, bool]:
    """Which of these users have a current lease, read synchronously (Celery workers).

    Reads the same Redis keys as :class:`RedisPresence`. Without Redis (embedded default,
    where tasks run in the web process) it reads that process's :class:`LocalPresence`;
    a process that has none knows nobody as online.
    """
    if not user_ids:
        return {}
    client = _sync_redis()
    if client is None:
        local = _store if isinstance(_store, LocalPresence) else None
        return {u: bool(local and local._current(u)) for u in user_ids}
    now = time.time()
    with client.pipeline(transaction=False) as pipe:
        for user_id in user_ids:
            pipe.zcount(key("presence", user_id), now, "+inf")
        counts = pipe.execute()
    return {u: int(c) > 0 for u, c in zip(user_ids, counts, strict=True)}


_sync_client: Any = None


def _sync_redis() -> Any:
    """A pooled synchronous ``redis.Redis`` for REDIS_URL, or None without Redis."""
    global _sync_client
    if _sync_client is None and settings.REDIS_URL:
        import redis

        _sync_client = redis.Redis.from_url(settings.REDIS_URL)
    return _sync_client
