"""Presence: who is online, kept in Redis with expiry, never written to PostgreSQL per beat.

Each user has a sorted set of their open sockets, scored by when each socket's lease runs
out. A socket renews its lease on every heartbeat; a crashed server's sockets simply
expire. A user is online while any lease is current. Only the transitions (first socket
opened, last socket closed) are announced, and the last close writes ``last_seen`` once.

Each user's set lives on their Redis shard (chat_project/redis_client.py); a shard that does
not answer makes its users read as offline without failing anything. The embedded default
(no Redis, one process) keeps the same structure in memory.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from django.conf import settings

from chat_project.redis_client import ShardUnavailable, async_shards, key, shard_urls, sync_shards

T = TypeVar("T")


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
    """Leases in Redis, on the shard of each user (chat_project/redis_client.py).

    A shard that does not answer degrades its users to "offline, no transition": connecting
    and disconnecting announce nothing, reads say offline. Nothing here fails a socket.
    """

    def _key(self, user_id: int) -> str:
        return key("presence", user_id)

    async def _on_user_shard(self, user_id: int, operation: Callable[[Any], Awaitable[T]], unknown: T) -> T:
        shards = async_shards()
        if shards is None:
            return unknown
        try:
            return await shards.run(shards.of_user(user_id), operation)
        except ShardUnavailable:
            return unknown

    async def connect(self, user_id: int, socket: str) -> bool:
        key, now = self._key(user_id), time.time()

        async def operation(redis: Any) -> bool:
            async with redis.pipeline(transaction=True) as pipe:
                pipe.zremrangebyscore(key, "-inf", now)
                pipe.zadd(key, {socket: now + lease_seconds()})
                pipe.zcard(key)
                pipe.expire(key, lease_seconds() * 2)
                _, _, count, _ = await pipe.execute()
            return int(count) == 1

        return await self._on_user_shard(user_id, operation, unknown=False)

    async def renew(self, user_id: int, socket: str) -> None:
        key = self._key(user_id)

        async def operation(redis: Any) -> None:
            async with redis.pipeline(transaction=True) as pipe:
                pipe.zadd(key, {socket: time.time() + lease_seconds()})
                pipe.expire(key, lease_seconds() * 2)
                await pipe.execute()

        await self._on_user_shard(user_id, operation, unknown=None)

    async def disconnect(self, user_id: int, socket: str) -> bool:
        key = self._key(user_id)

        async def operation(redis: Any) -> bool:
            async with redis.pipeline(transaction=True) as pipe:
                pipe.zrem(key, socket)
                pipe.zremrangebyscore(key, "-inf", time.time())
                pipe.zcard(key)
                removed, _, count = await pipe.execute()
            return bool(removed) and int(count) == 0

        return await self._on_user_shard(user_id, operation, unknown=False)

    async def online(self, user_ids: list[int]) -> dict[int, bool]:
        """One pipeline per shard, the shards at once; users of a dead shard read as offline."""
        shards = async_shards()
        if shards is None:
            return dict.fromkeys(user_ids, False)
        now = time.time()

        async def read(index: int, ids: list[int]) -> dict[int, bool]:
            async def operation(redis: Any) -> list[int]:
                async with redis.pipeline(transaction=False) as pipe:
                    for user_id in ids:
                        pipe.zcount(self._key(user_id), now, "+inf")
                    return list(await pipe.execute())

            try:
                counts = await shards.run(index, operation)
            except ShardUnavailable:
                return dict.fromkeys(ids, False)
            return {u: int(c) > 0 for u, c in zip(ids, counts, strict=True)}

        found: dict[int, bool] = {}
        for part in await asyncio.gather(*(read(i, ids) for i, ids in shards.by_shard(user_ids).items())):
            found.update(part)
        return {u: found[u] for u in user_ids}


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
        _store = RedisPresence() if shard_urls() else LocalPresence()
    return _store


def online_now(user_ids: list[int]) -> dict[int, bool]:
    """Which of these users have a current lease, read synchronously (Celery workers).

    Reads the same Redis keys as :class:`RedisPresence`, one pipeline per shard; users of a
    shard that does not answer read as offline (a push is sent rather than lost). Without
    Redis (embedded default, where tasks run in the web process) it reads that process's
    :class:`LocalPresence`; a process that has none knows nobody as online.
    """
    if not user_ids:
        return {}
    shards = sync_shards()
    if shards is None:
        local = _store if isinstance(_store, LocalPresence) else None
        return {u: bool(local and local._current(u)) for u in user_ids}
    now = time.time()
    found: dict[int, bool] = {}
    for index, ids in shards.by_shard(user_ids).items():

        def operation(redis: Any, ids: list[int] = ids) -> list[int]:
            with redis.pipeline(transaction=False) as pipe:
                for user_id in ids:
                    pipe.zcount(key("presence", user_id), now, "+inf")
                return list(pipe.execute())

        try:
            counts = shards.run(index, operation)
        except ShardUnavailable:
            counts = [0] * len(ids)
        found.update({u: int(c) > 0 for u, c in zip(ids, counts, strict=True)})
    return {u: found[u] for u in user_ids}
