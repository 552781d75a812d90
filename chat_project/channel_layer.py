"""The channel layer: channels_redis's pub/sub layer over ``REDIS_SHARD_URLS``, made to survive
losing one shard (docs/operations.md, "Redis shards").

channels_redis 4.3 (``pubsub.py``) shards by name: a channel or group lives on
``hosts[crc32(name) % 4096 * len(hosts) // 4096]``, and each event loop keeps one connection,
one subscriber connection and one lock per shard. Shards are independent, but a shard that
stops answering is handled badly:

- Commands wait as long as redis-py lets them (5 s socket timeout, and retries for the
  client it builds), holding that shard's lock: every publish behind it waits too.
- A host that is cut off or stopped sends no error at all: the subscriber connection goes
  silent and the events published meanwhile are lost without anyone knowing.
- When the connection does break, the receive task logs a traceback every second, and
  redis-py quietly subscribes again once the host is back; the events of the outage are
  gone, and the sockets that missed them are never told.

This subclass keeps the hashing and the API and adds:

- Bounded commands: every command and connect waits at most ``timeout`` seconds, without
  retries; a failure marks the shard *lost*.
- A health check: each subscriber connection is PINGed every ``health_interval`` seconds;
  nothing read from it (no PONG, no event) within ``timeout`` after that means lost.
- A lost shard costs nothing: publishing to it raises :class:`ShardUnavailable` at once,
  subscribing and unsubscribing only update the layer's own bookkeeping (sockets still
  connect), and the other shards are untouched. A probe tries it every ``retry_interval``.
- When it answers again, the subscriptions are made afresh from that bookkeeping and every
  local member of every group on the shard receives ``{"type": "layer.resumed", "group":
  name}``: it may have missed events, so it should resync (the gateway closes its socket
  with 1012, the client reconnects and syncs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import urlsplit

from channels_redis.pubsub import RedisPubSubChannelLayer, RedisPubSubLoopLayer, RedisSingleShardConnection
from channels_redis.utils import _close_redis, _wrap_close, create_pool, decode_hosts
from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from chat_project.redis_client import FAILURES, MAX_CONNECTIONS, ShardUnavailable

logger = logging.getLogger(__name__)

RESUMED = "layer.resumed"
__all__ = ["RESUMED", "ShardUnavailable", "ShardedPubSubChannelLayer"]


class ShardedPubSubChannelLayer(RedisPubSubChannelLayer):  # type: ignore[misc]  # channels_redis is untyped
    """``RedisPubSubChannelLayer`` with bounded commands and shard-loss handling.

    Extra options (``CONFIG``): ``timeout`` (2 s), ``health_interval`` (1 s) and
    ``retry_interval`` (1 s).
    """

    async def group_send_many(self, sends: list[tuple[str, dict[str, Any]]]) -> list[ShardUnavailable]:
        """``group_send`` for many (group, message) pairs: one pipelined round trip per shard.

        A message object shared by several pairs is serialized once. Returns the failures
        (one per shard that did not take its share); the other shards' publishes stand.
        """
        layer: _LoopLayer = self._get_layer()
        return await layer.group_send_many(sends)

    def _get_layer(self) -> _LoopLayer:
        loop = asyncio.get_running_loop()
        layer: _LoopLayer | None = self._layers.get(loop)
        if layer is None:
            layer = _LoopLayer(*self._args, **self._kwargs, channel_layer=self)
            self._layers[loop] = layer
            _wrap_close(self, loop)
        return layer


class _LoopLayer(RedisPubSubLoopLayer):  # type: ignore[misc]  # channels_redis is untyped
    def __init__(
        self,
        hosts: Any = None,
        prefix: str = "asgi",
        timeout: float = 2.0,
        health_interval: float = 1.0,
        retry_interval: float = 1.0,
        **kwargs: Any,
    ):
        super().__init__(hosts=hosts, prefix=prefix, **kwargs)
        bounded = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),
            # Publishes run concurrently, each on a pooled connection (see _Shard.publish_many);
            # redis-py's pool raises past its limit (100 by default) instead of waiting.
            "max_connections": MAX_CONNECTIONS,
        }
        self._shards = [
            _Shard({**bounded, **host}, self, timeout, health_interval, retry_interval) for host in decode_hosts(hosts)
        ]

    async def group_send_many(self, sends: list[tuple[str, dict[str, Any]]]) -> list[ShardUnavailable]:
        encoded: dict[int, bytes] = {}
        by_shard: dict[_Shard, list[tuple[str, bytes]]] = {}
        for group, message in sends:
            payload = encoded.get(id(message))
            if payload is None:
                payload = encoded[id(message)] = self.channel_layer.serialize(message)
            channel = self._get_group_channel_name(group)
            by_shard.setdefault(self._get_shard(channel), []).append((channel, payload))
        outcomes = await asyncio.gather(
            *(shard.publish_many(items) for shard, items in by_shard.items()), return_exceptions=True
        )
        failures: list[ShardUnavailable] = []
        for outcome in outcomes:
            if isinstance(outcome, ShardUnavailable):
                failures.append(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
        return failures

    def wanted_on(self, shard: _Shard) -> list[str]:
        """Every channel and group this loop's consumers need from ``shard``."""
        return [name for name in [*self.channels, *self.groups] if self._get_shard(name) is shard]

    def shard_resumed(self, shard: _Shard) -> None:
        """Tell every local member of every group on ``shard`` that it may have missed events."""
        marker = self._get_group_channel_name("")
        for group_channel, members in list(self.groups.items()):
            if self._get_shard(group_channel) is not shard:
                continue
            event = self.channel_layer.serialize({"type": RESUMED, "group": group_channel[len(marker) :]})
            for channel in members:
                queue = self.channels.get(channel)
                if queue is not None:
                    queue.put_nowait(event)


