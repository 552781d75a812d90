"""Writes of push notifications: the hooks of a send and a read, the decisions, the sends,
the sweep, and what users change (subscriptions, preferences, mute).

The flow (docs/architecture.md, "Push notifications"; payloads in docs/push.md):

1. ``notify_on_commit`` runs inside the send transaction: one INSERT into the outbox. After
   commit the outbox ids are published to RabbitMQ in the background (notifications.publisher).
2. ``process_outbox`` (a task) decides, for every active device of every other member, to
   push or not and why, writes one ``PushDelivery`` per (message, device) (the unique index
   is the "never twice" guard), deletes the outbox row, and after commit enqueues the sends.
3. ``send_delivery`` (a task) re-reads the state (still offline? still unread?), claims the
   delivery with a lease, sends one request to the push service and records the answer;
   transient failures come back as a delay to retry after, up to PUSH_MAX_ATTEMPTS.
4. ``sweep`` (beat) re-enqueues outbox rows and deliveries whose task never ran.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Max, Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from accounts.models import Device, User
from accounts.selectors import in_good_standing
from chat_project.errors import ApplicationError, InvalidInput, NotFound
from conversations import presence
from conversations.models import Conversation, Membership, Message
from conversations.selectors import access_membership
from notifications import publisher, selectors
from notifications.backends import Outcome, Push, Result, backend_for
from notifications.backends.webpush import endpoint_allowed
from notifications.models import PushDelivery, PushOutbox, PushPreference, PushSubscription
from notifications.vapid import b64url_decode

logger = logging.getLogger(__name__)

Status = PushDelivery.Status
Reason = PushDelivery.Reason
# "Muted forever" is stored as the end of time, so that one column answers "muted now?".
MUTED_FOREVER = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
# Advisory-lock namespace: decisions for one conversation are taken one at a time.
_DECIDE_LOCK = 0x7075


class NoDevice(ApplicationError):
    code = "no_device"
    status_code = 409
    default_detail = "This session has no device; log in again to register for push notifications."


class PushKindUnavailable(ApplicationError):
    code = "push_unavailable"
    status_code = 409
    default_detail = "This server is not set up for this kind of push notification."


class SubscriptionNotFound(NotFound):
    default_detail = "Push subscription not found."


def collapse_key(conversation_id: int) -> str:
    """The per-conversation key that push services and devices collapse on (Web Push
    ``Topic``: at most 32 base64url characters)."""
    return f"conversation-{conversation_id}"


# --- the hooks: called by conversations.services inside their transactions ------------------


def notify_on_commit(*, messages: list[Message]) -> None:
    """Record that these messages need push decisions; enqueue them once the send commits.

    Call inside the send's transaction, after the message rows exist. One INSERT however
    many messages a group commit holds; the broker is never touched on this thread, so a
    broker outage cannot fail or slow a send.
    """
    if connection.vendor != "postgresql":
        rows = PushOutbox.objects.bulk_create(
            PushOutbox(kind=PushOutbox.Kind.MESSAGE, conversation_id=m.conversation_id, message=m, seq=m.seq)
            for m in messages
        )
        ids = [row.pk for row in rows]
    else:  # a fixed statement with arrays: cheaper to build than bulk_create's (the send path)
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO notifications_pushoutbox (kind, conversation_id, message_id, seq, created_at, sweeps)"
                " SELECT %s, c, m, s, now(), 0 FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS t(c, m, s)"
                " RETURNING id",
                [
                    PushOutbox.Kind.MESSAGE.value,
                    [m.conversation_id for m in messages],
                    [m.pk for m in messages],
                    [m.seq for m in messages],
                ],
            )
            ids = [pk for (pk,) in cursor.fetchall()]
    transaction.on_commit(lambda: publisher.submit_outbox(ids))


def _shown_notifications(user_id: int, conversation_id: int, read_seq: int) -> QuerySet[PushDelivery]:
    """Notifications of the conversation that the user's devices show (accepted by the push
    service, not cleared) and that a read up to ``read_seq`` covers."""
    return PushDelivery.objects.filter(
        kind=PushDelivery.Kind.NOTIFY,
        user_id=user_id,
        conversation_id=conversation_id,
        status=Status.ACCEPTED,
        cleared_at__isnull=True,
        seq__lte=read_seq,
    )


def clear_on_commit(*, membership: Membership) -> None:
    """After a read: if some device of the reader shows a notification of this conversation
    (one that the read covers), schedule a silent "clear" to those devices.

    One indexed probe on the hot path; the INSERT happens only when there is something to clear.
    """
    shown = _shown_notifications(membership.user_id, membership.conversation_id, membership.read_seq)
    if not shown.exists():
        return
    row = PushOutbox.objects.create(
        kind=PushOutbox.Kind.READ,
        conversation_id=membership.conversation_id,
        user_id=membership.user_id,
        seq=membership.read_seq,
    )
    transaction.on_commit(lambda: publisher.submit_outbox([row.pk]))


# --- decisions ------------------------------------------------------------------------------------


def process_outbox(*, outbox_id: int) -> None:
    """Decide the pushes of one outbox row, once: safe to run twice or concurrently."""
    process_outboxes([outbox_id])


def process_outboxes(outbox_ids: list[int]) -> None:
    """Decide the pushes of these outbox rows in one transaction, each once: safe to run twice
    or concurrently (rows another worker holds right now are left to it).

    The reads every decision needs (messages, members, devices, subscriptions, preferences,
    presence) are made once for all the rows, so a batch of a group commit's messages costs
    a few queries more than one message, not a few queries per message.
    """
    with transaction.atomic():
        rows = list(PushOutbox.objects.select_for_update(skip_locked=True).filter(pk__in=outbox_ids).order_by("id"))
        if not rows:  # done already, or another worker holds them right now
            return
        _lock_conversations({row.conversation_id for row in rows})
        due = _decide_messages([row for row in rows if row.kind == PushOutbox.Kind.MESSAGE])
        for row in rows:
            if row.kind != PushOutbox.Kind.MESSAGE:
                due += _decide_clear(row)
        PushOutbox.objects.filter(pk__in=[row.pk for row in rows]).delete()
        transaction.on_commit(lambda: enqueue_sends(due))


def _lock_conversations(conversation_ids: set[int]) -> None:
    """Serialise decisions per conversation, so that coalescing sees the previous decision.

    One statement for all; the locks are taken in conversation id order (unnest keeps the
    array's order), so two batches cannot deadlock.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s, c) FROM unnest(%s::integer[]) AS c",
                [_DECIDE_LOCK, sorted({cid & 0x7FFFFFFF for cid in conversation_ids})],
            )


