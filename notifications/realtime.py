"""The only code that talks to the channel layer's groups.

Every connected device of a user is in the group ``user.<id>``. Events are a doorbell, not
the truth: the channel layer is at-most-once, and clients recover anything missed by
syncing from their cursors (docs/architecture.md, "Delivery semantics").

Services call :func:`send_on_commit`; nothing leaves before the transaction commits. Each
event is encoded to JSON once and the same text goes to every recipient. When a service
runs on the database thread under :func:`run_service` (the WebSocket path), its events are
handed back to the event loop and published there, so the single database thread never
waits on Redis.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

from chat_project.asyncdb import db
from chat_project.channel_layer import ShardedPubSubChannelLayer
from chat_project.redis_client import ShardUnavailable

T = TypeVar("T")

logger = logging.getLogger(__name__)

# Event types as consumers see them (method names after Channels' dot-to-underscore rule).
CLIENT_EVENT = "client.event"
DEVICE_REVOKED = "device.revoked"
SOCKETS_CLOSE = "sockets.close"
PRESENCE_HIDE = "presence.hide"


@dataclass(frozen=True)
class Delivery:
    """One encoded frame for a set of groups; ``origin`` is the socket to skip (it got an ack)."""

    groups: tuple[str, ...]
    text: str
    origin: str | None = None


_outbox: ContextVar[list[Delivery] | None] = ContextVar("realtime_outbox", default=None)


def user_group(user_id: int) -> str:
    """The channel-layer group every connected device of the user joins."""
    return f"user.{user_id}"


def presence_group(user_id: int) -> str:
    """The group of sockets watching a user's presence."""
    return f"presence.{user_id}"


def encode(payload: dict[str, Any]) -> str:
    return orjson.dumps(payload).decode()


async def publish(deliveries: Iterable[Delivery]) -> None:
    """Send deliveries through the channel layer; never fails, never hangs.

    On Redis all of them go out in one pipelined round trip per shard, so a message to a
    group of a thousand members costs a few writes, not a thousand round trips. Sending is
    bounded (twice ``REDIS_TIMEOUT_SECONDS``: the layer's own timeout fires first); what
    fails is logged and dropped, since an event is only a doorbell and its receivers
    resync. A shard known to be down fails at once, so only the sends in flight when it
    went down wait.
    """
    layer = get_channel_layer()
    if layer is None:
        return
    sends: list[tuple[str, dict[str, Any]]] = []
    for delivery in deliveries:
        message = {"type": CLIENT_EVENT, "text": delivery.text, "origin": delivery.origin}  # encoded once
        sends.extend((group, message) for group in delivery.groups)
    if not sends:
        return
    if isinstance(layer, ShardedPubSubChannelLayer):  # pipelined: one round trip per shard
        try:
            async with asyncio.timeout(settings.REDIS_TIMEOUT_SECONDS * 2):
                failures = await layer.group_send_many(sends)
        except Exception:  # doorbells that did not ring: the receivers resync
            logger.warning("dropped %d %s sends", len(sends), CLIENT_EVENT, exc_info=True)
            return
        for failure in failures:
            logger.debug("dropped %s sends to a Redis shard that is down: %s", CLIENT_EVENT, failure)
        return
    await asyncio.gather(*(_group_send(layer, group, message) for group, message in sends))


async def _group_send(layer: Any, group: str, message: dict[str, Any]) -> None:
    try:
        async with asyncio.timeout(settings.REDIS_TIMEOUT_SECONDS * 2):  # no task per send, unlike wait_for
            await layer.group_send(group, message)
    except ShardUnavailable:
        logger.debug("dropped a %s for %s: its Redis shard is down", message["type"], group)
    except Exception:  # a doorbell that did not ring: the receivers resync
        logger.warning("dropped a %s for %s", message["type"], group, exc_info=True)


def _deliver(delivery: Delivery) -> None:
    outbox = _outbox.get()
    if outbox is not None:
        outbox.append(delivery)
    else:
        async_to_sync(publish)([delivery])


def send_on_commit(user_ids: Iterable[int], payload: dict[str, Any], *, origin: str | None = None) -> None:
    """Send ``payload`` to every device of these users once the current transaction commits."""
    delivery = Delivery(tuple(user_group(u) for u in user_ids), encode(payload), origin)
    if delivery.groups:
        transaction.on_commit(lambda: _deliver(delivery))


def send_to_group_on_commit(group: str, payload: dict[str, Any]) -> None:
    """Send ``payload`` to an arbitrary group (presence watchers) after commit."""
    delivery = Delivery((group,), encode(payload))
    transaction.on_commit(lambda: _deliver(delivery))


async def run_service(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run a synchronous service on a database thread; publish its events from the loop."""
    outbox: list[Delivery] = []
    token = _outbox.set(outbox)
    try:
        result: T = await db(func)(*args, **kwargs)
    finally:
        _outbox.reset(token)
        await publish(outbox)  # what committed is announced even if a later step failed
    return result


async def asend_to_group(group: str, payload: dict[str, Any]) -> None:
    """Send an ephemeral event (typing, presence) right away: nothing to commit."""
    await publish([Delivery((group,), encode(payload))])


async def asend_to_users(user_ids: Iterable[int], payload: dict[str, Any], *, origin: str | None = None) -> None:
    """Send an ephemeral event to every device of these users right away."""
    await publish([Delivery(tuple(user_group(u) for u in user_ids), encode(payload), origin)])


def revoke_device_sockets(*, user_id: int, device_id: int) -> None:
    """Ask every web process to close the sockets of a device that was logged out."""
    _send_control(user_group(user_id), {"type": DEVICE_REVOKED, "device_id": device_id})


def close_user_sockets(*, user_id: int, code: int) -> None:
    """Ask every web process to close all sockets of a user with ``code`` (a suspension or ban)."""
    _send_control(user_group(user_id), {"type": SOCKETS_CLOSE, "code": code})


def hide_presence(*, user_id: int, other_user_id: int) -> None:
    """Ask a user's sockets to stop watching another user's presence (a block between them)."""
    _send_control(user_group(user_id), {"type": PRESENCE_HIDE, "user_id": other_user_id})


def _send_control(group: str, message: dict[str, Any]) -> None:
    """Send a control event from synchronous code, bounded and never raising: when the
    group's shard is down the sockets miss it, and are closed with 1012 when it returns
    (chat_project/channel_layer.py), so they reconnect through the checks again."""
    layer = get_channel_layer()
    if layer is not None:
        async_to_sync(_group_send)(layer, group, message)
