"""The only code that talks to the channel layer's groups.

Every connected device of a user is in the group ``user.<id>``. Events are a doorbell, not
the truth: the channel layer is at-most-once, and clients recover anything missed by
syncing from their cursors (docs/architecture.md, "Delivery semantics").
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer


def user_group(user_id: int) -> str:
    """The channel-layer group every connected device of the user joins."""
    return f"user.{user_id}"


async def asend_to_user(user_id: int, event: dict[str, Any]) -> None:
    """Send one channel-layer event to every connected device of a user."""
    layer = get_channel_layer()
    if layer is not None:
        await layer.group_send(user_group(user_id), event)


def send_to_user(user_id: int, event: dict[str, Any]) -> None:
    """Synchronous :func:`asend_to_user`, for services running in a worker thread."""
    async_to_sync(asend_to_user)(user_id, event)


def revoke_device_sockets(*, user_id: int, device_id: int) -> None:
    """Ask every web process to close the sockets of a device that was logged out."""
    send_to_user(user_id, {"type": "device.revoked", "device_id": device_id})