@dataclass(frozen=True)
class _Member:
    muted_until: datetime | None
    read_seq: int
    joined_seq: int


def _decide_messages(rows: list[PushOutbox]) -> list[tuple[int, datetime | None]]:
    """One PushDelivery per (message, device of another member): suppressed and why, coalesced
    into a pending push, or computed (due now or when the coalescing window closes)."""
    message_ids = [row.message_id for row in rows if row.message_id is not None]
    if not message_ids:
        return []
    conversation_ids = {row.conversation_id for row in rows}
    # With their conversations, the lookup reads only their partitions of messages.
    messages = list(
        Message.objects.filter(conversation_id__in=conversation_ids, pk__in=message_ids).order_by("seq", "id")
    )
    now = timezone.now()
    members: dict[int, dict[int, _Member]] = {}
    for conversation_id, user_id, muted_until, read_seq, joined_seq in Membership.objects.filter(
        conversation_id__in=conversation_ids, left_at__isnull=True
    ).values_list("conversation_id", "user_id", "muted_until", "read_seq", "joined_seq"):
        members.setdefault(conversation_id, {})[user_id] = _Member(muted_until, read_seq, joined_seq)
    user_ids = {u for in_conversation in members.values() for u in in_conversation}
    devices = list(
        Device.objects.filter(user_id__in=user_ids, revoked_at__isnull=True, user__is_active=True)
        .filter(in_good_standing("user__"))  # no pushes to suspended or banned accounts
        .order_by("id")
        .values_list("pk", "user_id")
    )
    if not devices:
        return []
    subscriptions = dict(
        PushSubscription.objects.filter(device_id__in=[d for d, _ in devices]).values_list("device_id", "pk")
    )
    preferences = {p.user_id: p for p in PushPreference.objects.filter(user_id__in=user_ids)}

    def static_reason(message: Message, device_id: int, member_id: int) -> str:
        member = members[message.conversation_id][member_id]
        preference = preferences.get(member_id)
        if device_id not in subscriptions:
            return Reason.NO_SUBSCRIPTION
        if preference is not None and not preference.enabled:
            return Reason.DISABLED
        if member.muted_until is not None and member.muted_until > now:
            return Reason.MUTED
        if message.deleted_at is not None or message.hidden_at is not None:
            return Reason.DELETED  # gone for everyone: never push its text
        if member.read_seq >= message.seq:
            return Reason.READ
        return Reason.NONE

    reasons: dict[Message, dict[tuple[int, int], str]] = {}
    for message in messages:
        others = members.get(message.conversation_id, {})
        reasons[message] = {
            (device_id, user_id): static_reason(message, device_id, user_id)
            for device_id, user_id in devices
            if user_id in others and user_id != message.sender_id and others[user_id].joined_seq < message.seq
        }
    online = presence.online_now(
        sorted({u for decided in reasons.values() for (_, u), reason in decided.items() if not reason})
    )
    suppressed: list[PushDelivery] = []
    for message, decided in reasons.items():
        for (device_id, user_id), reason in decided.items():
            if not reason and online.get(user_id):
                decided[device_id, user_id] = Reason.ONLINE
        candidates = [d for (d, _), reason in decided.items() if not reason]
        if not candidates:  # nothing to send: written together below
            suppressed += [_delivery(message, d, u, subscriptions, reason) for (d, u), reason in decided.items()]
            continue
        # Written now, so that the next message of the conversation coalesces into these.
        pending, recent = _coalescing_state(message.conversation_id, candidates, now)
        deliveries = []
        for (device_id, user_id), reason in decided.items():
            delivery = _delivery(message, device_id, user_id, subscriptions, reason)
            if delivery.reason:  # suppressed, and why
                pass
            elif device_id in pending:  # a push not sent yet will carry this message too
                delivery.reason, delivery.coalesced_into_id = Reason.COALESCED, pending[device_id]
            else:  # push now, or at the end of the window that a recent push opened
                delivery.status, delivery.reason = Status.COMPUTED, Reason.NONE
                delivery.next_attempt_at = max(now, recent[device_id]) if device_id in recent else now
            deliveries.append(delivery)
        PushDelivery.objects.bulk_create(deliveries, ignore_conflicts=True)
    PushDelivery.objects.bulk_create(suppressed, ignore_conflicts=True)
    return list(
        PushDelivery.objects.filter(
            kind=PushDelivery.Kind.NOTIFY, message__in=messages, status=Status.COMPUTED
        ).values_list("pk", "next_attempt_at")
    )


