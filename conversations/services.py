"""Writes of conversations: chats, members, messages, reactions and receipt cursors.

Every entry point (REST view, WebSocket frame, task) calls these functions, so the rules
live here once. Events leave only after commit (notifications.realtime). The delivery
semantics are described in docs/architecture.md.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import Case, F, When
from django.db.models.functions import Greatest
from django.utils import timezone

from accounts.models import User
from chat_project.errors import ApplicationError, Forbidden, InvalidInput, NotFound
from chat_project.sql import placeholders
from conversations import events, selectors
from conversations.models import Conversation, Membership, Message, Reaction
from conversations.selectors import (
    Members,
    MessageNotFound,
    access_members,
    access_membership,
    access_message,
    active_member_ids,
    receipts_fan_out_to_all,
)
from media import services as media_services
from media.models import Attachment
from moderation.selectors import blocks_among, check_not_frozen, check_send_allowed
from notifications import realtime
from notifications import services as push


class EditWindowClosed(ApplicationError):
    code = "edit_window_closed"
    status_code = 403
    default_detail = "Messages can be edited only shortly after sending."


class NotYourMessage(ApplicationError):
    code = "not_your_message"
    status_code = 403
    default_detail = "Only the sender can change this message."


class GroupFull(ApplicationError):
    code = "group_full"
    status_code = 409
    default_detail = "The group has reached its member limit."


class NotADirectPeer(NotFound):
    default_detail = "User not found."


# --- input checks ------------------------------------------------------------------------


def check_body(body: Any, *, allow_empty: bool = False) -> str:
    """A message body: a string of at most MESSAGE_MAX_CHARS characters, not blank."""
    if not isinstance(body, str):
        raise InvalidInput(fields={"body": ["Must be a string."]})
    if len(body) > settings.MESSAGE_MAX_CHARS:
        raise InvalidInput(fields={"body": [f"At most {settings.MESSAGE_MAX_CHARS} characters."]})
    if not allow_empty and not body.strip():
        raise InvalidInput(fields={"body": ["Must not be empty."]})
    return body


def check_client_msg_id(value: Any) -> str:
    """The sender's idempotency key: 1 to 64 printable characters."""
    if not isinstance(value, str) or not 1 <= len(value) <= 64 or not value.isprintable():
        raise InvalidInput(fields={"client_msg_id": ["A string of 1 to 64 printable characters."]})
    return value


def check_emoji(value: Any) -> str:
    """A reaction: one short emoji sequence ("" removes the reaction).

    Symbols only (with the joiners and modifiers emoji sequences use): no letters, digits,
    punctuation or spaces.
    """
    allowed = {"So", "Sk", "Mn", "Me", "Cf"}  # symbols, modifiers, variation selectors, ZWJ
    if (
        not isinstance(value, str)
        or len(value) > 16
        or (value and not any(unicodedata.category(ch) == "So" for ch in value))
        or any(unicodedata.category(ch) not in allowed for ch in value)
    ):
        raise InvalidInput(fields={"emoji": ["One emoji, or an empty string to remove."]})
    return value


def check_user_ids(value: Any, field: str = "user_ids") -> list[int]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise InvalidInput(fields={field: ["A list of user ids."]})
    return list(dict.fromkeys(value))


# --- sequence allocation ------------------------------------------------------------------


def _allocate(conversation_id: int, *, message: bool, at: datetime | None = None) -> tuple[int, int]:
    """Take the next version (and, for a new message sent ``at``, the next seq) of a conversation.

    The UPDATE locks the conversation row until commit, which serialises writers of one
    conversation: seq is gap-free because a failed insert rolls the allocation back.
    ``last_message_at`` never moves backwards, even when a writer that read the clock
    earlier got the lock later.
    """
    with connection.cursor() as cursor:
        if message:
            cursor.execute(
                "UPDATE conversations_conversation SET last_seq = last_seq + 1, version = version + 1,"
                " last_message_at = CASE WHEN last_message_at IS NULL OR last_message_at < %s THEN %s"
                " ELSE last_message_at END WHERE id = %s RETURNING last_seq, version",
                [at, at, conversation_id],
            )
        else:
            cursor.execute(
                "UPDATE conversations_conversation SET version = version + 1 WHERE id = %s RETURNING last_seq, version",
                [conversation_id],
            )
        row = cursor.fetchone()
    if row is None:
        raise NotFound("Conversation not found.")
    return int(row[0]), int(row[1])


