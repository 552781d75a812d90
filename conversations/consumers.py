"""The WebSocket gateway at /ws/: thin, parse -> authorize -> service -> reply.

Every frame type, field, error and close code is documented in docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils import timezone

from accounts import selectors as account_selectors
from accounts import services as account_services
from accounts.ws_auth import CLOSE_UNAUTHENTICATED
from chat_project.asyncdb import db
from chat_project.errors import ApplicationError, InvalidInput
from conversations import events, groupcommit, presence, selectors, services
from conversations.protocol import (
    MAX_PRESENCE_SUBSCRIPTIONS,
    PROTOCOL_VERSION,
    RateLimitedFrame,
    UnknownType,
    check_cursors,
    error_frame,
    parse_frame,
    require,
)
from conversations.ratelimit import TokenBucket, user_window
from moderation import selectors as moderation_selectors
from notifications import realtime

logger = logging.getLogger(__name__)

CLOSE_IDLE = 4408
CLOSE_SERVICE_RESTART = 1012  # reconnect at once and sync (docs/protocol.md, "Close codes")
CLOSE_RATE_LIMITED = 4429
WRITE_FRAMES = frozenset({"message.send", "message.edit", "message.delete", "reaction.set"})

Handler = Callable[["GatewayConsumer", dict[str, Any]], Awaitable[None]]


class GatewayConsumer(AsyncWebsocketConsumer):
    """One connected device. Joins its user's group before saying ``hello``."""

    user_id: int | None = None
    device_id: int | None = None

    # --- connection lifecycle ----------------------------------------------------------

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels wraps every frame and layer event in aclose_old_connections(), a hop to
        # the single database thread. Our database work goes through database_sync_to_async,
        # which already closes stale connections around each call, so we skip that hop.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        await self.disconnect(message.get("code", 1000))
        raise StopConsumer()

    async def connect(self) -> None:
        refusal = self.scope.get("ws_refusal")
        if refusal:
            await self.accept()
            await self.close(code=refusal)
            return
        user, device = self.scope["user"], self.scope["device"]
        self.user_id, self.device_id = user.pk, device.pk
        self.watching: set[int] = set()
        self.bucket = TokenBucket(settings.WS_SENDS_PER_SECOND, settings.WS_SEND_BURST)
        self.violations: list[float] = []
        self.last_frame_at = time.monotonic()
        self.last_renewal = 0.0
        # Join first: anything committed from here on reaches this socket live, so a sync
        # that starts after hello cannot miss what commits in between.
        await self.channel_layer.group_add(realtime.user_group(user.pk), self.channel_name)
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
        _sockets.add(self)
        _ensure_sweeper()
        if await presence.store().connect(user.pk, self.channel_name):
            # The user came with the device lookup: no query to know their privacy setting.
            shows = user.last_seen_visibility == user.LastSeenVisibility.EVERYONE
            await self._announce_presence(online=True, last_seen=None, shows_presence=shows)

    async def disconnect(self, code: int) -> None:
        if self.user_id is None:
            return
        _sockets.discard(self)
        await self.channel_layer.group_discard(realtime.user_group(self.user_id), self.channel_name)
        for watched in self.watching:
            await self.channel_layer.group_discard(realtime.presence_group(watched), self.channel_name)
        if await presence.store().disconnect(self.user_id, self.channel_name):
            last_seen = await db(account_services.touch_last_seen)(user_id=self.user_id)
            await self._announce_presence(online=False, last_seen=last_seen)

    @property
    def uid(self) -> int:
        """The connected user's id (frames and events reach authenticated sockets only)."""
        if self.user_id is None:
            raise RuntimeError("socket is not authenticated")
        return self.user_id

    async def send(self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool = False) -> None:
        """Send a frame; a socket that has just gone, or is closing, is not an error here.

        Between the connection's end and this consumer handling its disconnect the server
        refuses frames: uvicorn raises ClientDisconnected (an OSError) once the connection is
        lost, and a RuntimeError ("after sending 'websocket.close'") once a close frame went
        out, ours or its reply to the client's. Letting either end the consumer would skip
        :meth:`disconnect`, leaving its presence lease ("online" for a minute) and its groups.
        """
        try:
            await super().send(text_data=text_data, bytes_data=bytes_data, close=close)
        except (OSError, RuntimeError):
            logger.debug("a frame for a socket that is gone or closing was dropped")

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        """Close the socket, unless it is already gone or closing (see :meth:`send`)."""
        try:
            await super().close(code=code, reason=reason)
        except (OSError, RuntimeError):
            logger.debug("closing a socket that is gone or closing: nothing to do")

    async def send_json(self, payload: dict[str, Any]) -> None:
        await self.send(text_data=realtime.encode(payload))

    # --- inbound frames -----------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self.last_frame_at = time.monotonic()
        frame_id = None
        try:
            frame = parse_frame(text_data, bytes_data)
            frame_id = frame.get("id")
            handler = FRAME_HANDLERS.get(frame["type"])
            if handler is None:
                raise UnknownType(f"Unknown frame type {frame['type']!r}.")
            if frame["type"] in WRITE_FRAMES:
                await self._check_rate()
            await handler(self, frame)
        except ApplicationError as exc:
            await self.send_json(error_frame(exc, frame_id))
            if isinstance(exc, RateLimitedFrame) and self._abusive():
                await self.close(code=CLOSE_RATE_LIMITED)

    async def _check_rate(self) -> None:
        if not self.bucket.take() or not user_window().allow(self.uid):
            self.violations.append(time.monotonic())
            raise RateLimitedFrame()

    def _abusive(self) -> bool:
        """Sustained abuse: many rate-limited frames within the last ten seconds."""
        horizon = time.monotonic() - 10
        self.violations = [t for t in self.violations if t > horizon]
        return len(self.violations) > int(settings.WS_ABUSE_CLOSE_AFTER)

    async def on_ping(self, frame: dict[str, Any]) -> None:
        await self.send_json({"type": "pong", "id": frame.get("id")})
        now = time.monotonic()
        if now - self.last_renewal > settings.WS_HEARTBEAT_SECONDS / 2:
            self.last_renewal = now
            await presence.store().renew(self.uid, self.channel_name)

    async def on_message_send(self, frame: dict[str, Any]) -> None:
        conversation_id, client_msg_id = require(frame, "conversation_id", "client_msg_id")
        reply_to, attachment_ids = frame.get("reply_to"), frame.get("attachment_ids")
        if reply_to is None and not attachment_ids:  # plain text: stored by the next group commit
            outcome = await groupcommit.queue().send(
                services.TextSend(
                    sender=self.scope["user"],
                    conversation_id=selectors.as_id(conversation_id),
                    client_msg_id=services.check_client_msg_id(client_msg_id),
                    body=services.check_body("" if frame.get("body") is None else frame["body"]),
                    origin=self.channel_name,
                )
            )
            if isinstance(outcome, ApplicationError):
                raise outcome
            message, _created = outcome
        else:
            message, _created = await realtime.run_service(
                services.send_message,
                sender=self.scope["user"],
                conversation_id=conversation_id,
                client_msg_id=client_msg_id,
                body=frame.get("body"),
                reply_to=reply_to,
                attachment_ids=attachment_ids,
                origin=self.channel_name,
            )
        # A retry is answered with the original message, as it is now.
        await self.send_json({"type": "message.ack", "id": frame.get("id"), "message": events.message_payload(message)})

    async def _message_change(self, frame: dict[str, Any], service: Callable[..., Any], **fields: Any) -> None:
        conversation_id, message_id = require(frame, "conversation_id", "message_id")
        message = await realtime.run_service(
            service, user=self.scope["user"], conversation_id=conversation_id, message_id=message_id, **fields
        )
        await self.send_json({**events.message_updated(message), "id": frame.get("id")})

    async def on_message_edit(self, frame: dict[str, Any]) -> None:
        await self._message_change(frame, services.edit_message, body=frame.get("body"))

    async def on_message_delete(self, frame: dict[str, Any]) -> None:
        await self._message_change(frame, services.delete_message)

    async def on_reaction_set(self, frame: dict[str, Any]) -> None:
        await self._message_change(frame, services.set_reaction, emoji=frame.get("emoji"))

    async def on_receipt(self, frame: dict[str, Any]) -> None:
        conversation_id, status, seq = require(frame, "conversation_id", "status", "seq")
        await realtime.run_service(
            services.mark_cursor, user=self.scope["user"], conversation_id=conversation_id, status=status, seq=seq
        )

    async def on_typing(self, frame: dict[str, Any]) -> None:
        conversation_id, state = require(frame, "conversation_id", "state")
        if state not in ("start", "stop"):
            raise InvalidInput(fields={"state": ["'start' or 'stop'."]})
        conversation_id, others = await db(moderation_selectors.typing_recipients)(
            user_id=self.uid, conversation_id=conversation_id
        )
        await realtime.asend_to_users(
            others,
            events.typing(
                conversation_id=conversation_id,
                user_id=self.uid,
                state=state,
                expires_in=settings.TYPING_EXPIRY_SECONDS,
            ),
        )

    async def on_presence_subscribe(self, frame: dict[str, Any]) -> None:
        (user_ids,) = require(frame, "user_ids")
        ids = services.check_user_ids(user_ids)
        if len(self.watching | set(ids)) > MAX_PRESENCE_SUBSCRIPTIONS:
            raise InvalidInput(fields={"user_ids": [f"At most {MAX_PRESENCE_SUBSCRIPTIONS} users per connection."]})
        # A block either way hides presence both ways, looking like "hides last seen".
        blocked = await db(moderation_selectors.presence_hidden_ids)(user_id=self.uid, among=ids)
        # Watch first, then read: a change announced after the join reaches this socket, and
        # (frames and events being handled one at a time) after the state sent below; a change
        # announced before it is already in what we read.
        for user_id in ids:
            if user_id not in self.watching and user_id not in blocked:
                self.watching.add(user_id)
                await self.channel_layer.group_add(realtime.presence_group(user_id), self.channel_name)
        await self._send_presence(ids, hidden=blocked)

    async def _send_presence(self, user_ids: list[int], *, hidden: set[int]) -> None:
        """Each user's presence as this socket may see it (``hidden``: a block either way)."""
        visible = await db(account_selectors.presence_profiles)(user_ids=user_ids)
        online = await presence.store().online(list(visible))
        for user_id, profile in visible.items():
            shows = profile.shows_presence and user_id not in hidden
            await self.send_json(
                events.presence(
                    user_id=user_id,
                    online=online[user_id] if shows else None,
                    last_seen=profile.last_seen if shows else None,
                )
            )

    async def on_sync(self, frame: dict[str, Any]) -> None:
        """Stream everything changed after the device's cursors, then ``sync.done``."""
        cursors = check_cursors(frame.get("cursors"))
        frame_id = frame.get("id")
        memberships = await db(selectors.user_memberships)(self.uid)
        for membership in memberships:
            snapshot = membership.conversation.version
            cursor = cursors.get(membership.conversation_id, 0)
            first = True
            while cursor < snapshot:
                page = await db(_sync_page)(membership, cursor)
                last_page = len(page) < selectors.SYNC_PAGE_SIZE
                cursor = max([cursor] + [m["version"] for m in page] + ([snapshot] if last_page else []))
                batch: dict[str, Any] = {
                    "type": "sync.batch",
                    "id": frame_id,
                    "conversation_id": membership.conversation_id,
                    "messages": page,
                    "version": cursor,
                    "has_more": not last_page,
                }
                if first:
                    batch["conversation"] = events.conversation_payload(membership.conversation, membership)
                    first = False
                await self.send_json(batch)
        known = {m.conversation_id for m in memberships}
        receipts = await db(_sync_receipts)(sorted(known))
        await self.send_json(
            {
                "type": "sync.done",
                "id": frame_id,
                "removed": sorted(c for c in cursors if c not in known),
                "receipts": receipts,
            }
        )

    # --- channel-layer events (see notifications/realtime.py) ---------------------------

    async def client_event(self, event: dict[str, Any]) -> None:
        """A pre-encoded frame for this user; the socket that caused it already has an ack."""
        if event.get("origin") != self.channel_name:
            await self.send(text_data=event["text"])

    async def device_revoked(self, event: dict[str, Any]) -> None:
        """The device logged out elsewhere: close its sockets."""
        if event["device_id"] == self.device_id:
            await self.close(code=CLOSE_UNAUTHENTICATED)

    async def sockets_close(self, event: dict[str, Any]) -> None:
        """A moderator suspended or banned the user: close every socket (4423, docs/protocol.md)."""
        await self.close(code=event["code"])

    async def presence_hide(self, event: dict[str, Any]) -> None:
        """A block between this user and another: stop watching the other's presence."""
        other = event["user_id"]
        if other in self.watching:
            self.watching.discard(other)
            await self.channel_layer.group_discard(realtime.presence_group(other), self.channel_name)
            await self.send_json(events.presence(user_id=other, online=None, last_seen=None))

    async def layer_resumed(self, event: dict[str, Any]) -> None:
        """The Redis shard of one of this socket's groups is back after an outage, whose events
        are lost (chat_project/channel_layer.py). The user's own group: close with 1012, so
        the client reconnects and syncs. A watched user's presence: send it afresh."""
        group = event["group"]
        if group == realtime.user_group(self.uid):
            await self.close(code=CLOSE_SERVICE_RESTART)
            return
        watched = [u for u in self.watching if realtime.presence_group(u) == group]
        if watched:
            await self._send_presence(watched, hidden=set())

    async def _announce_presence(self, *, online: bool, last_seen: Any, shows_presence: bool | None = None) -> None:
        """Tell the user's watchers they came online or went offline, if the user shows presence
        (read afresh unless given: the setting may have changed while the socket was open)."""
        if shows_presence is None:
            profile = (await db(account_selectors.presence_profiles)(user_ids=[self.uid])).get(self.uid)
            shows_presence = profile is not None and profile.shows_presence
        if not shows_presence:
            return
        await realtime.asend_to_group(
            realtime.presence_group(self.uid),
            events.presence(user_id=self.uid, online=online, last_seen=last_seen),
        )