def _delivery(
    message: Message, device_id: int, user_id: int, subscriptions: dict[int, int], reason: str
) -> PushDelivery:
    return PushDelivery(
        kind=PushDelivery.Kind.NOTIFY,
        message=message,
        conversation_id=message.conversation_id,
        user_id=user_id,
        device_id=device_id,
        subscription_id=subscriptions.get(device_id),
        seq=message.seq,
        status=Status.SUPPRESSED,
        reason=reason,
    )


def _coalescing_state(
    conversation_id: int, device_ids: list[int], now: datetime
) -> tuple[dict[int, int], dict[int, datetime]]:
    """Per device: a push of this conversation not sent yet (its id), and when the window
    opened by the last push sent within PUSH_COALESCE_SECONDS closes."""
    if not device_ids:
        return {}, {}
    ours = PushDelivery.objects.filter(
        kind=PushDelivery.Kind.NOTIFY, conversation_id=conversation_id, device_id__in=device_ids
    )
    pending = dict(ours.filter(status__in=PushDelivery.PENDING).order_by("-id").values_list("device_id", "pk"))
    window = timedelta(seconds=settings.PUSH_COALESCE_SECONDS)
    recent: dict[int, datetime] = {}
    if window:
        last_sent = (
            ours.filter(status__in=(Status.SENT, Status.ACCEPTED), sent_at__gt=now - window)
            .values("device_id")
            .annotate(last=Max("sent_at"))
            .values_list("device_id", "last")
        )
        recent = {device_id: last + window for device_id, last in last_sent}
    return pending, recent