def _post_system_message(
    conversation: Conversation, *, actor: User | None, meta: dict[str, Any], recipients: Iterable[int]
) -> Message:
    """Append a system message (membership change) to the stream; call inside a transaction.

    Like a send, the actor's own action counts as read (and delivered) for the actor.
    """
    now = timezone.now()
    seq, version = _allocate(conversation.pk, message=True, at=now)
    message = Message.objects.create(
        conversation=conversation,
        seq=seq,
        version=version,
        sender=actor,
        kind=Message.Kind.SYSTEM,
        meta=meta,
        created_at=now,
    )
    conversation.last_seq, conversation.version = seq, version
    if actor is not None:
        Membership.objects.filter(conversation=conversation, user=actor, left_at__isnull=True).update(
            read_seq=seq, delivered_seq=seq
        )
    realtime.send_on_commit(recipients, events.message_new(selectors.loaded(message)))
    return message


# --- conversations and members ---------------------------------------------------------------


def get_or_create_direct(*, user: User, other_user_id: Any) -> tuple[Conversation, bool]:
    """The one direct chat between two users, created on first use (also under races)."""
    if not isinstance(other_user_id, int) or isinstance(other_user_id, bool) or other_user_id == user.pk:
        raise NotADirectPeer()
    other = User.objects.filter(pk=other_user_id, is_active=True).first()
    if other is None:
        raise NotADirectPeer()
    low, high = sorted((user.pk, other.pk))
    key = f"{low}:{high}"
    existing = Conversation.objects.filter(direct_key=key).first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            conversation = Conversation.objects.create(kind=Conversation.Kind.DIRECT, direct_key=key, created_by=user)
            Membership.objects.bulk_create(
                [
                    Membership(conversation=conversation, user=user, role=Membership.Role.MEMBER),
                    Membership(conversation=conversation, user=other, role=Membership.Role.MEMBER),
                ]
            )
    except IntegrityError:  # the other side created it at the same moment
        return Conversation.objects.get(direct_key=key), False
    return conversation, True


def _existing_users(user_ids: list[int], field: str = "user_ids") -> list[User]:
    users = list(User.objects.filter(pk__in=user_ids, is_active=True))
    if len(users) != len(user_ids):
        found = {u.pk for u in users}
        missing = [u for u in user_ids if u not in found]
        raise InvalidInput(fields={field: [f"Unknown users: {missing}"]})
    return users


def create_group(*, creator: User, title: Any, member_ids: Any) -> Conversation:
    """A new group owned by its creator, with a system message naming the members."""
    if not isinstance(title, str) or not title.strip() or len(title) > 128:
        raise InvalidInput(fields={"title": ["A title of 1 to 128 characters."]})
    ids = [u for u in check_user_ids(member_ids, "member_ids") if u != creator.pk]
    if len(ids) + 1 > settings.GROUP_MAX_MEMBERS:
        raise GroupFull()
    members = _existing_users(ids, "member_ids")
    with transaction.atomic():
        conversation = Conversation.objects.create(
            kind=Conversation.Kind.GROUP, title=title.strip(), created_by=creator
        )
        Membership.objects.bulk_create(
            [Membership(conversation=conversation, user=creator, role=Membership.Role.OWNER)]
            + [Membership(conversation=conversation, user=u, role=Membership.Role.MEMBER) for u in members]
        )
        _post_system_message(
            conversation,
            actor=creator,
            meta={"event": "group_created", "title": conversation.title, "user_ids": [u.pk for u in members]},
            recipients=[creator.pk, *ids],
        )
    return conversation


def _lock_conversation(conversation_id: int) -> Conversation:
    return Conversation.objects.select_for_update(no_key=True).get(pk=conversation_id)


def _require_group_admin(membership: Membership) -> None:
    if membership.conversation.kind != Conversation.Kind.GROUP:
        raise Forbidden("Direct chats have no members to manage.")
    if not membership.is_admin:
        raise Forbidden("Only group admins can do this.")


