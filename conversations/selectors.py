"""Reads of conversations. ``access_membership`` is the one gate from a client-supplied id.

Missing and not-yours answer the same :class:`NotFound`, so no route leaks whether a
conversation exists.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import reduce
from operator import or_
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, F, Prefetch, Q, QuerySet

from chat_project import dbrouter
from chat_project.errors import NotFound
from chat_project.sql import placeholders
from conversations.models import Conversation, Membership, Message, Reaction
from media.models import Attachment

HISTORY_PAGE_MAX = 100
SYNC_PAGE_SIZE = 100


class ConversationNotFound(NotFound):
    default_detail = "Conversation not found."


class MessageNotFound(NotFound):
    default_detail = "Message not found."


def as_id(value: Any) -> int:
    """A client-supplied id as an int; anything else is simply not found."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConversationNotFound()
    try:
        return int(value)
    except ValueError:
        raise ConversationNotFound() from None


def access_membership(*, user_id: int, conversation_id: Any) -> Membership:
    """The caller's active membership, with its conversation; one query."""
    try:
        return Membership.objects.select_related("conversation").get(
            conversation_id=as_id(conversation_id), user_id=user_id, left_at__isnull=True
        )
    except Membership.DoesNotExist:
        raise ConversationNotFound() from None


@dataclass(frozen=True)
class Members:
    """The active members of a conversation as seen by one of them (the caller)."""

    user_ids: list[int]
    me: Membership
    kind: str = Conversation.Kind.GROUP
    frozen: bool = False  # a moderator froze the conversation


def access_members(*, user_id: int, conversation_id: Any) -> Members:
    """The gate plus the fan-out list: the caller's membership and every active member's id.

    One indexed query (the hot paths, send and typing, need both); the caller's membership
    comes back without its conversation loaded, the conversation's kind and frozen flag with it.
    """
    cid = as_id(conversation_id)
    members = access_members_many([(user_id, cid)]).get((user_id, cid))
    if members is None:
        raise ConversationNotFound()
    return members


def access_members_many(pairs: Iterable[tuple[int, int]]) -> dict[tuple[int, int], Members]:
    """:func:`access_members` for many (user id, conversation id) pairs at once, in one query.

    A pair whose user is not an active member is missing from the answer.
    """
    wanted = set(pairs)
    conversation_ids = sorted({cid for _, cid in wanted})
    # Plain SQL: this runs for every send and typing frame, and building the equivalent ORM
    # query cost more than running it.
    with connection.cursor() as cursor:
        cursor.execute(
            # Only placeholders are formatted into the statement.
            "SELECT m.id, m.conversation_id, m.user_id, m.role, m.joined_seq, c.kind, c.frozen_at IS NOT NULL"  # noqa: S608
            " FROM conversations_membership m JOIN conversations_conversation c ON c.id = m.conversation_id"
            f" WHERE m.left_at IS NULL AND m.conversation_id IN ({placeholders(conversation_ids)})",
            conversation_ids,
        )
        rows = cursor.fetchall()
    user_ids: dict[int, list[int]] = {}
    mine: dict[tuple[int, int], tuple[Membership, str, bool]] = {}
    for pk, cid, member_id, role, joined_seq, kind, frozen in rows:
        user_ids.setdefault(cid, []).append(member_id)
        if (member_id, cid) in wanted:
            me = Membership(id=pk, conversation_id=cid, user_id=member_id, role=role, joined_seq=joined_seq)
            mine[member_id, cid] = (me, kind, bool(frozen))
    return {
        pair: Members(user_ids=user_ids[pair[1]], me=me, kind=kind, frozen=frozen)
        for pair, (me, kind, frozen) in mine.items()
    }


def active_member_ids(conversation_id: int) -> list[int]:
    return list(
        Membership.objects.filter(conversation_id=conversation_id, left_at__isnull=True).values_list(
            "user_id", flat=True
        )
    )


def visible_messages(membership: Membership) -> QuerySet[Message]:
    """Messages the member may see: those after they joined, with reactions loaded."""
    return visible_messages_of(membership.conversation_id).filter(seq__gt=membership.joined_seq)