def _decide_clear(row: PushOutbox) -> list[tuple[int, datetime | None]]:
    assert row.user_id is not None  # noqa: S101  (read rows always name the reader)
    now = timezone.now()
    current = Membership.objects.filter(conversation_id=row.conversation_id, user_id=row.user_id)
    read_seq = max([row.seq, *current.values_list("read_seq", flat=True)])
    shown = _shown_notifications(row.user_id, row.conversation_id, read_seq)
    device_ids = set(shown.values_list("device_id", flat=True))
    shown.update(cleared_at=now)
    subscriptions = dict(
        PushSubscription.objects.filter(device_id__in=device_ids, device__revoked_at__isnull=True).values_list(
            "device_id", "pk"
        )
    )
    PushDelivery.objects.bulk_create(
        [
            PushDelivery(
                kind=PushDelivery.Kind.CLEAR,
                conversation_id=row.conversation_id,
                user_id=row.user_id,
                device_id=device_id,
                subscription_id=subscription_id,
                seq=read_seq,
                status=Status.COMPUTED,
                next_attempt_at=now,
            )
            for device_id, subscription_id in sorted(subscriptions.items())
        ],
        ignore_conflicts=True,
    )
    return list(
        PushDelivery.objects.filter(
            kind=PushDelivery.Kind.CLEAR,
            conversation_id=row.conversation_id,
            user_id=row.user_id,
            seq=read_seq,
            status=Status.COMPUTED,
        ).values_list("pk", "next_attempt_at")
    )


def enqueue_sends(due: list[tuple[int, datetime | None]]) -> None:
    """Enqueue the send tasks of decided deliveries (in the worker, after commit).

    Delays are at most PUSH_COALESCE_SECONDS, well below RabbitMQ's consumer timeout. A
    failure leaves the deliveries due in PostgreSQL, where the sweep finds them.
    """
    from notifications.tasks import send_push_task

    now = timezone.now()
    for delivery_id, when in due:
        countdown = max(0.0, (when - now).total_seconds()) if when else 0.0
        try:
            send_push_task.apply_async((delivery_id,), countdown=countdown)
        except Exception as exc:  # broker failure: the sweep re-enqueues due deliveries
            logger.warning("push: could not enqueue delivery %s (%s); the sweep will", delivery_id, exc)
            return


# --- sending -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Built:
    push: Push
    seq: int
    preview: bool


def lease_seconds() -> float:
    """How long a claimed send is owned: past any request's connect plus read timeout."""
    return float(settings.PUSH_HTTP_TIMEOUT_SECONDS) * 2 + 2


def _claimable(now: datetime) -> Q:
    return Q(status__in=PushDelivery.PENDING) | Q(status=Status.SENT, lease_until__lte=now)