def add_members(*, actor: User, conversation_id: Any, user_ids: Any) -> list[Membership]:
    """Add users to a group (admins only). They see the history from this point on."""
    ids = check_user_ids(user_ids)
    me = access_membership(user_id=actor.pk, conversation_id=conversation_id)
    _require_group_admin(me)
    users = _existing_users(ids)
    with transaction.atomic():
        conversation = _lock_conversation(me.conversation_id)
        rows = {m.user_id: m for m in Membership.objects.filter(conversation=conversation, user_id__in=ids)}
        newcomers = [u for u in users if u.pk not in rows or not rows[u.pk].is_active]
        if not newcomers:
            return [rows[u] for u in ids]
        current = Membership.objects.filter(conversation=conversation, left_at__isnull=True).count()
        if current + len(newcomers) > settings.GROUP_MAX_MEMBERS:
            raise GroupFull()
        joined_seq = conversation.last_seq
        added: list[Membership] = []
        for user in newcomers:
            row = rows.get(user.pk)
            if row is None:
                added.append(
                    Membership.objects.create(
                        conversation=conversation,
                        user=user,
                        joined_seq=joined_seq,
                        delivered_seq=joined_seq,
                        read_seq=joined_seq,
                    )
                )
            else:  # rejoining: a fresh start, old history stays hidden
                row.left_at, row.role, row.joined_seq = None, Membership.Role.MEMBER, joined_seq
                row.delivered_seq = row.read_seq = joined_seq
                row.save(update_fields=["left_at", "role", "joined_seq", "delivered_seq", "read_seq"])
                added.append(row)
        recipients = active_member_ids(conversation.pk)
        _post_system_message(
            conversation,
            actor=actor,
            meta={"event": "members_added", "user_ids": [u.pk for u in newcomers]},
            recipients=recipients,
        )
    return added


def remove_member(*, actor: User, conversation_id: Any, user_id: Any) -> None:
    """Remove a member (admins), or leave (anyone, for themselves).

    The removed member stops receiving at once and can no longer read the conversation.
    When the last owner leaves, the longest-standing admin (or member) becomes owner.
    """
    me = access_membership(user_id=actor.pk, conversation_id=conversation_id)
    if me.conversation.kind != Conversation.Kind.GROUP:
        raise Forbidden("You cannot leave a direct chat.")
    leaving = user_id == actor.pk
    with transaction.atomic():
        conversation = _lock_conversation(me.conversation_id)
        target = Membership.objects.filter(conversation=conversation, user_id=user_id, left_at__isnull=True).first()
        if target is None:
            raise NotFound("User is not a member.")
        if not leaving:
            _require_group_admin(me)
            if target.role == Membership.Role.OWNER and me.role != Membership.Role.OWNER:
                raise Forbidden("Only an owner can remove an owner.")
        event = "member_left" if leaving else "member_removed"
        _end_membership(conversation, target, actor=actor, meta={"event": event, "user_ids": [target.user_id]})


def _end_membership(
    conversation: Conversation, target: Membership, *, actor: User | None, meta: dict[str, Any]
) -> None:
    """Take a member out of a locked group: no more events or reads for them, an owner kept,
    the others told with a system message, the member told the conversation is gone."""
    recipients = active_member_ids(conversation.pk)
    target.left_at = timezone.now()
    target.save(update_fields=["left_at"])
    _hand_on_ownership(conversation)
    _post_system_message(
        conversation, actor=actor, meta=meta, recipients=[u for u in recipients if u != target.user_id]
    )
    realtime.send_on_commit([target.user_id], events.membership_removed(conversation_id=conversation.pk))


def _hand_on_ownership(conversation: Conversation) -> None:
    """Make sure a group with members has an owner: promote the longest-standing admin or member."""
    active = Membership.objects.filter(conversation=conversation, left_at__isnull=True)
    if active.filter(role=Membership.Role.OWNER).exists():
        return
    admins_first = Case(When(role=Membership.Role.ADMIN, then=0), default=1)
    heir = active.order_by(admins_first, "joined_at", "id").first()
    if heir is not None:
        heir.role = Membership.Role.OWNER
        heir.save(update_fields=["role"])


