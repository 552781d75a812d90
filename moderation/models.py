"""Blocks between users, reports of abuse, and the moderators' audit log.

The rules built on these tables live in ``moderation.services`` (writes) and
``moderation.selectors`` (reads and the send rule); docs/architecture.md, "Moderation".
"""

from __future__ import annotations

from typing import Any, ClassVar, NoReturn

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from conversations.models import Conversation, Message


class Block(models.Model):
    """``blocker`` blocked ``blocked``: no direct messages between them, no presence either way.

    A row per direction; blocking each other is two rows. Owned by the blocker (shard by user).
    """

    blocker = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    blocked = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints: ClassVar[list[Any]] = [
            models.UniqueConstraint(fields=["blocker", "blocked"], name="block_once_per_pair"),
            models.CheckConstraint(condition=~Q(blocker=F("blocked")), name="block_not_self"),
        ]
        indexes: ClassVar[list[Any]] = [
            # "Who blocked me?" for the send rule and presence, the other way round.
            models.Index(fields=["blocked", "blocker"], name="block_by_blocked"),
        ]

    def __str__(self) -> str:
        return f"{self.blocker_id} blocked {self.blocked_id}"


class Report(models.Model):
    """A user's report of a message or of another user, with a frozen snapshot.

    ``snapshot`` is written once, when the report is made: the reported message and the
    few messages before it as the reporter saw them. Later edits, deletions or hiding of
    the originals do not change it, so moderators judge what was reported.
    """

    class Reason(models.TextChoices):
        SPAM = "spam", "Spam or scam"
        HARASSMENT = "harassment", "Harassment or bullying"
        HATE = "hate", "Hate speech"
        VIOLENCE = "violence", "Violence or threats"
        SEXUAL = "sexual", "Sexual content"
        ILLEGAL = "illegal", "Illegal content"
        OTHER = "other", "Something else"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        ACTIONED = "actioned", "Actioned"
        DISMISSED = "dismissed", "Dismissed"

    reporter = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    reported_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="reports_against"
    )
    conversation = models.ForeignKey(Conversation, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Not enforced by the database: messages are partitioned (see conversations.models.Message).
    message = models.ForeignKey(
        Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_constraint=False
    )
    reason = models.CharField(max_length=16, choices=Reason.choices)
    details = models.TextField(blank=True)
    snapshot = models.JSONField(default=dict, editable=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolution = models.TextField(blank=True)

    class Meta:
        constraints: ClassVar[list[Any]] = [
            # Reporting the same message again returns the first report.
            models.UniqueConstraint(
                fields=["reporter", "message"], condition=Q(message__isnull=False), name="report_once_per_message"
            ),
        ]
        indexes: ClassVar[list[Any]] = [models.Index(fields=["status", "created_at"], name="report_queue")]
        # What the moderator role may do beyond viewing and resolving reports; checked by the
        # services, granted by the "moderator" group (migration 0002).
        permissions = (
            ("suspend_user", "Can suspend and ban users"),
            ("hide_message", "Can hide and restore messages"),
            ("freeze_conversation", "Can freeze groups and remove their members"),
        )

    def __str__(self) -> str:
        return f"Report {self.pk} ({self.get_status_display()})"


class AppendOnly(Exception):
    """Raised on any attempt to change or delete an audit log entry."""


class AuditLogQuerySet(models.QuerySet["AuditLog"]):
    def update(self, **kwargs: Any) -> NoReturn:
        raise AppendOnly("The audit log is append-only.")

    def delete(self) -> NoReturn:
        raise AppendOnly("The audit log is append-only.")


class AuditLog(models.Model):
    """One row per moderator action: who did what to which target, why and when.

    Append-only: the model refuses updates and deletes, the admin has no change or delete
    permission for anyone, and on PostgreSQL a trigger refuses UPDATE and DELETE too.
    """

    class Action(models.TextChoices):
        USER_SUSPENDED = "user_suspended", "Suspended a user"
        USER_UNSUSPENDED = "user_unsuspended", "Lifted a suspension"
        USER_BANNED = "user_banned", "Banned a user"
        USER_UNBANNED = "user_unbanned", "Lifted a ban"
        MESSAGE_HIDDEN = "message_hidden", "Hid a message"
        MESSAGE_RESTORED = "message_restored", "Restored a message"
        GROUP_FROZEN = "group_frozen", "Froze a group"
        GROUP_UNFROZEN = "group_unfrozen", "Unfroze a group"
        MEMBER_REMOVED = "member_removed", "Removed a group member"
        REPORT_ACTIONED = "report_actioned", "Marked a report actioned"
        REPORT_DISMISSED = "report_dismissed", "Dismissed a report"

    class Target(models.TextChoices):
        USER = "user", "User"
        MESSAGE = "message", "Message"
        CONVERSATION = "conversation", "Conversation"
        REPORT = "report", "Report"

    # PROTECT: a moderator with entries cannot be deleted (deactivate them instead), so
    # "who" is never lost.
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    action = models.CharField(max_length=32, choices=Action.choices)
    target_type = models.CharField(max_length=16, choices=Target.choices)
    target_id = models.BigIntegerField()
    # How the target looked when acted on (a username, "conversation 5, message #12").
    target_repr = models.CharField(max_length=200)
    reason = models.TextField()
    # Details of the action: {"until": ...}, {"report_id": ...}, {"user_id": ...}.
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects: ClassVar[AuditLogQuerySet] = AuditLogQuerySet.as_manager()  # type: ignore[assignment]  # a manager from our queryset

    class Meta:
        ordering: ClassVar[list[str]] = ["-created_at", "-id"]
        indexes: ClassVar[list[Any]] = [
            models.Index(fields=["target_type", "target_id"], name="audit_by_target"),
            models.Index(fields=["actor", "created_at"], name="audit_by_actor"),
            models.Index(fields=["action", "created_at"], name="audit_by_action"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.action} {self.target_type} {self.target_id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AppendOnly("The audit log is append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnly("The audit log is append-only.")