def send_delivery(*, delivery_id: int) -> float | None:
    """Send one decided push, or suppress it if the state changed; safe to run twice.

    Returns None when the delivery is settled (or owned by another run), else the seconds
    after which to run again: a push-service failure to retry, a send that is not due yet,
    or a lease held by a worker that may have died (its claim expires, then we take over).
    """
    delivery = PushDelivery.objects.select_related("subscription").filter(pk=delivery_id).first()
    if delivery is None or delivery.status in PushDelivery.FINAL:
        return None
    now = timezone.now()
    if delivery.status == Status.SENT and delivery.lease_until and delivery.lease_until > now:
        return (delivery.lease_until - now).total_seconds() + 0.1
    if delivery.status in PushDelivery.PENDING and delivery.next_attempt_at and delivery.next_attempt_at > now:
        return (delivery.next_attempt_at - now).total_seconds()
    subscription = delivery.subscription
    if subscription is None:
        _settle(delivery.pk, _claimable(now), status=Status.SUPPRESSED, reason=Reason.NO_SUBSCRIPTION)
        return None
    backend = backend_for(subscription.kind)
    if backend is None or not backend.configured():
        _settle(delivery.pk, _claimable(now), status=Status.FAILED, reason=Reason.NOT_CONFIGURED)
        return None
    # Claim first, then read what to say: a message that a decision coalesced into this push
    # while it was pending committed before that decision, so it is in what we read now.
    lease = now + timedelta(seconds=lease_seconds())
    claimed = (
        PushDelivery.objects.filter(pk=delivery.pk)
        .filter(_claimable(now))
        .update(
            status=Status.SENT,
            lease_until=lease,
            next_attempt_at=lease,
            attempts=F("attempts") + 1,
            sent_at=now,
        )
    )
    if not claimed:
        return None  # another run owns it now
    ours = Q(status=Status.SENT, lease_until=lease)
    built = _build_notification(delivery) if delivery.kind == PushDelivery.Kind.NOTIFY else _build_clear(delivery)
    if isinstance(built, str):
        _settle(delivery.pk, ours, status=Status.SUPPRESSED, reason=built, attempts=F("attempts") - 1, sent_at=None)
        return None
    PushDelivery.objects.filter(pk=delivery.pk).filter(ours).update(seq=built.seq, preview=built.preview)
    delivery.seq = built.seq
    result = backend.send(subscription, built.push)
    return _record(delivery, subscription, lease, result, attempts=delivery.attempts + 1)


def _settle(delivery_id: int, condition: Q, **fields: Any) -> bool:
    fields.setdefault("lease_until", None)
    fields.setdefault("next_attempt_at", None)
    return bool(PushDelivery.objects.filter(pk=delivery_id).filter(condition).update(**fields))


def retry_delay(attempts: int, retry_after: float | None) -> float:
    """Exponential backoff with a little jitter, at least the push service's Retry-After."""
    backoff = float(settings.PUSH_RETRY_BASE_SECONDS) * 2.0 ** max(0, attempts - 1)
    backoff *= 1 + random.random() / 10  # noqa: S311  (jitter, not cryptography)
    return float(min(max(backoff, retry_after or 0.0), float(settings.PUSH_RETRY_MAX_SECONDS)))


def _record(
    delivery: PushDelivery, subscription: PushSubscription, lease: datetime, result: Result, *, attempts: int
) -> float | None:
    """Store what the push service answered; only while our claim is still the current one."""
    ours = Q(status=Status.SENT, lease_until=lease)
    now = timezone.now()
    common: dict[str, Any] = {"response_status": result.status, "error": result.detail[:255]}
    if result.outcome == Outcome.ACCEPTED:
        if _settle(delivery.pk, ours, status=Status.ACCEPTED, accepted_at=now, **{**common, "error": ""}):
            PushSubscription.objects.filter(pk=subscription.pk).update(last_success_at=now)
            if delivery.kind == PushDelivery.Kind.NOTIFY:
                _clear_if_read_meanwhile(delivery)
        return None
    if result.outcome == Outcome.GONE:
        _settle(delivery.pk, ours, status=Status.FAILED, reason=Reason.GONE, **common)
        PushSubscription.objects.filter(pk=subscription.pk).delete()
        logger.info("push: subscription %s is gone (%s); removed", subscription.pk, result.status)
        return None
    if result.outcome == Outcome.REJECTED:
        _settle(delivery.pk, ours, status=Status.FAILED, reason=Reason.REJECTED, **common)
        logger.warning("push: delivery %s rejected (%s %s)", delivery.pk, result.status, result.detail)
        return None
    if attempts >= settings.PUSH_MAX_ATTEMPTS:
        _settle(delivery.pk, ours, status=Status.DEAD_LETTERED, **common)
        logger.warning("push: delivery %s dead-lettered after %s attempts (%s)", delivery.pk, attempts, result.detail)
        return None
    delay = retry_delay(attempts, result.retry_after)
    again = now + timedelta(seconds=delay)
    if not _settle(delivery.pk, ours, status=Status.RETRYING, **{**common, "next_attempt_at": again}):
        return None
    return delay