def set_member_role(*, actor: User, conversation_id: Any, user_id: Any, role: Any) -> Membership:
    """Change a member's role: owners may grant any role, admins may make admins."""
    if role not in Membership.Role.values:
        raise InvalidInput(fields={"role": [f"One of {Membership.Role.values}."]})
    me = access_membership(user_id=actor.pk, conversation_id=conversation_id)
    _require_group_admin(me)
    if me.role != Membership.Role.OWNER and role == Membership.Role.OWNER:
        raise Forbidden("Only an owner can make owners.")
    with transaction.atomic():
        conversation = _lock_conversation(me.conversation_id)
        target = Membership.objects.filter(conversation=conversation, user_id=user_id, left_at__isnull=True).first()
        if target is None:
            raise NotFound("User is not a member.")
        if target.role == Membership.Role.OWNER and me.role != Membership.Role.OWNER:
            raise Forbidden("Only an owner can change an owner's role.")
        if target.role == role:
            return target
        if (
            target.role == Membership.Role.OWNER
            and not Membership.objects.filter(
                conversation=conversation, left_at__isnull=True, role=Membership.Role.OWNER
            )
            .exclude(pk=target.pk)
            .exists()
        ):
            # Demoting the last owner made _hand_on_ownership pick an heir silently, often the
            # demoted owner again, while the reply and the system message said otherwise.
            # Ownership is handed on explicitly (make an owner, then step down) or by leaving.
            raise Forbidden("A group needs an owner: make another member owner first, or leave.")
        target.role = role
        target.save(update_fields=["role"])
        _hand_on_ownership(conversation)
        _post_system_message(
            conversation,
            actor=actor,
            meta={"event": "role_changed", "user_ids": [target.user_id], "role": role},
            recipients=active_member_ids(conversation.pk),
        )
    return target


# --- messages -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextSend:
    """One checked ``message.send`` of text, waiting for a group commit (see
    :func:`send_text_messages`)."""

    sender: User
    conversation_id: int
    client_msg_id: str
    body: str
    origin: str | None = None


@dataclass
class _NewMessage:
    members: Members
    client_msg_id: str
    body: str
    reply_to_id: int | None = None
    files: list[Attachment] = field(default_factory=list)
    origin: str | None = None


def _allocate_messages(counts: dict[int, int], at: datetime) -> dict[int, tuple[int, int]]:
    """Take ``counts[c]`` new seqs (and versions) in each conversation ``c``, for messages sent
    ``at``; return each conversation's new last seq and version.

    Like :func:`_allocate`, the row locks serialise writers of one conversation until commit.
    Rows are locked in id order, so two group commits that share conversations cannot deadlock.
    """
    if connection.vendor != "postgresql":  # the embedded default: one UPDATE per conversation
        allocated: dict[int, tuple[int, int]] = {}
        for conversation_id, count in sorted(counts.items()):
            for _ in range(count):
                allocated[conversation_id] = _allocate(conversation_id, message=True, at=at)
        return allocated
    ids = sorted(counts)
    with connection.cursor() as cursor:
        # NO KEY UPDATE, the lock the UPDATE itself takes: a plain FOR UPDATE would also block
        # the key-share locks that foreign-key checks of other transactions (push decisions
        # inserting rows that name a conversation) take at their commit, in any order.
        cursor.execute(
            "SELECT id FROM conversations_conversation WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE", [ids]
        )
        cursor.execute(
            "UPDATE conversations_conversation AS c SET last_seq = c.last_seq + n.count,"
            " version = c.version + n.count, last_message_at = GREATEST(c.last_message_at, %s)"
            " FROM unnest(%s::bigint[], %s::bigint[]) AS n(id, count) WHERE c.id = n.id"
            " RETURNING c.id, c.last_seq, c.version",
            [at, ids, [counts[i] for i in ids]],
        )
        return {int(cid): (int(seq), int(version)) for cid, seq, version in cursor.fetchall()}


def _advance_own_cursors(seqs: dict[int, int]) -> None:
    """Sending implies having read everything before it: move each sender's cursors (by
    membership id) to their newest message."""
    if connection.vendor != "postgresql":
        for membership_id, seq in seqs.items():
            Membership.objects.filter(pk=membership_id).update(read_seq=seq, delivered_seq=seq)
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE conversations_membership AS m SET read_seq = GREATEST(m.read_seq, s.seq),"
            " delivered_seq = GREATEST(m.delivered_seq, s.seq)"
            " FROM unnest(%s::bigint[], %s::bigint[]) AS s(id, seq) WHERE m.id = s.id",
            [list(seqs), list(seqs.values())],
        )


