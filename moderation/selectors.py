"""Reads of moderation, and the one rule other apps consult before a send.

:func:`check_send_allowed` is called by ``conversations.services.send_message`` (REST and
WebSocket alike); :func:`presence_hidden_ids` by the gateway's presence code. See
docs/architecture.md, "Moderation".
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING

from django.db import connection
from django.db.models import Q, QuerySet

from chat_project.errors import ApplicationError
from chat_project.sql import placeholders
from conversations.models import Conversation, Membership, Message
from conversations.selectors import access_members, visible_messages
from moderation.models import Block

if TYPE_CHECKING:
    from conversations.selectors import Members

REPORT_CONTEXT_MESSAGES = 10  # how many messages before the reported one a snapshot keeps


class Blocked(ApplicationError):
    code = "blocked"
    status_code = 403
    default_detail = "This user does not accept messages from you."


class ConversationFrozen(ApplicationError):
    code = "frozen"
    status_code = 403
    default_detail = "A moderator froze this group: no new messages can be sent."


def _between(user_id: int, others: Iterable[int]) -> QuerySet[Block]:
    """Blocks in either direction between a user and any of ``others``."""
    others = list(others)
    return Block.objects.filter(
        Q(blocker_id=user_id, blocked_id__in=others) | Q(blocker_id__in=others, blocked_id=user_id)
    )


def check_not_frozen(conversation: Conversation) -> None:
    """Refuse new content (edits and reactions too) in a group a moderator froze."""
    if conversation.frozen_at is not None:
        raise ConversationFrozen()


def typing_recipients(*, user_id: int, conversation_id: object) -> tuple[int, list[int]]:
    """Who hears the user typing in a conversation: its other members, or nobody when the
    user could not send there (a frozen group, a block either way in a direct chat)."""
    members = access_members(user_id=user_id, conversation_id=conversation_id)
    try:
        check_send_allowed(sender_id=user_id, members=members)
    except ApplicationError:
        return members.me.conversation_id, []
    return members.me.conversation_id, [u for u in members.user_ids if u != user_id]


def blocks_among(user_ids: Collection[int]) -> set[tuple[int, int]]:
    """Every (blocker, blocked) pair between two of these users, in one query."""
    if len(user_ids) < 2:
        return set()
    ids = sorted(user_ids)
    with connection.cursor() as cursor:  # SQL, not the ORM: this runs for every batch of sends
        cursor.execute(
            # Only placeholders are formatted into the statement.
            "SELECT blocker_id, blocked_id FROM moderation_block"  # noqa: S608
            f" WHERE blocker_id IN ({placeholders(ids)}) AND blocked_id IN ({placeholders(ids)})",
            [*ids, *ids],
        )
        return {(int(blocker), int(blocked)) for blocker, blocked in cursor.fetchall()}


def check_send_allowed(*, sender_id: int, members: Members, blocks: set[tuple[int, int]] | None = None) -> None:
    """Refuse a send into a frozen group, or a direct message between users who blocked each other.

    Group sends cost no query (``access_members`` read the frozen flag); a direct send costs
    one indexed probe, unless the caller read ``blocks`` (:func:`blocks_among`) for many
    sends at once. Blocks do not apply in groups, as in other messengers.
    """
    if members.frozen:
        raise ConversationFrozen()
    if members.kind != Conversation.Kind.DIRECT:
        return
    others = [u for u in members.user_ids if u != sender_id]
    if blocks is None:
        blocks = blocks_among([sender_id, *others])
    if any((sender_id, other) in blocks for other in others):
        raise Blocked("You blocked this user: unblock them to send messages.")
    if any((other, sender_id) in blocks for other in others):
        raise Blocked()


def presence_hidden_ids(*, user_id: int, among: list[int]) -> set[int]:
    """Those of ``among`` whose presence the user may not see, nor they the user's (a block either way)."""
    if not among:
        return set()
    return {
        blocked if blocker == user_id else blocker
        for blocker, blocked in _between(user_id, among).values_list("blocker_id", "blocked_id")
    }


def is_blocked_either_way(*, user_id: int, other_id: int) -> bool:
    return _between(user_id, [other_id]).exists()


def blocks_of(*, user_id: int) -> QuerySet[Block]:
    """The users this user blocked, newest first, with those users loaded."""
    return Block.objects.filter(blocker_id=user_id).select_related("blocked").order_by("-created_at", "-id")


def report_context(*, membership: Membership, message: Message, count: int = REPORT_CONTEXT_MESSAGES) -> list[Message]:
    """The reported message and up to ``count`` messages before it that the reporter may see, oldest first."""
    earlier = list(
        visible_messages(membership).filter(seq__lte=message.seq).select_related("sender").order_by("-seq")[: count + 1]
    )
    return list(reversed(earlier))


def recent_context(*, membership: Membership, count: int = REPORT_CONTEXT_MESSAGES) -> list[Message]:
    """The last ``count`` messages of a conversation that the member may see, oldest first."""
    latest = list(visible_messages(membership).select_related("sender").order_by("-seq")[:count])
    return list(reversed(latest))