def _clear_if_read_meanwhile(delivery: PushDelivery) -> None:
    """A push accepted after the user read the conversation elsewhere would linger: clear it."""
    membership = Membership.objects.filter(conversation_id=delivery.conversation_id, user_id=delivery.user_id).first()
    if membership is not None and membership.read_seq >= delivery.seq:
        with transaction.atomic():
            clear_on_commit(membership=membership)


def _build_notification(delivery: PushDelivery) -> _Built | str:
    """The notification as of now, or the reason not to send it any more.

    A push describes the conversation's newest unread message (it may stand for several:
    coalescing), with the unread count of the conversation and the badge over all of them.
    """
    membership = (
        Membership.objects.select_related("conversation")
        .filter(conversation_id=delivery.conversation_id, user_id=delivery.user_id, left_at__isnull=True)
        .first()
    )
    if membership is None:
        return Reason.NOT_MEMBER
    preference = selectors.preferences_of(delivery.user_id)
    if not preference.enabled:
        return Reason.DISABLED
    if membership.muted_until is not None and membership.muted_until > timezone.now():
        return Reason.MUTED
    latest = (
        Message.objects.select_related("sender")
        .filter(
            conversation_id=delivery.conversation_id,
            seq__gt=membership.read_seq,
            kind=Message.Kind.TEXT,
            deleted_at__isnull=True,
            hidden_at__isnull=True,
        )
        .exclude(sender_id=delivery.user_id)
        .order_by("-seq")
        .first()
    )
    if latest is None:
        own_deleted = (
            Message.objects.filter(conversation_id=delivery.conversation_id, pk=delivery.message_id or 0)
            .filter(Q(deleted_at__isnull=False) | Q(hidden_at__isnull=False))
            .exists()
        )
        return Reason.DELETED if own_deleted else Reason.READ
    if presence.online_now([delivery.user_id]).get(delivery.user_id):
        return Reason.ONLINE
    conversation = membership.conversation
    sender_name = latest.sender.name if latest.sender else ""
    text = _preview(latest) if preference.previews else "New message"
    direct = conversation.kind == Conversation.Kind.DIRECT
    data = {
        "v": 1,
        "type": "message",
        "conversation_id": conversation.pk,
        "message_id": latest.pk,
        "seq": latest.seq,
        "tag": collapse_key(conversation.pk),
        "title": sender_name if direct else conversation.title,
        "body": text if direct or not preference.previews else f"{sender_name}: {text}",
        "sender_name": sender_name,
        "preview": preference.previews,
        "unread": max(0, conversation.last_seq - membership.read_seq),
        "badge": selectors.total_unread(delivery.user_id),
    }
    push = Push("notify", data, collapse_key(conversation.pk), urgent=True, ttl=settings.PUSH_TTL_SECONDS)
    return _Built(push, latest.seq, preference.previews)


def _preview(message: Message) -> str:
    text = " ".join(message.body.split())
    if not text:
        return "Attachment"
    limit = settings.PUSH_PREVIEW_CHARS
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def _build_clear(delivery: PushDelivery) -> _Built:
    data = {
        "v": 1,
        "type": "clear",
        "conversation_id": delivery.conversation_id,
        "read_seq": delivery.seq,
        "tag": collapse_key(delivery.conversation_id),
        "badge": selectors.total_unread(delivery.user_id),
    }
    push = Push("clear", data, collapse_key(delivery.conversation_id), urgent=False, ttl=settings.PUSH_TTL_SECONDS)
    return _Built(push, delivery.seq, False)


# --- the sweep and clean-up (beat) -----------------------------------------------------------------