def loaded(message: Message, *, attachments: list[Attachment] | None = None) -> Message:
    """Mark a message just created as having these attachments and no reactions, so that
    building its payload needs no query (Django's prefetch cache, filled by hand)."""
    message._prefetched_objects_cache = {"reactions": [], "attachments": attachments or []}  # type: ignore[attr-defined]  # Django's own cache attribute
    return message


def visible_messages_of(conversation_id: int) -> QuerySet[Message]:
    """Every message of a conversation, with reactions and attachments loaded."""
    return Message.objects.filter(conversation_id=conversation_id).prefetch_related(
        Prefetch("reactions", queryset=Reaction.objects.order_by("created_at", "id")),
        Prefetch("attachments", queryset=Attachment.objects.order_by("id")),
    )


def access_message(*, membership: Membership, message_id: Any) -> Message:
    """A message of the member's conversation that the member may see."""
    try:
        return visible_messages(membership).get(pk=as_id(message_id))
    except (Message.DoesNotExist, NotFound):
        raise MessageNotFound() from None


def history_db(membership: Membership) -> str:
    """Where to read the member's history: the replica once it has replayed the conversation as
    far as the primary had when the membership (with its conversation) was read; else the
    primary. Explained in chat_project/dbrouter.py."""
    if not dbrouter.replica_configured() or not Membership.conversation.is_cached(membership):
        return dbrouter.PRIMARY  # no replica, or no version to be as fresh as
    conversation = membership.conversation
    return dbrouter.fresh_replica(Conversation.objects.filter(pk=conversation.pk, version__gte=conversation.version))


def message_page(
    *, membership: Membership, before_seq: int | None = None, after_seq: int | None = None, limit: int = 50
) -> tuple[list[Message], bool]:
    """History by seq, oldest first: the ``limit`` messages before or after a seq.

    Returns the page and whether more messages lie beyond it in the direction asked.
    """
    limit = max(1, min(limit, HISTORY_PAGE_MAX))
    messages = visible_messages(membership).using(history_db(membership))
    if after_seq is not None:
        page = list(messages.filter(seq__gt=after_seq).order_by("seq")[: limit + 1])
        return page[:limit], len(page) > limit
    if before_seq is not None:
        messages = messages.filter(seq__lt=before_seq)
    page = list(messages.order_by("-seq")[: limit + 1])
    return list(reversed(page[:limit])), len(page) > limit


def changes_since(*, membership: Membership, version: int, limit: int = SYNC_PAGE_SIZE) -> list[Message]:
    """Messages of the conversation changed after ``version``, in version order (sync).

    Reactions and attachments come by two queries over the page's range of ids rather than
    Django's prefetch, whose list of a whole page's ids cost more to build than the queries
    took to run (profiled with the reconnect benchmark, W5).
    """
    database = history_db(membership)
    cid = membership.conversation_id
    page = list(
        Message.objects.using(database)
        .filter(conversation_id=cid, seq__gt=membership.joined_seq, version__gt=version)
        .order_by("version")[:limit]
    )
    if not page:
        return page
    ids = {m.pk for m in page}
    near = {"message__conversation_id": cid, "message_id__gte": min(ids), "message_id__lte": max(ids)}
    reactions: dict[int, list[Reaction]] = {}
    for reaction in Reaction.objects.using(database).filter(**near).order_by("created_at", "id"):
        reactions.setdefault(reaction.message_id, []).append(reaction)
    files: dict[int, list[Attachment]] = {}
    for attachment in Attachment.objects.using(database).filter(**near).order_by("id"):
        files.setdefault(attachment.message_id or 0, []).append(attachment)
    for message in page:  # the range may hold other messages' rows: keep only the page's
        message._prefetched_objects_cache = {  # type: ignore[attr-defined]  # Django's own cache attribute
            "reactions": reactions.get(message.pk, []),
            "attachments": files.get(message.pk, []),
        }
    return page


def user_memberships(user_id: int) -> list[Membership]:
    """Every active membership of the user, with its conversation."""
    return list(Membership.objects.select_related("conversation").filter(user_id=user_id, left_at__isnull=True))


