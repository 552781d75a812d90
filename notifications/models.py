"""Push notifications: where to push (subscriptions), what users want (preferences), what is
still to do (the outbox) and what was decided for every message and device (deliveries).

The flow and its guarantees are described in docs/architecture.md ("Push notifications")
and docs/push.md.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.conf import settings
from django.db import models
from django.db.models import Q


class PushSubscription(models.Model):
    """Where to reach one device when it is offline: a Web Push subscription or an app token.

    One per device (registering again replaces it), and one device per endpoint or token: a
    browser endpoint that a second account registers moves to that account's device.
    """

    class Kind(models.TextChoices):
        WEBPUSH = "webpush", "Web Push"
        FCM = "fcm", "Firebase Cloud Messaging"
        APNS = "apns", "Apple Push Notification service"

    device = models.OneToOneField("accounts.Device", on_delete=models.CASCADE, related_name="push_subscription")
    # Denormalised from the device: "shard by user", and the API lists a user's rows directly.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    # Web Push (RFC 8030 endpoint, RFC 8291 keys, both base64url as the browser reports them).
    endpoint = models.URLField(max_length=2048, blank=True)
    p256dh = models.CharField(max_length=128, blank=True)
    auth = models.CharField(max_length=64, blank=True)
    # FCM registration token or APNs device token.
    token = models.CharField(max_length=512, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_success_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints: ClassVar[list[Any]] = [
            models.UniqueConstraint(
                fields=["endpoint"], condition=Q(kind="webpush"), name="push_subscription_endpoint_unique"
            ),
            models.UniqueConstraint(
                fields=["kind", "token"], condition=~Q(kind="webpush"), name="push_subscription_token_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} for device {self.device_id}"

    @property
    def target(self) -> str:
        """The endpoint or token, shortened for display."""
        value = self.endpoint if self.kind == self.Kind.WEBPUSH else self.token
        return value if len(value) <= 60 else f"{value[:57]}..."


class PushPreference(models.Model):
    """A user's push settings; a user without a row has the defaults."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, primary_key=True, on_delete=models.CASCADE, related_name="push_preference"
    )
    enabled = models.BooleanField(default=True, help_text="Push notifications at all.")
    previews = models.BooleanField(default=True, help_text='Show message text, or only "New message".')
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"push preferences of {self.user_id}"


class PushOutbox(models.Model):
    """Push work that is committed but not yet decided.

    Written in the same transaction as the message (or the read) it is about, so that it
    exists exactly when that commit happened. The task that decides deletes it; rows the
    broker never received are found again by the periodic sweep.
    """

    class Kind(models.TextChoices):
        MESSAGE = "message", "New message"
        READ = "read", "Read (clear other devices)"

    kind = models.CharField(max_length=8, choices=Kind.choices)
    conversation = models.ForeignKey("conversations.Conversation", on_delete=models.CASCADE, related_name="+")
    # Not enforced by the database: messages are partitioned (see conversations.models.Message).
    message = models.ForeignKey(
        "conversations.Message", null=True, blank=True, on_delete=models.CASCADE, related_name="+", db_constraint=False
    )
    # For a read: the reader and how far they read.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    seq = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # Set by the sweep: how often it re-enqueued this row, and when it may do so again.
    sweeps = models.PositiveSmallIntegerField(default=0)
    next_sweep_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "push outbox"

    def __str__(self) -> str:
        return f"{self.kind} in {self.conversation_id} ({self.pk})"