def _insert_messages(rows: list[Message]) -> list[Message]:
    """INSERT new text messages in one statement and set their ids.

    On PostgreSQL the rows travel as a few arrays through one fixed statement: Django's
    ``bulk_create`` spends more time building a large INSERT than the database spends running
    it (profiled on the send path).
    """
    if connection.vendor != "postgresql":
        return Message.objects.bulk_create(rows)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO conversations_message (conversation_id, seq, version, sender_id, client_msg_id, kind, body,"
            " reply_to_id, created_at, hidden_reason)"
            " SELECT c, s, v, u, m, 'text', b, r, %s, '' FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[],"
            " %s::bigint[], %s::text[], %s::text[], %s::bigint[]) AS t(c, s, v, u, m, b, r)"
            " RETURNING id, conversation_id, seq",
            [
                rows[0].created_at,
                [m.conversation_id for m in rows],
                [m.seq for m in rows],
                [m.version for m in rows],
                [m.sender_id for m in rows],
                [m.client_msg_id for m in rows],
                [m.body for m in rows],
                [m.reply_to_id for m in rows],
            ],
        )
        ids = {(cid, seq): pk for pk, cid, seq in cursor.fetchall()}
    for message in rows:
        message.pk = ids[message.conversation_id, message.seq]
        message._state.adding = False
    return rows


def _store_messages(new: list[_NewMessage]) -> list[Message]:
    """Write checked messages, in order, in the current transaction, and announce each after
    commit: one allocation, one INSERT, one cursor UPDATE and one outbox INSERT for them all.

    Raises IntegrityError when one of them is a duplicate that slipped past the caller's check
    (a concurrent retry): the caller's rollback then returns every seq taken here.
    """
    now = timezone.now()
    counts = Counter(n.members.me.conversation_id for n in new)
    last = _allocate_messages(counts, now)
    # Each conversation's new messages take the seqs (and versions) just below its new last.
    taken = {cid: (last[cid][0] - count, last[cid][1] - count) for cid, count in counts.items()}
    rows: list[Message] = []
    for n in new:
        cid = n.members.me.conversation_id
        seq, version = taken[cid]
        taken[cid] = (seq + 1, version + 1)
        rows.append(
            Message(
                conversation_id=cid,
                seq=seq + 1,
                version=version + 1,
                sender_id=n.members.me.user_id,
                client_msg_id=n.client_msg_id,
                body=n.body,
                reply_to_id=n.reply_to_id,
                created_at=now,
            )
        )
    messages = _insert_messages(rows)
    _advance_own_cursors({n.members.me.pk: m.seq for n, m in zip(new, messages, strict=True)})
    for n, message in zip(new, messages, strict=True):
        if n.files:
            media_services.attach(attachments=n.files, message_id=message.pk)
        selectors.loaded(message, attachments=n.files)
        realtime.send_on_commit(n.members.user_ids, events.message_new(message), origin=n.origin)
    push.notify_on_commit(messages=messages)  # offline members: outbox rows, one task after commit
    return messages


def send_message(
    *,
    sender: User,
    conversation_id: Any,
    client_msg_id: Any,
    body: Any,
    reply_to: Any = None,
    attachment_ids: Any = None,
    origin: str | None = None,
) -> tuple[Message, bool]:
    """Store a message and announce it after commit; return it and whether it is new.

    Idempotent: the same ``client_msg_id`` from the same sender returns the original
    message, also when both attempts race. ``origin`` is the sending socket, which gets
    an ack instead of ``message.new``.
    """
    client_msg_id = check_client_msg_id(client_msg_id)
    body = check_body(body if body is not None else "", allow_empty=bool(attachment_ids))
    members = access_members(user_id=sender.pk, conversation_id=conversation_id)
    conversation_id = members.me.conversation_id
    check_send_allowed(sender_id=sender.pk, members=members)  # frozen groups, blocked users
    if attachment_ids:
        # A retry must find its original before claiming files that the original took.
        existing = _original(conversation_id, sender.pk, client_msg_id)
        if existing is not None:
            return existing, False
    reply_to_id = None
    if reply_to is not None:
        reply_to_id = access_message(membership=members.me, message_id=reply_to).pk

    try:
        with transaction.atomic():
            files = (
                media_services.claim_for_message(uploader=sender, attachment_ids=attachment_ids)
                if attachment_ids is not None and attachment_ids != []
                else []
            )
            new = _NewMessage(members, client_msg_id, body, reply_to_id, files, origin)
            (message,) = _store_messages([new])
    except IntegrityError:
        # A retry (or a concurrent copy) of a message already stored: the unique index on
        # (conversation, sender, client_msg_id) refused it and the rollback returned its
        # seq, so the order stays gap-free. Answer with the original.
        return selectors.visible_messages_of(conversation_id).get(sender=sender, client_msg_id=client_msg_id), False
    return message, True


