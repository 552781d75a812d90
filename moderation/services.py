"""Writes of moderation: what users do (block, report) and what moderators do (act, resolve).

Every moderator action has the same shape, so none can skip a step: check the actor's
permission and the reason, lock and change the target (through the owning app's service for
messages and groups), write one :class:`AuditLog` row, and, when the action was taken from
a report, mark that report actioned, all in one transaction. Events (``message.updated``,
closing sockets) leave after commit. See docs/architecture.md, "Moderation".
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import User
from chat_project.errors import Forbidden, InvalidInput, NotFound
from conversations import services as conversation_services
from conversations.models import Conversation, Membership, Message
from conversations.selectors import access_membership, access_message
from moderation import selectors
from moderation.models import AuditLog, Block, Report
from notifications import realtime

# The close code of every socket of a user who was just suspended or banned (docs/protocol.md).
CLOSE_ACCOUNT_SUSPENDED = 4423

REASON_MAX_CHARS = 1000
DETAILS_MAX_CHARS = 1000

SUSPEND_USERS = "moderation.suspend_user"
HIDE_MESSAGES = "moderation.hide_message"
FREEZE_GROUPS = "moderation.freeze_conversation"
RESOLVE_REPORTS = "moderation.change_report"


class UserNotFound(NotFound):
    default_detail = "User not found."


class ReportNotFound(NotFound):
    default_detail = "Report not found."


def _as_id(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidInput(fields={field: ["An id."]})
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(fields={field: ["An id."]}) from None


def _active_user(user_id: Any, field: str = "user_id") -> User:
    user = User.objects.filter(pk=_as_id(user_id, field), is_active=True).first()
    if user is None:
        raise UserNotFound()
    return user


# --- users: blocks --------------------------------------------------------------------------


def block_user(*, user: User, blocked_id: Any) -> tuple[Block, bool]:
    """Block another user: no direct messages between the two, no presence either way.

    Idempotent (returns the block and whether it is new). After commit both users' open
    sockets stop watching each other's presence.
    """
    other = _active_user(blocked_id)
    if other.pk == user.pk:
        raise InvalidInput(fields={"user_id": ["You cannot block yourself."]})
    with transaction.atomic():
        block, created = Block.objects.get_or_create(blocker=user, blocked=other)
        if created:
            transaction.on_commit(lambda: _hide_presence_between(user.pk, other.pk))
    return block, created


def _hide_presence_between(a: int, b: int) -> None:
    realtime.hide_presence(user_id=a, other_user_id=b)
    realtime.hide_presence(user_id=b, other_user_id=a)


def unblock_user(*, user: User, blocked_id: Any) -> bool:
    """Lift a block (idempotent); returns whether there was one. Presence shows again on the
    next ``presence.subscribe``; direct messages go through again at once."""
    deleted, _ = Block.objects.filter(blocker=user, blocked_id=_as_id(blocked_id, "user_id")).delete()
    return bool(deleted)


# --- users: reports -------------------------------------------------------------------------


def _check_text(value: Any, field: str, *, limit: int, required: bool) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str) or len(value) > limit:
        raise InvalidInput(fields={field: [f"Text of at most {limit} characters."]})
    if required and not value.strip():
        raise InvalidInput(fields={field: ["Say why: the audit log keeps it."]})
    return value.strip()


def _check_reason_choice(value: Any) -> str:
    if value not in Report.Reason.values:
        raise InvalidInput(fields={"reason": [f"One of {Report.Reason.values}."]})
    return str(value)


def _user_snapshot(user: User | None) -> dict[str, Any] | None:
    if user is None:
        return None
    return {"id": user.pk, "username": user.username, "display_name": user.display_name}


def _message_snapshot(message: Message) -> dict[str, Any]:
    """A message as it is now, for moderators: hidden messages keep their text here."""
    return {
        "id": message.pk,
        "seq": message.seq,
        "sender": _user_snapshot(message.sender),
        "kind": message.kind,
        "body": message.body,
        "meta": message.meta,
        "reply_to": message.reply_to_id,
        "created_at": message.created_at.isoformat(),
        "edited_at": message.edited_at.isoformat() if message.edited_at else None,
        "deleted": message.deleted_at is not None,
        "hidden": message.hidden_at is not None,
        "attachments": [
            {"id": a.pk, "filename": a.filename, "content_type": a.content_type, "size": a.size}
            for a in message.attachments.all()
        ],
    }


def _snapshot(
    *, membership: Membership | None, messages: list[Message], reported: Message | None, user: User | None
) -> dict[str, Any]:
    conversation: Conversation | None = membership.conversation if membership else None
    return {
        "taken_at": timezone.now().isoformat(),
        "conversation": (
            {"id": conversation.pk, "kind": conversation.kind, "title": conversation.title} if conversation else None
        ),
        "reported_message_id": reported.pk if reported else None,
        "reported_user": _user_snapshot(user),
        "messages": [_message_snapshot(m) for m in messages],
    }


def report_abuse(
    *,
    reporter: User,
    reason: Any,
    details: Any = "",
    conversation_id: Any = None,
    message_id: Any = None,
    user_id: Any = None,
) -> tuple[Report, bool]:
    """Report a message (``conversation_id`` + ``message_id``) or a user (``user_id``, and
    optionally the ``conversation_id`` where it happened).

    The report keeps a snapshot of the reported message and the messages before it that the
    reporter could see, as they are now. Reporting the same message twice returns the first
    report (and ``False``).
    """
    reason = _check_reason_choice(reason)
    details = _check_text(details, "details", limit=DETAILS_MAX_CHARS, required=False)
    membership = None
    if conversation_id is not None:
        membership = access_membership(user_id=reporter.pk, conversation_id=conversation_id)

    if message_id is not None:
        if membership is None:
            raise InvalidInput(fields={"conversation_id": ["Give the conversation of the message."]})
        message = access_message(membership=membership, message_id=message_id)
        if message.kind != Message.Kind.TEXT:
            raise InvalidInput(fields={"message_id": ["Only messages people sent can be reported."]})
        if message.sender_id == reporter.pk:
            raise InvalidInput(fields={"message_id": ["You cannot report your own message."]})
        existing = Report.objects.filter(reporter=reporter, message=message).first()
        if existing is not None:
            return existing, False
        target = message.sender
        context = selectors.report_context(membership=membership, message=message)
    elif user_id is not None:
        target = _active_user(user_id)
        if target.pk == reporter.pk:
            raise InvalidInput(fields={"user_id": ["You cannot report yourself."]})
        message = None
        context = selectors.recent_context(membership=membership) if membership else []
    else:
        raise InvalidInput(fields={"message_id": ["Report a message (with its conversation_id) or a user_id."]})

    snapshot = _snapshot(membership=membership, messages=context, reported=message, user=target)
    try:
        with transaction.atomic():
            report = Report.objects.create(
                reporter=reporter,
                reported_user=target,
                conversation=membership.conversation if membership else None,
                message=message,
                reason=reason,
                details=details,
                snapshot=snapshot,
            )
    except IntegrityError:  # the same report, sent twice at once
        return Report.objects.get(reporter=reporter, message=message), False
    return report, True


# --- moderators -------------------------------------------------------------------------------


def _require(actor: User, permission: str) -> None:
    """Only active staff with the permission (the "moderator" group, or a superuser) may act."""
    if not (actor.is_active and actor.is_staff and actor.has_perm(permission)):
        raise Forbidden("You do not have permission to do this.")


def _audit(
    actor: User, action: str, target_type: str, target_id: int, target_repr: str, reason: str, **data: Any
) -> AuditLog:
    return AuditLog.objects.create(
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=target_id,
        target_repr=target_repr[:200],
        reason=reason,
        data={k: v for k, v in data.items() if v is not None},
    )


def _action_from_report(report_id: int | None, *, actor: User, resolution: str) -> None:
    """Mark the report an action was taken from as actioned (if it is still open)."""
    if report_id is None:
        return
    report = Report.objects.select_for_update().filter(pk=report_id).first()
    if report is None:
        raise ReportNotFound()
    if report.status == Report.Status.OPEN:
        report.status, report.resolved_by, report.resolved_at = Report.Status.ACTIONED, actor, timezone.now()
        report.resolution = resolution
        report.save(update_fields=["status", "resolved_by", "resolved_at", "resolution"])


def _moderated_user(actor: User, user_id: Any) -> User:
    """The target of a user action, locked; staff can be acted on by superusers only."""
    user = User.objects.select_for_update().filter(pk=_as_id(user_id, "user_id")).first()
    if user is None:
        raise UserNotFound()
    if user.pk == actor.pk:
        raise Forbidden("You cannot moderate your own account.")
    if (user.is_staff or user.is_superuser) and not actor.is_superuser:
        raise Forbidden("Only a superuser can suspend or ban staff.")
    return user


def _close_sockets_on_commit(user_id: int) -> None:
    transaction.on_commit(lambda: realtime.close_user_sockets(user_id=user_id, code=CLOSE_ACCOUNT_SUSPENDED))


def suspend_user(*, actor: User, user_id: Any, until: datetime, reason: Any, report_id: int | None = None) -> User:
    """Suspend a user until ``until``: login, tokens, refresh and sessions are refused meanwhile,
    and their open sockets close at once (4423)."""
    _require(actor, SUSPEND_USERS)
    reason = _check_text(reason, "reason", limit=REASON_MAX_CHARS, required=True)
    if timezone.is_naive(until) or until <= timezone.now():
        raise InvalidInput(fields={"until": ["A time in the future."]})
    with transaction.atomic():
        user = _moderated_user(actor, user_id)
        user.suspended_until = until
        user.save(update_fields=["suspended_until"])
        _audit(
            actor,
            AuditLog.Action.USER_SUSPENDED,
            AuditLog.Target.USER,
            user.pk,
            user.username,
            reason,
            until=until.isoformat(),
            report_id=report_id,
        )
        _action_from_report(report_id, actor=actor, resolution=f"Suspended {user.username}: {reason}")
        _close_sockets_on_commit(user.pk)
    return user


def lift_suspension(*, actor: User, user_id: Any, reason: Any) -> User:
    """End a suspension early."""
    _require(actor, SUSPEND_USERS)
    reason = _check_text(reason, "reason", limit=REASON_MAX_CHARS, required=True)
    with transaction.atomic():
        user = _moderated_user(actor, user_id)
        if user.suspended_until is None or user.suspended_until <= timezone.now():
            raise InvalidInput("The user is not suspended.")
        user.suspended_until = None
        user.save(update_fields=["suspended_until"])
        _audit(actor, AuditLog.Action.USER_UNSUSPENDED, AuditLog.Target.USER, user.pk, user.username, reason)
    return user


def ban_user(*, actor: User, user_id: Any, reason: Any, report_id: int | None = None) -> User:
    """Ban a user until a moderator lifts it: as a suspension without an end."""
    _require(actor, SUSPEND_USERS)
    reason = _check_text(reason, "reason", limit=REASON_MAX_CHARS, required=True)
    with transaction.atomic():
        user = _moderated_user(actor, user_id)
        if user.banned_at is not None:
            raise InvalidInput("The user is already banned.")
        user.banned_at = timezone.now()
        user.save(update_fields=["banned_at"])
        _audit(
            actor,
            AuditLog.Action.USER_BANNED,
            AuditLog.Target.USER,
            user.pk,
            user.username,
            reason,
            report_id=report_id,
        )
        _action_from_report(report_id, actor=actor, resolution=f"Banned {user.username}: {reason}")
        _close_sockets_on_commit(user.pk)
    return user


def lift_ban(*, actor: User, user_id: Any, reason: Any) -> User:
    _require(actor, SUSPEND_USERS)
    reason = _check_text(reason, "reason", limit=REASON_MAX_CHARS, required=True)
    with transaction.atomic():
        user = _moderated_user(actor, user_id)
        if user.banned_at is None:
            raise InvalidInput("The user is not banned.")
        user.banned_at = None
        user.save(update_fields=["banned_at"])
        _audit(actor, AuditLog.Action.USER_UNBANNED, AuditLog.Target.USER, user.pk, user.username, reason)
    return user


def _message_repr(message: Message) -> str:
    return f"message {message.pk} (conversation {message.conversation_id}, #{message.seq})"


def hide_message(*, actor: User, message_id: Any, reason: Any, report_id: int | None = None) -> Message:
    """Hide a message: its members see a tombstone (``hidden: true``) live, via ``message.updated``."""
    _require(actor, HIDE_MESSAGES)
    reason = _check_text(reason, "reason", limit=REASON_MAX_CHARS, required=True)
    with transaction.atomic():
        message, changed = conversation_services.set_message_hidden(
            message_id=_as_id(message_id, "message_id"), hidden=True, reason=reason
        )
        if not changed:
            raise InvalidInput("The message is already hidden.")
        _audit(
            actor,
            AuditLog.Action.MESSAGE_HIDDEN,
            AuditLog.Target.MESSAGE,
            message.pk,
            _message_repr(message),
            reason,
            conversation_id=message.conversation_id,
            sender_id=message.sender_id,
            report_id=report_id,
        )
        _action_from_report(report_id, actor=actor, resolution=f"Hid {_message_repr(message)}: {reason}")
    return message


def restore_message(*, actor: User, message_id: Any, reason: Any) -> Message:
    """Show a hidden message again; members hear ``message.updated``."""
    _require(actor, HIDE_MESSAGES)
    reason = _check_text(reason, "reason", limit=REASON_MAX_CHARS, required=True)
    with transaction.atomic():
        message, changed = conversation_services.set_message_hidden(
            message_id=_as_id(message_id, "message_id"), hidden=False
        )
        if not changed:
            raise InvalidInput("The message is not hidden.")
        _audit(
            actor,
            AuditLog.Action.MESSAGE_RESTORED,
            AuditLog.Target.MESSAGE,
            message.pk,
            _message_repr(message),
            reason,
            conversation_id=message.conversation_id,
        )
    return message


def _group_repr(conversation_id: int) -> str:
    title = Conversation.objects.filter(pk=conversation_id).values_list("title", flat=True).first()
    return f"group {conversation_id} ({title})" if title else f"group {conversation_id}"


def set_group_frozen(
    *, actor: User, conversation_id: Any, frozen: bool, reason: Any, report_id: int | None = None
) -> None:
    """Freeze a group (no new messages: sends answer ``frozen``) or unfreeze it."""
    _require(actor, FREEZE_GROUPS)
    reason = _check_text(reason, "reason", limit=REASON_MAX_CHARS, required=True)
    cid = _as_id(conversation_id, "conversation_id")
    with transaction.atomic():
        if not conversation_services.set_group_frozen(conversation_id=cid, frozen=frozen):
            raise InvalidInput("The group is already frozen." if frozen else "The group is not frozen.")
        action = AuditLog.Action.GROUP_FROZEN if frozen else AuditLog.Action.GROUP_UNFROZEN
        _audit(actor, action, AuditLog.Target.CONVERSATION, cid, _group_repr(cid), reason, report_id=report_id)
        if frozen:
            _action_from_report(report_id, actor=actor, resolution=f"Froze {_group_repr(cid)}: {reason}")


def remove_group_member(
    *, actor: User, conversation_id: Any, user_id: Any, reason: Any, report_id: int | None = None
) -> None:
    """Remove a member from a group; the others see a ``member_removed`` system message."""
    _require(actor, FREEZE_GROUPS)
    reason = _check_text(reason, "reason", limit=REASON_MAX_CHARS, required=True)
    cid, uid = _as_id(conversation_id, "conversation_id"), _as_id(user_id, "user_id")
    with transaction.atomic():
        conversation_services.remove_member_by_moderator(conversation_id=cid, user_id=uid)
        _audit(
            actor,
            AuditLog.Action.MEMBER_REMOVED,
            AuditLog.Target.CONVERSATION,
            cid,
            _group_repr(cid),
            reason,
            user_id=uid,
            report_id=report_id,
        )
        _action_from_report(report_id, actor=actor, resolution=f"Removed user {uid} from {_group_repr(cid)}: {reason}")


def resolve_report(*, actor: User, report_id: Any, status: str, reason: Any) -> Report:
    """Close an open report as actioned (dealt with elsewhere) or dismissed (nothing to do)."""
    _require(actor, RESOLVE_REPORTS)
    reason = _check_text(reason, "reason", limit=REASON_MAX_CHARS, required=True)
    if status not in (Report.Status.ACTIONED, Report.Status.DISMISSED):
        raise InvalidInput(fields={"status": ["'actioned' or 'dismissed'."]})
    with transaction.atomic():
        report = Report.objects.select_for_update().filter(pk=_as_id(report_id, "report_id")).first()
        if report is None:
            raise ReportNotFound()
        if report.status != Report.Status.OPEN:
            raise InvalidInput("The report is already resolved.")
        report.status, report.resolved_by, report.resolved_at = status, actor, timezone.now()
        report.resolution = reason
        report.save(update_fields=["status", "resolved_by", "resolved_at", "resolution"])
        action = (
            AuditLog.Action.REPORT_ACTIONED if status == Report.Status.ACTIONED else AuditLog.Action.REPORT_DISMISSED
        )
        _audit(actor, action, AuditLog.Target.REPORT, report.pk, f"report {report.pk}", reason)
    return report