class _Shard(RedisSingleShardConnection):  # type: ignore[misc]  # channels_redis is untyped
    """One Redis host of one event loop's layer: up, or lost and being probed."""

    _redis: Any
    _pubsub: Any
    _subscribed_to: set[str]
    _receive_task: asyncio.Future[None] | None

    def __init__(
        self, host: dict[str, Any], layer: _LoopLayer, timeout: float, health_interval: float, retry_interval: float
    ):
        super().__init__(host, layer)
        self.timeout, self.health_interval, self.retry_interval = timeout, health_interval, retry_interval
        self.label = _label(host)
        self.lost = False
        self._pong_due: float | None = None
        self._monitor_task: asyncio.Future[None] | None = None
        self._probe_task: asyncio.Future[None] | None = None
        self._closing: set[asyncio.Future[None]] = set()

    # --- commands -----------------------------------------------------------------------

    async def publish(self, channel: str, message: bytes) -> None:
        await self.publish_many([(channel, message)])

    async def publish_many(self, items: list[tuple[str, bytes]]) -> None:
        """PUBLISH each (channel, payload) in one pipelined round trip.

        Without the shard's lock, which serialises subscriptions on the one subscriber
        connection: publishes take pooled connections of their own, so a storm of connects
        (SUBSCRIBEs) does not hold them back, nor they each other.
        """
        if self.lost:
            raise ShardUnavailable(self.label)
        self._ensure_redis()
        redis = self._redis
        try:
            async with redis.pipeline(transaction=False) as pipe:
                for channel, payload in items:
                    pipe.publish(channel, payload)
                await pipe.execute()
        except FAILURES as exc:
            if self._redis is redis:  # not a client that a reconnect has replaced meanwhile
                self._lose(exc)
            raise ShardUnavailable(self.label) from exc

    async def subscribe(self, channel: str) -> None:
        async with self._lock:
            if self.lost or channel in self._subscribed_to:
                return  # a lost shard subscribes the layer's whole bookkeeping when it returns
            self._ensure_redis()
            self._ensure_receiver()
            try:
                await self._pubsub.subscribe(channel)
            except FAILURES as exc:
                self._lose(exc)
                return
            self._subscribed_to.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        async with self._lock:
            if self.lost or channel not in self._subscribed_to:
                return
            self._subscribed_to.discard(channel)
            try:
                await self._pubsub.unsubscribe(channel)
            except FAILURES as exc:
                self._lose(exc)

    async def flush(self) -> None:
        for task in (self._probe_task, self._monitor_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._probe_task = self._monitor_task = None
        self.lost = False
        self._pong_due = None
        await super().flush()

    # --- receiving and health -----------------------------------------------------------

    def _ensure_receiver(self) -> None:
        if self._receive_task is None:
            self._receive_task = asyncio.ensure_future(self._do_receiving())
            self._monitor_task = asyncio.ensure_future(self._monitor())

    async def _do_receiving(self) -> None:
        while True:
            try:
                if self._pubsub is not None and self._pubsub.subscribed:
                    message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
                    if message is not None:
                        # Anything read after the PING proves the host alive, even if its PONG
                        # still waits behind a backlog of events.
                        self._pong_due = None
                        if message["type"] != "pong":
                            self._receive_message(message)
                else:
                    await asyncio.sleep(0.1)
            except FAILURES as exc:
                self._lose(exc)
                return
            except Exception:
                logger.exception("Unexpected exception in the channel layer's receive task")
                await asyncio.sleep(1)

    async def _monitor(self) -> None:
        """PING the subscriber connection; a missing PONG means the host is gone or cut off."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.health_interval)
            if self._pubsub is None or not self._pubsub.subscribed:
                self._pong_due = None
                continue
            if self._pong_due is not None:
                if loop.time() > self._pong_due:
                    self._lose(TimeoutError(f"no PONG within {self.timeout:g} s"))
                    return
                continue
            async with self._lock:
                if self.lost or self._pubsub is None:
                    return
                self._pong_due = loop.time() + self.timeout
                try:
                    await self._pubsub.ping()
                except FAILURES as exc:
                    self._lose(exc)
                    return

    # --- losing and regaining the shard -------------------------------------------------

    def _lose(self, exc: BaseException) -> None:
        if self.lost:
            return
        self.lost = True
        logger.warning(
            "Channel layer: lost Redis %s (%s: %s); events through it are dropped until it answers again",
            self.label,
            type(exc).__name__,
            exc,
        )
        current = asyncio.current_task()
        for task in (self._receive_task, self._monitor_task):
            if task is not None and task is not current:
                task.cancel()
        self._receive_task = None
        self._monitor_task = None
        self._pong_due = None
        self._subscribed_to = set()
        self._discard(self._redis, self._pubsub)
        self._redis = self._pubsub = None
        self._probe_task = asyncio.ensure_future(self._probe())

    def _discard(self, redis: Any, pubsub: Any) -> None:
        """Close a client in the background, bounded: a stopped host may never answer a FIN."""

        async def close() -> None:
            try:
                if pubsub is not None:
                    await asyncio.wait_for(pubsub.aclose(), self.timeout)
                if redis is not None:
                    await asyncio.wait_for(_close_redis(redis), self.timeout)
            except (Exception, asyncio.CancelledError):
                logger.debug("closing a lost Redis client failed", exc_info=True)

        task = asyncio.ensure_future(close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _probe(self) -> None:
        while True:
            await asyncio.sleep(self.retry_interval)
            redis = aioredis.Redis(connection_pool=create_pool(self.host))
            pubsub = redis.pubsub()
            try:
                await redis.ping()
                async with self._lock:
                    wanted = self.channel_layer.wanted_on(self)
                    if wanted:
                        await pubsub.subscribe(*wanted)
                    self._redis, self._pubsub, self._subscribed_to = redis, pubsub, set(wanted)
                    self.lost = False
                    self._probe_task = None
                    self._ensure_receiver()
            except FAILURES:
                self._discard(redis, pubsub)
                continue
            logger.info("Channel layer: Redis %s answers again; %d subscriptions restored", self.label, len(wanted))
            self.channel_layer.shard_resumed(self)
            return


def _label(host: dict[str, Any]) -> str:
    """``host:port`` of a shard for log lines, without credentials."""
    if "address" in host:
        parts = urlsplit(str(host["address"]))
        return f"{parts.hostname}:{parts.port or 6379}"
    return f"{host.get('host', 'localhost')}:{host.get('port', 6379)}"