def _original(conversation_id: int, sender_id: int, client_msg_id: str) -> Message | None:
    return (
        selectors.visible_messages_of(conversation_id).filter(sender_id=sender_id, client_msg_id=client_msg_id).first()
    )


SendOutcome = tuple[Message, bool] | ApplicationError


def send_text_messages(sends: list[TextSend]) -> list[SendOutcome]:
    """Store many text messages in one transaction (a group commit); for each send, in order,
    the message and whether it is new, or the error that refused it.

    The WebSocket gateway collects the sends that arrive while the previous commit runs and
    stores them here together, each acked only after this commit: the same rules and answers
    as :func:`send_message`, for a few queries per batch instead of several per message.
    Bodies and client ids must already be checked (``check_body``, ``check_client_msg_id``).
    """
    outcomes: list[SendOutcome | None] = [None] * len(sends)
    found = selectors.access_members_many({(s.sender.pk, s.conversation_id) for s in sends})
    direct_users = {
        u for members in found.values() if members.kind == Conversation.Kind.DIRECT for u in members.user_ids
    }
    blocks = blocks_among(direct_users)
    stored = _already_stored(sends)
    new: list[_NewMessage] = []
    places: list[int] = []
    first_of: dict[tuple[int, int, str], int] = {}
    for i, send in enumerate(sends):
        key = (send.conversation_id, send.sender.pk, send.client_msg_id)
        members = found.get((send.sender.pk, send.conversation_id))
        try:
            if members is None:
                raise selectors.ConversationNotFound()
            check_send_allowed(sender_id=send.sender.pk, members=members, blocks=blocks)
        except ApplicationError as refusal:
            outcomes[i] = refusal
            continue
        if key in stored or key in first_of:
            continue  # a retry: answered with its original below
        first_of[key] = i
        new.append(_NewMessage(members, send.client_msg_id, send.body, origin=send.origin))
        places.append(i)
    if new:
        try:
            with transaction.atomic():
                for i, message in zip(places, _store_messages(new), strict=True):
                    outcomes[i] = (message, True)
        except (IntegrityError, OperationalError):
            # A retry raced its original from another socket, or the batch lost a deadlock
            # (all rolled back): store them one by one instead, where each duplicate finds its
            # original and each send holds one conversation's lock only.
            for i in places:
                outcomes[i] = _send_one(sends[i])
    for i, send in enumerate(sends):
        if outcomes[i] is not None:
            continue
        # A retry of a message stored before, or earlier in this batch.
        first = outcomes[first_of.get((send.conversation_id, send.sender.pk, send.client_msg_id), i)]
        if isinstance(first, tuple):
            outcomes[i] = (first[0], False)
        else:
            original = _original(send.conversation_id, send.sender.pk, send.client_msg_id)
            outcomes[i] = (original, False) if original is not None else selectors.ConversationNotFound()
    return [outcome for outcome in outcomes if outcome is not None]


def _already_stored(sends: list[TextSend]) -> set[tuple[int, int, str]]:
    """Which (conversation, sender, client id) of these sends are stored already: one probe."""
    conversation_ids = sorted({s.conversation_id for s in sends})
    client_msg_ids = sorted({s.client_msg_id for s in sends})
    with connection.cursor() as cursor:
        cursor.execute(
            # Only placeholders are formatted into the statement.
            "SELECT conversation_id, sender_id, client_msg_id FROM conversations_message"  # noqa: S608
            f" WHERE conversation_id IN ({placeholders(conversation_ids)})"
            f" AND client_msg_id IN ({placeholders(client_msg_ids)})",
            [*conversation_ids, *client_msg_ids],
        )
        return {(int(cid), int(sender_id), str(client_msg_id)) for cid, sender_id, client_msg_id in cursor.fetchall()}