class PushDelivery(models.Model):
    """The decision for one message (or one read) on one device, and what became of it.

    Unique per (message, device) for notifications: the guard that nobody is pushed twice
    for one message on one device, and the trace an operator (admin) or the user (API) reads
    to learn why a device got a notification or none.
    """

    class Kind(models.TextChoices):
        NOTIFY = "notify", "Notification"
        CLEAR = "clear", "Clear (read elsewhere)"

    class Status(models.TextChoices):
        COMPUTED = "computed", "Computed, waiting to be sent"
        SENT = "sent", "Sent, waiting for the push service"
        RETRYING = "retrying", "Push service failed; will retry"
        ACCEPTED = "accepted", "Accepted by the push service"
        FAILED = "failed", "Failed"
        DEAD_LETTERED = "dead_lettered", "Dead-lettered (retries exhausted)"
        SUPPRESSED = "suppressed", "Suppressed"

    class Reason(models.TextChoices):
        NONE = "", "-"
        ONLINE = "online", "The user was online"
        MUTED = "muted", "The conversation is muted"
        COALESCED = "coalesced", "Coalesced into another push"
        NO_SUBSCRIPTION = "no_subscription", "The device has no push subscription"
        DISABLED = "disabled", "The user turned push notifications off"
        READ = "read", "Already read"
        DELETED = "deleted", "The message was deleted"
        NOT_MEMBER = "not_member", "No longer a member"
        GONE = "gone", "The push service says the subscription is gone"
        REJECTED = "rejected", "The push service rejected the request"
        NOT_CONFIGURED = "not_configured", "This kind of push is not configured on the server"

    PENDING: ClassVar[tuple[str, ...]] = (Status.COMPUTED, Status.RETRYING)
    FINAL: ClassVar[tuple[str, ...]] = (Status.ACCEPTED, Status.FAILED, Status.DEAD_LETTERED, Status.SUPPRESSED)

    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.NOTIFY)
    # The message that caused the decision (notifications); NULL for clears.
    # Not enforced by the database: messages are partitioned (see conversations.models.Message).
    message = models.ForeignKey(
        "conversations.Message", null=True, blank=True, on_delete=models.CASCADE, related_name="+", db_constraint=False
    )
    conversation = models.ForeignKey("conversations.Conversation", on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    device = models.ForeignKey("accounts.Device", on_delete=models.CASCADE, related_name="+")
    subscription = models.ForeignKey(
        PushSubscription, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries"
    )
    # The seq the push describes: the message's at first; a coalesced push describes the
    # latest unread message when it is sent. For clears: read up to here.
    seq = models.BigIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices)
    reason = models.CharField(max_length=16, choices=Reason.choices, blank=True, default="")
    coalesced_into = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    preview = models.BooleanField(default=False, help_text="Whether the payload carried the message text.")
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # While set and in the future, one worker owns the send (status "sent").
    lease_until = models.DateTimeField(null=True, blank=True)
    response_status = models.SmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    accepted_at = models.DateTimeField(null=True, blank=True)
    cleared_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "push deliveries"
        constraints: ClassVar[list[Any]] = [
            models.UniqueConstraint(
                fields=["message", "device"], condition=Q(kind="notify"), name="push_delivery_once_per_device"
            ),
            models.UniqueConstraint(
                fields=["device", "conversation", "seq"], condition=Q(kind="clear"), name="push_clear_once"
            ),
        ]
        indexes: ClassVar[list[Any]] = [
            # Coalescing: this device's recent pushes for this conversation.
            models.Index(fields=["device", "conversation", "created_at"], name="push_delivery_coalesce"),
            # The user's trace over the API, newest first.
            models.Index(fields=["user", "created_at"], name="push_delivery_by_user"),
            # The sweep: work that is due but may have lost its task.
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status__in=["computed", "retrying", "sent"]),
                name="push_delivery_due",
            ),
            # A read asks whether any device shows a notification for the conversation.
            models.Index(
                fields=["user", "conversation"],
                condition=Q(kind="notify", status="accepted", cleared_at__isnull=True),
                name="push_delivery_uncleared",
            ),
            models.Index(fields=["created_at"], name="push_delivery_created"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.message_id or self.seq} to device {self.device_id}: {self.status}"


class DeadLetterManager(models.Manager["DeadLetter"]):
    def get_queryset(self) -> models.QuerySet[DeadLetter]:
        return super().get_queryset().filter(status=PushDelivery.Status.DEAD_LETTERED)


class DeadLetter(PushDelivery):
    """Deliveries whose retries ran out: what an operator looks at (and may retry)."""

    objects: ClassVar[DeadLetterManager] = DeadLetterManager()  # the same rows, filtered

    class Meta:
        proxy = True
        verbose_name = "dead letter"