def _sync_page(membership: Any, cursor: int) -> list[dict[str, Any]]:
    return [events.message_payload(m) for m in selectors.changes_since(membership=membership, version=cursor)]


def _sync_receipts(conversation_ids: list[int]) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in events.receipt_update(row).items() if k != "type"}
        for row in selectors.receipt_cursors(conversation_ids)
    ]


FRAME_HANDLERS: dict[str, Handler] = {
    "ping": GatewayConsumer.on_ping,
    "message.send": GatewayConsumer.on_message_send,
    "message.edit": GatewayConsumer.on_message_edit,
    "message.delete": GatewayConsumer.on_message_delete,
    "reaction.set": GatewayConsumer.on_reaction_set,
    "receipt": GatewayConsumer.on_receipt,
    "typing": GatewayConsumer.on_typing,
    "presence.subscribe": GatewayConsumer.on_presence_subscribe,
    "sync": GatewayConsumer.on_sync,
}


# --- idle sockets ------------------------------------------------------------------------------

_sockets: weakref.WeakSet[GatewayConsumer] = weakref.WeakSet()
_sweeper: asyncio.Task[None] | None = None


def _ensure_sweeper() -> None:
    """Start this process's one idle-socket sweeper (a timer, not a task per socket)."""
    global _sweeper
    if _sweeper is None or _sweeper.done():
        _sweeper = asyncio.get_running_loop().create_task(_sweep_idle_sockets())


async def _sweep_idle_sockets() -> None:
    """Close sockets silent for longer than WS_IDLE_TIMEOUT_SECONDS (frozen connections)."""
    while _sockets:
        await asyncio.sleep(min(5.0, settings.WS_IDLE_TIMEOUT_SECONDS / 4))
        deadline = time.monotonic() - settings.WS_IDLE_TIMEOUT_SECONDS
        for socket in list(_sockets):
            if socket.last_frame_at < deadline:
                _sockets.discard(socket)
                try:
                    await socket.close(code=CLOSE_IDLE)
                except Exception:  # the transport may already be gone
                    logger.debug("closing an idle socket failed", exc_info=True)