def _send_one(send: TextSend) -> SendOutcome:
    try:
        return send_message(
            sender=send.sender,
            conversation_id=send.conversation_id,
            client_msg_id=send.client_msg_id,
            body=send.body,
            origin=send.origin,
        )
    except ApplicationError as refusal:
        return refusal


def _save_fields(message: Message, fields: list[str]) -> None:
    """``message.save(update_fields=...)`` that names the conversation too, so PostgreSQL
    touches one partition of messages instead of probing all of them by id."""
    Message.objects.filter(conversation_id=message.conversation_id, pk=message.pk).update(
        **{name: getattr(message, name) for name in fields}
    )


def _change_message(membership: Membership, message: Message, fields: list[str]) -> Message:
    """Save a change to a message under a new version and announce it to every member."""
    with transaction.atomic():
        _, message.version = _allocate(membership.conversation_id, message=False)
        _save_fields(message, [*fields, "version"])
        realtime.send_on_commit(active_member_ids(membership.conversation_id), events.message_updated(message))
    return message


def _own_live_message(user: User, conversation_id: Any, message_id: Any) -> tuple[Membership, Message]:
    membership = access_membership(user_id=user.pk, conversation_id=conversation_id)
    message = access_message(membership=membership, message_id=message_id)
    if message.deleted_at is not None or message.hidden_at is not None or message.kind != Message.Kind.TEXT:
        raise MessageNotFound()
    if message.sender_id != user.pk:
        raise NotYourMessage()
    return membership, message


def edit_message(*, user: User, conversation_id: Any, message_id: Any, body: Any) -> Message:
    """Change a message's text: its sender, within MESSAGE_EDIT_WINDOW_SECONDS."""
    body = check_body(body)
    membership, message = _own_live_message(user, conversation_id, message_id)
    check_not_frozen(membership.conversation)
    if timezone.now() - message.created_at > timedelta(seconds=settings.MESSAGE_EDIT_WINDOW_SECONDS):
        raise EditWindowClosed()
    if message.body == body:
        return message
    message.body, message.edited_at = body, timezone.now()
    return _change_message(membership, message, ["body", "edited_at"])


def delete_message(*, user: User, conversation_id: Any, message_id: Any) -> Message:
    """Delete a message for everyone: a tombstone stays in the order, its text is gone."""
    membership, message = _own_live_message(user, conversation_id, message_id)
    message.body, message.deleted_at = "", timezone.now()
    with transaction.atomic():
        Reaction.objects.filter(message=message).delete()
        return _change_message(membership, message, ["body", "deleted_at"])


def set_reaction(*, user: User, conversation_id: Any, message_id: Any, emoji: Any) -> Message:
    """Set (or with "" remove) the user's one reaction on a message."""
    emoji = check_emoji(emoji)
    membership = access_membership(user_id=user.pk, conversation_id=conversation_id)
    message = access_message(membership=membership, message_id=message_id)
    if message.deleted_at is not None or message.kind != Message.Kind.TEXT:
        raise MessageNotFound()
    check_not_frozen(membership.conversation)
    with transaction.atomic():
        if emoji:
            Reaction.objects.update_or_create(message=message, user=user, defaults={"emoji": emoji})
        elif not Reaction.objects.filter(message=message, user=user).delete()[0]:
            return message
        message = access_message(membership=membership, message_id=message.pk)  # reload reactions
        return _change_message(membership, message, [])


# --- receipts ----------------------------------------------------------------------------------


class ReceiptStatus:
    DELIVERED = "delivered"
    READ = "read"
    ALL = (DELIVERED, READ)