def receipt_cursors(conversation_ids: list[int]) -> list[Membership]:
    """Every active member's cursors in those of the conversations that hear receipts live
    (see :func:`receipts_fan_out_to_all`); larger groups are left out. Two queries."""
    if not conversation_ids:
        return []
    active = Membership.objects.filter(conversation_id__in=conversation_ids, left_at__isnull=True)
    sizes = active.values("conversation_id").annotate(n=Count("id")).values_list("conversation_id", "n")
    small = [conversation_id for conversation_id, n in sizes if receipts_fan_out_to_all(n)]
    if not small:
        return []
    return list(
        active.filter(conversation_id__in=small)
        .order_by("conversation_id", "user_id")
        .only("conversation_id", "user_id", "delivered_seq", "read_seq")
    )


@dataclass
class ConversationSummary:
    """One row of the conversation list."""

    conversation: Conversation
    membership: Membership
    last_message: Message | None
    other_user: Any | None  # the peer of a direct chat
    member_count: int

    @property
    def unread_count(self) -> int:
        return max(0, self.conversation.last_seq - max(self.membership.read_seq, self.membership.joined_seq))


def conversation_list(*, user_id: int, limit: int = 100) -> list[ConversationSummary]:
    """The user's conversations, most recently active first, with last message and unread count.

    A fixed number of queries whatever the number of conversations.
    """
    memberships = list(
        Membership.objects.select_related("conversation")
        .filter(user_id=user_id, left_at__isnull=True)
        # NULLS LAST: PostgreSQL sorts NULL first when descending, which put every chat
        # without messages above all active ones.
        .order_by(F("conversation__last_message_at").desc(nulls_last=True), "-conversation_id")[:limit]
    )
    return summarize(memberships)


def summarize(memberships: list[Membership]) -> list[ConversationSummary]:
    """Load last messages, direct-chat peers and member counts for a list of memberships."""
    if not memberships:
        return []
    conversation_ids = [m.conversation_id for m in memberships]
    last_keys = [
        Q(conversation_id=m.conversation_id, seq=m.conversation.last_seq)
        for m in memberships
        if m.conversation.last_seq > m.joined_seq
    ]
    last_messages: dict[int, Message] = {}
    if last_keys:
        for message in Message.objects.filter(reduce(or_, last_keys)).prefetch_related("reactions", "attachments"):
            last_messages[message.conversation_id] = message

    counts = dict(
        Membership.objects.filter(conversation_id__in=conversation_ids, left_at__isnull=True)
        .values("conversation_id")
        .annotate(n=Count("id"))
        .values_list("conversation_id", "n")
    )
    direct_ids = [m.conversation_id for m in memberships if m.conversation.kind == Conversation.Kind.DIRECT]
    peers: dict[int, Any] = {}
    if direct_ids:
        viewer_id = memberships[0].user_id
        for other in (
            Membership.objects.select_related("user").filter(conversation_id__in=direct_ids).exclude(user_id=viewer_id)
        ):
            peers[other.conversation_id] = other.user

    return [
        ConversationSummary(
            conversation=m.conversation,
            membership=m,
            last_message=last_messages.get(m.conversation_id),
            other_user=peers.get(m.conversation_id),
            member_count=counts.get(m.conversation_id, 0),
        )
        for m in memberships
    ]


def members_of(*, membership: Membership) -> list[Membership]:
    """The active members of the caller's conversation, with their users."""
    return list(
        Membership.objects.select_related("user")
        .filter(conversation_id=membership.conversation_id, left_at__isnull=True)
        .order_by("joined_at", "id")
    )


def receipts_fan_out_to_all(member_count: int) -> bool:
    """Whether every member hears each receipt change (small chats) or only the reader's devices."""
    return member_count <= int(settings.RECEIPT_FANOUT_MAX_MEMBERS)


def message_info(*, membership: Membership, message: Message) -> list[dict[str, Any]]:
    """Per other member: whether their cursors passed the message (for its sender)."""
    return [
        {"user_id": m.user_id, "delivered": m.delivered_seq >= message.seq, "read": m.read_seq >= message.seq}
        for m in Membership.objects.filter(conversation_id=membership.conversation_id, left_at__isnull=True)
        .exclude(user_id=membership.user_id)
        .filter(joined_seq__lt=message.seq)
        .order_by("user_id")
        .only("user_id", "delivered_seq", "read_seq")
    ]
