"""Conversations, memberships, messages and reactions.

Two counters per conversation carry the delivery semantics (docs/architecture.md):

- ``last_seq`` numbers messages: gap-free, one total order that every member sees.
- ``version`` numbers *changes*: every new message, edit, deletion and reaction takes the
  next version, and each message remembers the version of its last change. A device's
  sync cursor is the highest version it has seen; "everything after my cursor" is then one
  indexed range query that returns each changed message in its current state.

On PostgreSQL messages are hash-partitioned by conversation (migration 0004; docs/operations.md,
"Partitioned messages"). Every unique index on messages therefore includes ``conversation_id``;
foreign keys that point at a message are not enforced by the database (see :class:`Message`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from django.conf import settings
from django.db import models
from django.db.models import Q

if TYPE_CHECKING:
    from django.db.models.fields.related_descriptors import RelatedManager

    from media.models import Attachment


class Conversation(models.Model):
    class Kind(models.TextChoices):
        DIRECT = "direct", "Direct"
        GROUP = "group", "Group"

    kind = models.CharField(max_length=8, choices=Kind.choices)
    title = models.CharField(max_length=128, blank=True)
    # "<smaller user id>:<larger user id>" for direct chats: one conversation per pair.
    direct_key = models.CharField(max_length=64, null=True, blank=True, unique=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    last_seq = models.BigIntegerField(default=0)
    version = models.BigIntegerField(default=0)
    last_message_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # A moderator froze the group: sends are refused (moderation.selectors.check_send_allowed).
    frozen_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.title or f"{self.kind} {self.pk}"


class Membership(models.Model):
    """A user in a conversation, with the user's delivered/read cursors.

    Cursors only move forward. ``joined_seq`` is the last seq before the user joined: a
    member sees messages after it. A member who left or was removed keeps the row with
    ``left_at`` set and can no longer read the conversation.
    """

    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        ADMIN = "admin", "Admin"
        MEMBER = "member", "Member"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=8, choices=Role.choices, default=Role.MEMBER)
    joined_at = models.DateTimeField(auto_now_add=True)
    joined_seq = models.BigIntegerField(default=0)
    left_at = models.DateTimeField(null=True, blank=True)
    delivered_seq = models.BigIntegerField(default=0)
    read_seq = models.BigIntegerField(default=0)
    muted_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints: ClassVar[list[Any]] = [
            models.UniqueConstraint(fields=["conversation", "user"], name="membership_conversation_user_unique"),
        ]
        indexes: ClassVar[list[Any]] = [
            # The conversation list (by user) and fan-out (by conversation), active rows only.
            models.Index(
                fields=["user", "conversation"], condition=Q(left_at__isnull=True), name="membership_active_by_user"
            ),
            models.Index(
                fields=["conversation", "user"], condition=Q(left_at__isnull=True), name="membership_active_by_conv"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.conversation_id} ({self.role})"

    @property
    def is_active(self) -> bool:
        return self.left_at is None

    @property
    def is_admin(self) -> bool:
        return self.role in (self.Role.OWNER, self.Role.ADMIN)


class Message(models.Model):
    """One message of a conversation.

    On PostgreSQL the table is partitioned by ``conversation_id`` and its database primary key is
    ``(id, conversation_id)``; ``id`` alone stays unique (one sequence numbers every partition)
    and stays Django's primary key. Look a message up with its conversation when it is known
    (``filter(conversation_id=..., pk=...)``): the planner then reads one partition's index
    instead of all of them.

    Every foreign key to a message (reactions, replies, attachments, reports, push rows) is
    declared with ``db_constraint=False``: with no unique index on ``id`` alone there is nothing
    for a database FOREIGN KEY to reference. Django still applies ``on_delete`` (CASCADE,
    SET_NULL) itself when a message is deleted through the ORM, as it always did (the database
    constraints never had ON DELETE actions); what is lost is only the database refusing an id
    of a message that does not exist, and every writer takes the id from a message it has just
    read or created.
    """

    class Kind(models.TextChoices):
        TEXT = "text", "Text"
        SYSTEM = "system", "System"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    seq = models.BigIntegerField()
    version = models.BigIntegerField()
    sender = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    # NULL for system messages, which no client sends; the unique index skips them.
    client_msg_id = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.TEXT)
    body = models.TextField(blank=True)
    # System messages describe what happened: {"event": "member_added", "user_ids": [...]}.
    meta = models.JSONField(null=True, blank=True)
    # Not enforced by the database, like every reference to a message (see the docstring).
    reply_to = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_constraint=False
    )
    created_at = models.DateTimeField()
    edited_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    # Hidden by a moderator: members see a tombstone, as for a deletion, until it is restored.
    hidden_at = models.DateTimeField(null=True, blank=True)
    hidden_reason = models.CharField(max_length=1000, blank=True)

    if TYPE_CHECKING:
        attachments: RelatedManager[Attachment]

    class Meta:
        constraints: ClassVar[list[Any]] = [
            models.UniqueConstraint(fields=["conversation", "seq"], name="message_conversation_seq_unique"),
            models.UniqueConstraint(
                fields=["conversation", "sender", "client_msg_id"],
                condition=Q(client_msg_id__isnull=False),
                name="message_idempotent_send",
            ),
        ]
        indexes: ClassVar[list[Any]] = [
            # Sync: everything in a conversation changed after a device's cursor.
            models.Index(fields=["conversation", "version"], name="message_conversation_version"),
        ]

    def __str__(self) -> str:
        return f"{self.conversation_id}#{self.seq}"


class Reaction(models.Model):
    """One emoji per user per message."""

    # Not enforced by the database: messages are partitioned (see Message).
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="reactions", db_constraint=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    emoji = models.CharField(max_length=32)
    created_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints: ClassVar[list[Any]] = [
            models.UniqueConstraint(fields=["message", "user"], name="reaction_one_per_user"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.emoji} on {self.message_id}"