def sweep(*, batch: int = 500) -> dict[str, int]:
    """Re-enqueue what committed but never reached (or never finished on) a worker: outbox
    rows older than PUSH_OUTBOX_GRACE_SECONDS, and deliveries that are overdue by as much.

    Duplicates are harmless (every task is idempotent); each row is retried with growing
    spacing so that a long outage does not flood the broker when it returns.
    """
    from notifications.tasks import process_outbox_task, send_push_task

    now = timezone.now()
    grace = timedelta(seconds=settings.PUSH_OUTBOX_GRACE_SECONDS)
    spacing = max(float(settings.PUSH_OUTBOX_GRACE_SECONDS), float(settings.PUSH_SWEEP_SECONDS))
    rows = list(
        PushOutbox.objects.filter(created_at__lte=now - grace)
        .filter(Q(next_sweep_at__isnull=True) | Q(next_sweep_at__lte=now))
        .order_by("id")
        .values_list("pk", "sweeps")[:batch]
    )
    for outbox_id, sweeps in rows:
        process_outbox_task.apply_async((outbox_id,))  # raises if the broker is still down
        PushOutbox.objects.filter(pk=outbox_id).update(
            sweeps=F("sweeps") + 1, next_sweep_at=now + timedelta(seconds=spacing * 2 ** min(sweeps, 6))
        )
    overdue = list(
        PushDelivery.objects.filter(
            status__in=(Status.COMPUTED, Status.RETRYING, Status.SENT), next_attempt_at__lte=now - grace
        )
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:batch]
    )
    for delivery_id in overdue:
        send_push_task.apply_async((delivery_id,))
        PushDelivery.objects.filter(pk=delivery_id, next_attempt_at__lte=now - grace).update(next_attempt_at=now)
    if rows or overdue:
        logger.info("push: sweep re-enqueued %s outbox rows and %s deliveries", len(rows), len(overdue))
    return {"outbox": len(rows), "deliveries": len(overdue)}


def purge_old(*, batch: int = 5000) -> int:
    """Forget decisions older than PUSH_DELIVERY_RETENTION_DAYS and subscriptions of
    logged-out devices."""
    PushSubscription.objects.filter(device__revoked_at__isnull=False).delete()
    cutoff = timezone.now() - timedelta(days=settings.PUSH_DELIVERY_RETENTION_DAYS)
    ids = list(PushDelivery.objects.filter(created_at__lt=cutoff).values_list("pk", flat=True)[:batch])
    PushDelivery.objects.filter(pk__in=ids).delete()
    return len(ids)


def retry_dead_letters(*, delivery_ids: list[int]) -> int:
    """Operator action: give dead-lettered deliveries a fresh set of attempts, now."""
    now = timezone.now()
    ids = list(
        PushDelivery.objects.filter(pk__in=delivery_ids, status=Status.DEAD_LETTERED).values_list("pk", flat=True)
    )
    PushDelivery.objects.filter(pk__in=ids).update(status=Status.RETRYING, attempts=0, next_attempt_at=now)
    transaction.on_commit(lambda: enqueue_sends([(pk, now) for pk in ids]))
    return len(ids)


# --- what users change ----------------------------------------------------------------------------

_TOKEN = re.compile(r"^[A-Za-z0-9_:.\-]{8,512}\Z")


def _check_key(value: Any, field: str, size: int) -> str:
    if isinstance(value, str):
        try:
            if len(b64url_decode(value)) == size:
                return value
        except ValueError:
            pass
    raise InvalidInput(fields={f"keys.{field}": [f"The subscription's {field} key, base64url ({size} bytes)."]})


