"""Builders for everything we tell clients about conversations, one per event kind.

The same payloads serve the WebSocket frames (docs/protocol.md) and the REST responses,
so the two cannot disagree on what a message looks like.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from conversations.models import Conversation, Membership, Message
from conversations.selectors import ConversationSummary
from media.models import Attachment


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def attachment_payload(attachment: Attachment) -> dict[str, Any]:
    """An attachment's description; files are fetched through GET /api/v1/media/{id}/."""
    return {
        "id": attachment.pk,
        "kind": attachment.kind,
        "status": attachment.status,
        "content_type": attachment.content_type,
        "size": attachment.size,
        "filename": attachment.filename,
        "width": attachment.width,
        "height": attachment.height,
        "duration": attachment.duration,
        "has_thumbnail": bool(attachment.thumbnail_key),
    }


def message_payload(message: Message) -> dict[str, Any]:
    """A message as clients see it. Reactions and attachments must be loaded already
    (``selectors.visible_messages`` prefetches them; a new message gets them from
    ``selectors.loaded``), so building a payload never queries. A message hidden by a
    moderator is a tombstone like a deleted one, flagged ``hidden``."""
    deleted = message.deleted_at is not None
    hidden = message.hidden_at is not None
    gone = deleted or hidden
    reactions = [] if gone else [{"user_id": r.user_id, "emoji": r.emoji} for r in message.reactions.all()]
    files = [] if gone else list(message.attachments.all())
    return {
        "id": message.pk,
        "conversation_id": message.conversation_id,
        "seq": message.seq,
        "version": message.version,
        "sender_id": message.sender_id,
        "client_msg_id": message.client_msg_id,
        "kind": message.kind,
        "body": "" if gone else message.body,
        "meta": message.meta,
        "reply_to": message.reply_to_id,
        "created_at": _iso(message.created_at),
        "edited_at": _iso(message.edited_at),
        "deleted": deleted,
        "hidden": hidden,
        "reactions": reactions,
        "attachments": [attachment_payload(a) for a in files],
    }


def message_new(message: Message) -> dict[str, Any]:
    return {"type": "message.new", "message": message_payload(message)}


def message_updated(message: Message) -> dict[str, Any]:
    """An edit, deletion, reaction change, hiding or restoring: the message in its new state."""
    return {"type": "message.updated", "message": message_payload(message)}


def receipt_update(membership: Membership) -> dict[str, Any]:
    return {
        "type": "receipt.update",
        "conversation_id": membership.conversation_id,
        "user_id": membership.user_id,
        "delivered_seq": membership.delivered_seq,
        "read_seq": membership.read_seq,
    }


def typing(*, conversation_id: int, user_id: int, state: str, expires_in: int) -> dict[str, Any]:
    return {
        "type": "typing",
        "conversation_id": conversation_id,
        "user_id": user_id,
        "state": state,
        "expires_in": expires_in,
    }


def presence(*, user_id: int, online: bool | None, last_seen: datetime | None) -> dict[str, Any]:
    """``online`` is None when the user hides their presence."""
    return {"type": "presence", "user_id": user_id, "online": online, "last_seen": _iso(last_seen)}


def conversation_payload(conversation: Conversation, membership: Membership) -> dict[str, Any]:
    """The conversation as one member sees it (without the list's extras)."""
    return {
        "id": conversation.pk,
        "kind": conversation.kind,
        "title": conversation.title,
        "last_seq": conversation.last_seq,
        "version": conversation.version,
        "role": membership.role,
        "joined_seq": membership.joined_seq,
        "delivered_seq": membership.delivered_seq,
        "read_seq": membership.read_seq,
        "muted_until": _iso(membership.muted_until),
    }


def membership_removed(*, conversation_id: int) -> dict[str, Any]:
    """Told to a member who left or was removed: stop showing the conversation as active."""
    return {"type": "conversation.removed", "conversation_id": conversation_id}


def user_payload(user: Any) -> dict[str, Any]:
    """The public fields of a user."""
    return {"id": user.pk, "username": user.username, "display_name": user.display_name}


def conversation_item(summary: ConversationSummary) -> dict[str, Any]:
    """One row of the conversation list: the conversation plus last message and unread count."""
    conversation, peer = summary.conversation, summary.other_user
    return {
        **conversation_payload(conversation, summary.membership),
        "title": conversation.title or (peer.name if peer is not None else ""),
        "peer": user_payload(peer) if peer is not None else None,
        "unread_count": summary.unread_count,
        "member_count": summary.member_count,
        "last_message_at": _iso(conversation.last_message_at),
        "last_message": message_payload(summary.last_message) if summary.last_message else None,
    }


def member_payload(membership: Membership) -> dict[str, Any]:
    return {
        "user": user_payload(membership.user),
        "role": membership.role,
        "delivered_seq": membership.delivered_seq,
        "read_seq": membership.read_seq,
    }
