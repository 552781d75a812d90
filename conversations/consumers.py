"""The WebSocket gateway at /ws/: thin, parse -> authorize -> service -> reply.

Every frame type is documented in docs/protocol.md.
"""

from __future__ import annotations

from typing import Any

import orjson
from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils import timezone

from accounts.ws_auth import CLOSE_UNAUTHENTICATED
from chat_project.errors import ApplicationError
from conversations.protocol import (
    PROTOCOL_VERSION,
    ProtocolError,
    UnknownType,
    error_frame,
    parse_frame,
)
from notifications.realtime import user_group


class GatewayConsumer(AsyncWebsocketConsumer):
    """One connected device. Joins its user's group before saying ``hello``."""

    user_id: int | None = None
    device_id: int | None = None

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels wraps every frame and layer event in aclose_old_connections(), a hop to
        # the single sync thread. Our database work goes through database_sync_to_async,
        # which already closes stale connections around each call, so we skip that hop.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        await self.disconnect(message.get("code", 1000))
        from channels.exceptions import StopConsumer

        raise StopConsumer()

    async def send_json(self, payload: dict[str, Any]) -> None:
        await self.send(text_data=orjson.dumps(payload).decode())

    async def connect(self) -> None:
        refusal = self.scope.get("ws_refusal")
        if refusal:
            await self.accept()
            await self.close(code=refusal)
            return
        user, device = self.scope["user"], self.scope["device"]
        self.user_id, self.device_id = user.pk, device.pk
        # Join first: anything committed after this point reaches us live.
        await self.channel_layer.group_add(user_group(user.pk), self.channel_name)
        await self.accept()
        await self.send_json(
            {
                "type": "hello",
                "protocol": PROTOCOL_VERSION,
                "user_id": user.pk,
                "device_id": device.pk,
                "server_time": timezone.now().isoformat(),
                "heartbeat_seconds": settings.WS_HEARTBEAT_SECONDS,
            }
        )

    async def disconnect(self, code: int) -> None:
        if self.user_id is not None:
            await self.channel_layer.group_discard(user_group(self.user_id), self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        frame_id = None
        try:
            frame = parse_frame(text_data, bytes_data)
            frame_id = frame.get("id")
            await self.handle_frame(frame)
        except ProtocolError as exc:
            await self.send_json(error_frame(exc, frame_id))
        except ApplicationError as exc:
            await self.send_json(error_frame(exc, frame_id))

    async def handle_frame(self, frame: dict[str, Any]) -> None:
        """Route one client frame to its handler."""
        if frame["type"] == "ping":
            await self.send_json({"type": "pong", "id": frame.get("id")})
            return
        raise UnknownType(f"Unknown frame type {frame['type']!r}.")

    # --- channel-layer events (see notifications/realtime.py) ---------------------------

    async def device_revoked(self, event: dict[str, Any]) -> None:
        """The device logged out elsewhere: close its sockets."""
        if event["device_id"] == self.device_id:
            await self.close(code=CLOSE_UNAUTHENTICATED)