def check_subscription(*, kind: Any, endpoint: Any, keys: Any, token: Any) -> dict[str, str]:
    """Validate what a device sends to register; return the fields to store."""
    if kind not in PushSubscription.Kind.values:
        raise InvalidInput(fields={"kind": [f"One of {PushSubscription.Kind.values}."]})
    backend = backend_for(kind)
    if backend is None or not backend.configured():
        raise PushKindUnavailable()
    if kind == PushSubscription.Kind.WEBPUSH:
        if not isinstance(endpoint, str) or len(endpoint) > 2048 or not endpoint_allowed(endpoint):
            raise InvalidInput(fields={"endpoint": ["The endpoint of a known push service (https)."]})
        if not isinstance(keys, dict):
            raise InvalidInput(fields={"keys": ['{"p256dh": ..., "auth": ...} from the browser\'s subscription.']})
        p256dh = _check_key(keys.get("p256dh"), "p256dh", 65)
        if b64url_decode(p256dh)[0] != 4:
            raise InvalidInput(fields={"keys.p256dh": ["An uncompressed P-256 point."]})
        return {"endpoint": endpoint, "p256dh": p256dh, "auth": _check_key(keys.get("auth"), "auth", 16), "token": ""}
    if not isinstance(token, str) or not _TOKEN.match(token):
        raise InvalidInput(fields={"token": ["The app's push token."]})
    return {"endpoint": "", "p256dh": "", "auth": "", "token": token}


def register_subscription(
    *, device: Device, kind: Any, endpoint: Any = None, keys: Any = None, token: Any = None
) -> tuple[PushSubscription, bool]:
    """Attach a push subscription to the caller's device (replacing the device's previous
    one); return it and whether it is new. An endpoint or token is one device's: if another
    device (another account in the same browser) had it, it moves here."""
    fields = check_subscription(kind=kind, endpoint=endpoint, keys=keys, token=token)
    with transaction.atomic():
        same_target = (
            PushSubscription.objects.filter(kind=kind, endpoint=fields["endpoint"])
            if kind == PushSubscription.Kind.WEBPUSH
            else PushSubscription.objects.filter(kind=kind, token=fields["token"])
        )
        same_target.exclude(device=device).delete()
        existing = PushSubscription.objects.select_for_update().filter(device=device).first()
        if existing is None:
            return PushSubscription.objects.create(device=device, user_id=device.user_id, kind=kind, **fields), True
        existing.kind = kind
        for name, value in fields.items():
            setattr(existing, name, value)
        existing.save(update_fields=["kind", *fields])
        return existing, False


def delete_subscription(*, user: User, subscription_id: Any) -> None:
    """Remove one of the user's subscriptions (of any of their devices)."""
    try:
        deleted, _ = PushSubscription.objects.filter(pk=int(subscription_id), user=user).delete()
    except (TypeError, ValueError):
        deleted = 0
    if not deleted:
        raise SubscriptionNotFound()


def update_preferences(*, user: User, enabled: bool | None = None, previews: bool | None = None) -> PushPreference:
    preference = selectors.preferences_of(user.pk)
    changed = [name for name, value in (("enabled", enabled), ("previews", previews)) if value is not None]
    if enabled is not None:
        preference.enabled = enabled
    if previews is not None:
        preference.previews = previews
    if preference._state.adding:
        preference.save()
    elif changed:
        preference.save(update_fields=[*changed, "updated_at"])
    return preference


def mute_conversation(*, user: User, conversation_id: Any, until: Any = None, forever: Any = False) -> Membership:
    """Mute the user's pushes of a conversation until a time, or forever; unmute with neither.

    ``until`` is an ISO 8601 time with a time zone, in the future.
    """
    if not isinstance(forever, bool):
        raise InvalidInput(fields={"forever": ["true or false."]})
    muted_until: datetime | None = None
    if forever:
        muted_until = MUTED_FOREVER
    elif until is not None:
        parsed = parse_datetime(until) if isinstance(until, str) else None
        if parsed is None or parsed.tzinfo is None:
            raise InvalidInput(fields={"until": ["An ISO 8601 time with a time zone."]})
        if parsed <= timezone.now():
            raise InvalidInput(fields={"until": ["A time in the future."]})
        muted_until = parsed
    membership = access_membership(user_id=user.pk, conversation_id=conversation_id)
    membership.muted_until = muted_until
    membership.save(update_fields=["muted_until"])
    return membership