def mark_cursor(*, user: User, conversation_id: Any, status: Any, seq: Any) -> Membership:
    """Move the user's delivered or read cursor forward (never back); tell who needs to know.

    Reading implies delivery. In chats of up to RECEIPT_FANOUT_MAX_MEMBERS members every
    member hears the change (ticks); in larger groups only the reader's own devices do
    (unread counts), and senders ask for a message's info instead.
    """
    if status not in ReceiptStatus.ALL:
        raise InvalidInput(fields={"status": ["'delivered' or 'read'."]})
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise InvalidInput(fields={"seq": ["A non-negative integer."]})
    membership = access_membership(user_id=user.pk, conversation_id=conversation_id)
    seq = min(seq, membership.conversation.last_seq)
    rows = Membership.objects.filter(pk=membership.pk)
    if status == ReceiptStatus.READ:
        changed = rows.filter(read_seq__lt=seq).update(read_seq=seq, delivered_seq=Greatest(F("delivered_seq"), seq))
        if changed:
            membership.read_seq, membership.delivered_seq = seq, max(membership.delivered_seq, seq)
    else:
        changed = rows.filter(delivered_seq__lt=seq).update(delivered_seq=seq)
        if changed:
            membership.delivered_seq = seq
    if changed:
        member_ids = active_member_ids(membership.conversation_id)
        recipients = member_ids if receipts_fan_out_to_all(len(member_ids)) else [user.pk]
        realtime.send_on_commit(recipients, events.receipt_update(membership))
        if status == ReceiptStatus.READ:
            push.clear_on_commit(membership=membership)  # notifications shown on other devices
    return membership


def announce_message_change(*, message_id: int) -> None:
    """Something about a message changed outside its row (an attachment got processed):
    give it a new version and tell its members."""
    message = Message.objects.filter(pk=message_id).first()  # by id alone: rare (a processed file)
    if message is None:
        return
    with transaction.atomic():
        _, message.version = _allocate(message.conversation_id, message=False)
        _save_fields(message, ["version"])
        message = selectors.visible_messages_of(message.conversation_id).get(pk=message.pk)
        realtime.send_on_commit(active_member_ids(message.conversation_id), events.message_updated(message))


# --- moderation (called by moderation.services, which checks the moderator and audits) ---------


def set_message_hidden(*, message_id: int, hidden: bool, reason: str = "") -> tuple[Message, bool]:
    """Hide a text message (members see a tombstone, as for a deletion) or restore it.

    Either way the message takes a new version and members hear ``message.updated``.
    Returns the message and whether anything changed.
    """
    message = Message.objects.filter(pk=message_id, kind=Message.Kind.TEXT).first()
    if message is None:
        raise MessageNotFound()
    if (message.hidden_at is not None) == hidden:
        return message, False
    with transaction.atomic():
        _, version = _allocate(message.conversation_id, message=False)  # locks the conversation first
        message.hidden_at, message.hidden_reason = (timezone.now(), reason) if hidden else (None, "")
        message.version = version
        _save_fields(message, ["hidden_at", "hidden_reason", "version"])
        message = selectors.visible_messages_of(message.conversation_id).get(pk=message.pk)
        realtime.send_on_commit(active_member_ids(message.conversation_id), events.message_updated(message))
    return message, True


def _lock_group(conversation_id: int) -> Conversation:
    conversation = Conversation.objects.select_for_update(no_key=True).filter(pk=conversation_id).first()
    if conversation is None:
        raise selectors.ConversationNotFound()
    if conversation.kind != Conversation.Kind.GROUP:
        raise Forbidden("Only groups can be frozen or have members removed by a moderator.")
    return conversation


def set_group_frozen(*, conversation_id: int, frozen: bool) -> bool:
    """Freeze a group (sends are refused with ``frozen``) or unfreeze it; returns whether it changed.

    Members see why in a system message (``group_frozen`` / ``group_unfrozen``, no sender).
    """
    with transaction.atomic():
        conversation = _lock_group(conversation_id)
        if (conversation.frozen_at is not None) == frozen:
            return False
        conversation.frozen_at = timezone.now() if frozen else None
        conversation.save(update_fields=["frozen_at"])
        _post_system_message(
            conversation,
            actor=None,
            meta={"event": "group_frozen" if frozen else "group_unfrozen", "by_moderator": True},
            recipients=active_member_ids(conversation.pk),
        )
    return True


def remove_member_by_moderator(*, conversation_id: int, user_id: int) -> Membership:
    """A moderator removes a member from a group: as an admin's removal, posted without a sender."""
    with transaction.atomic():
        conversation = _lock_group(conversation_id)
        target = Membership.objects.filter(conversation=conversation, user_id=user_id, left_at__isnull=True).first()
        if target is None:
            raise NotFound("User is not a member.")
        meta = {"event": "member_removed", "user_ids": [target.user_id], "by_moderator": True}
        _end_membership(conversation, target, actor=None, meta=meta)
    return target
