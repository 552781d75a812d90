"""The Django admin for moderators (docs/architecture.md, "Moderation").

Moderators are staff users in the "moderator" group (migration 0003), never superusers.
The group grants view permissions plus the moderation permissions. Every change a
moderator makes goes through one form page here (:func:`run_action`) that calls a
``moderation.services`` function, which checks the permission again and writes the audit
log in the same transaction. The admin's own forms never change users, messages, reports
or the audit log for a moderator.

This module also extends the user, conversation and message admins of ``accounts`` and
``conversations`` (re-registered here) with the moderation pages and filters, and throttles
the admin login exactly like the app's (``accounts.services.check_login``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.defaultfilters import linebreaksbr
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from accounts import services as account_services
from accounts.admin import UserAdmin
from accounts.models import User
from accounts.selectors import in_good_standing
from accounts.throttling import client_ip
from chat_project.errors import ApplicationError
from conversations.admin import ConversationAdmin, MessageAdmin
from conversations.models import Conversation, Membership, Message
from moderation import services
from moderation.models import AuditLog, Block, Report

ACTION_TEMPLATE = "admin/moderation/action.html"
CHANGE_FORM_TEMPLATE = "admin/moderation/change_form.html"


# --- the admin login, throttled like the app's --------------------------------------------------


class ThrottledAdminLoginForm(AdminAuthenticationForm):
    """The admin's login form on ``check_login``: the same failure counters per username and
    address as the app and the API, and the same clear refusal of suspended or banned accounts."""

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username")
        password = self.cleaned_data.get("password")
        if username is not None and password:
            try:
                self.user_cache = account_services.check_login(
                    username=username,
                    password=password,
                    ip=client_ip(self.request) if self.request else "",
                    request=self.request,
                )
            except account_services.InvalidCredentials:
                raise self.get_invalid_login_error() from None
            except ApplicationError as exc:  # throttled, suspended or banned: say so
                raise ValidationError(exc.detail, code=exc.code) from None
            self.confirm_login_allowed(self.user_cache)
        return self.cleaned_data


admin.site.login_form = ThrottledAdminLoginForm


# --- one form page for every moderator action ---------------------------------------------------


class ActionForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        max_length=services.REASON_MAX_CHARS,
        help_text="Kept in the audit log.",
    )
    report = forms.IntegerField(required=False, widget=forms.HiddenInput)


class SuspendForm(ActionForm):
    duration = forms.ChoiceField(
        choices=[("1", "1 hour"), ("24", "1 day"), ("168", "7 days"), ("720", "30 days"), ("", "Until the time below")],
        required=False,
        initial="24",
    )
    until = forms.DateTimeField(
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text="In the server's time zone; used when no duration is chosen.",
    )

    field_order = ("duration", "until", "reason")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("duration"):
            data["until"] = timezone.now() + timedelta(hours=int(data["duration"]))
        elif not data.get("until"):
            raise ValidationError("Choose a duration or a time.")
        return data


class RemoveMemberForm(ActionForm):
    user = forms.TypedChoiceField(coerce=int, label="Member")

    field_order = ("user", "reason")

    def __init__(self, *args: Any, members: list[Membership], **kwargs: Any):
        super().__init__(*args, **kwargs)
        field = self.fields["user"]
        assert isinstance(field, forms.TypedChoiceField)  # noqa: S101  (declared just above)
        field.choices = [(m.user_id, f"{m.user} ({m.get_role_display()})") for m in members]


class ResolveForm(ActionForm):
    status = forms.ChoiceField(
        choices=[(Report.Status.DISMISSED, "Dismiss: nothing to do"), (Report.Status.ACTIONED, "Actioned")]
    )

    field_order = ("status", "reason")


@dataclass(frozen=True)
class ModerationAction:
    """One moderator action on one object: its page at ``<object id>/<name>/`` and its link."""

    name: str
    title: str
    description: str
    permission: str
    perform: Callable[[User, Any, dict[str, Any]], object]  # (moderator, object, form data) -> a service call
    form_class: type[ActionForm] = ActionForm
    form_kwargs: Callable[[Any], dict[str, Any]] | None = None
    available: Callable[[Any], bool] = lambda obj: True  # whether the change page links to it


def moderator_of(request: HttpRequest) -> User:
    user = request.user
    if not isinstance(user, User):  # admin_view lets only active staff in
        raise PermissionDenied
    return user


def admin_url(obj_or_model: Model | type[Model], action: str = "change", **query: Any) -> str:
    """The admin URL of an object's page (or, for a model class, of a page like the list)."""
    opts = obj_or_model._meta
    args = [obj_or_model.pk] if isinstance(obj_or_model, Model) else []
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_{action}", args=args)
    params = {k: v for k, v in query.items() if v is not None}
    return f"{url}?{urlencode(params)}" if params else url


def run_action(
    model_admin: admin.ModelAdmin[Any], request: HttpRequest, obj: Any, action: ModerationAction
) -> HttpResponse:
    """The form page of a moderator action; a valid POST runs the action's service call."""
    moderator = moderator_of(request)
    if not moderator.has_perm(action.permission):
        raise PermissionDenied
    initial = {"report": request.GET.get("report"), "user": request.GET.get("user")}
    extra = action.form_kwargs(obj) if action.form_kwargs else {}
    form = action.form_class(request.POST or None, initial=initial, **extra)
    back = admin_url(obj)
    if request.method == "POST" and form.is_valid():
        try:
            action.perform(moderator, obj, form.cleaned_data)
        except ApplicationError as exc:
            for field, errors in exc.fields.items():
                for error in errors:
                    form.add_error(field if field in form.fields else None, error)
            if not exc.fields:
                form.add_error(None, exc.detail)
        else:
            model_admin.message_user(request, f"{action.title}: done.", messages.SUCCESS)
            report_id = form.cleaned_data.get("report")
            return HttpResponseRedirect(admin_url(Report(pk=report_id)) if report_id else back)
    context = {
        **model_admin.admin_site.each_context(request),
        "title": action.title,
        "subtitle": str(obj),
        "description": action.description,
        "form": form,
        "object": obj,
        "opts": obj._meta,
        "back_url": back,
        "media": model_admin.media + form.media,
    }
    return TemplateResponse(request, ACTION_TEMPLATE, context, status=400 if form.errors else 200)


class ModerationAdminMixin:
    """Adds the moderation pages of ``moderation_actions`` to a ModelAdmin, and links to them
    (plus ``extra_links``) at the top of its change page (with ``CHANGE_FORM_TEMPLATE``)."""

    moderation_actions: tuple[ModerationAction, ...] = ()

    def extra_links(self, request: HttpRequest, obj: Any) -> list[tuple[str, str]]:
        return []

    def get_urls(self) -> list[URLPattern]:
        model_admin: Any = self
        opts = model_admin.model._meta
        view = model_admin.admin_site.admin_view(self.moderation_view)
        own = [
            path(
                f"<path:object_id>/{a.name}/",
                view,
                {"name": a.name},
                name=f"{opts.app_label}_{opts.model_name}_{a.name}",
            )
            for a in self.moderation_actions
        ]
        urls: list[URLPattern] = super().get_urls()  # type: ignore[misc]  # ModelAdmin.get_urls
        return own + urls

    def moderation_view(self, request: HttpRequest, object_id: str, name: str) -> HttpResponse:
        model_admin: Any = self
        obj = model_admin.get_object(request, object_id)
        if obj is None:
            raise Http404
        if not model_admin.has_view_permission(request, obj):
            raise PermissionDenied
        action = next(a for a in self.moderation_actions if a.name == name)
        return run_action(model_admin, request, obj, action)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        model_admin: Any = self
        obj = model_admin.get_object(request, object_id)
        links = []
        if obj is not None:
            links = [
                (a.title, admin_url(obj, a.name))
                for a in self.moderation_actions
                if a.available(obj) and request.user.has_perm(a.permission)
            ] + self.extra_links(request, obj)
        context = {**(extra_context or {}), "moderation_links": links}
        response: HttpResponse = super().change_view(request, object_id, form_url, context)  # type: ignore[misc]  # ModelAdmin.change_view
        return response


# --- users ---------------------------------------------------------------------------------------


class StandingFilter(admin.SimpleListFilter):
    title = "standing"
    parameter_name = "standing"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("suspended", "Suspended now"), ("banned", "Banned"), ("good", "In good standing")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "suspended":
            return queryset.filter(suspended_until__gt=timezone.now(), banned_at__isnull=True)
        if self.value() == "banned":
            return queryset.filter(banned_at__isnull=False)
        if self.value() == "good":
            return queryset.filter(in_good_standing())
        return queryset


def _suspended(user: User) -> bool:
    return user.banned_at is None and not user.in_good_standing()


admin.site.unregister(User)


@admin.register(User)
class ModeratedUserAdmin(ModerationAdminMixin, UserAdmin):
    """Moderators see users read-only (the group has no ``change_user``: no password changes,
    no staff or superuser flags, no permissions) and suspend or ban them through the pages below."""

    change_form_template = CHANGE_FORM_TEMPLATE
    moderation_actions = (
        ModerationAction(
            name="suspend",
            title="Suspend user",
            description="Until then login, tokens and sessions are refused; open sockets close now (4423).",
            permission=services.SUSPEND_USERS,
            form_class=SuspendForm,
            available=lambda u: u.in_good_standing(),
            perform=lambda mod, u, d: services.suspend_user(
                actor=mod, user_id=u.pk, until=d["until"], reason=d["reason"], report_id=d["report"]
            ),
        ),
        ModerationAction(
            name="unsuspend",
            title="Lift suspension",
            description="The user can log in again at once.",
            permission=services.SUSPEND_USERS,
            available=_suspended,
            perform=lambda mod, u, d: services.lift_suspension(actor=mod, user_id=u.pk, reason=d["reason"]),
        ),
        ModerationAction(
            name="ban",
            title="Ban user",
            description="Like a suspension without an end, until a moderator lifts it.",
            permission=services.SUSPEND_USERS,
            available=lambda u: u.banned_at is None,
            perform=lambda mod, u, d: services.ban_user(
                actor=mod, user_id=u.pk, reason=d["reason"], report_id=d["report"]
            ),
        ),
        ModerationAction(
            name="unban",
            title="Lift ban",
            description="The user can log in again at once (unless a suspension is still running).",
            permission=services.SUSPEND_USERS,
            available=lambda u: u.banned_at is not None,
            perform=lambda mod, u, d: services.lift_ban(actor=mod, user_id=u.pk, reason=d["reason"]),
        ),
    )

    def get_list_display(self, request: HttpRequest) -> Any:
        return (*UserAdmin.list_display, "standing")

    def get_list_filter(self, request: HttpRequest) -> Any:
        return (StandingFilter, "is_staff", "is_superuser", "is_active", "groups")

    def get_fieldsets(self, request: HttpRequest, obj: User | None = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None:  # the add form
            return fieldsets
        return (*fieldsets, ("Moderation", {"fields": ("suspended_until", "banned_at")}))

    def get_readonly_fields(self, request: HttpRequest, obj: User | None = None) -> Any:
        return (*super().get_readonly_fields(request, obj), "suspended_until", "banned_at")

    @admin.display(description="Standing")
    def standing(self, user: User) -> str:
        if user.banned_at is not None:
            return "banned"
        if _suspended(user) and user.suspended_until is not None:
            return f"suspended until {timezone.localtime(user.suspended_until):%Y-%m-%d %H:%M}"
        return "ok"

    def extra_links(self, request: HttpRequest, obj: User) -> list[tuple[str, str]]:
        return [
            ("Messages sent", admin_url(Message, "changelist", sender__id__exact=obj.pk)),
            ("Reports about", admin_url(Report, "changelist", reported_user__id__exact=obj.pk)),
        ]


# --- messages ------------------------------------------------------------------------------------


def moderated_state_filter(field: str, title: str, yes: str, no: str) -> type[admin.SimpleListFilter]:
    """A yes/no list filter on whether a moderator's timestamp (``hidden_at``, ``frozen_at``) is set."""

    class StateFilter(admin.SimpleListFilter):
        parameter_name = field.removesuffix("_at")

        def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
            return [("yes", yes), ("no", no)]

        def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
            if self.value() in ("yes", "no"):
                return queryset.filter(**{f"{field}__isnull": self.value() == "no"})
            return queryset

    StateFilter.title = title
    return StateFilter


HiddenFilter = moderated_state_filter("hidden_at", "hidden by a moderator", "Hidden", "Shown")


admin.site.unregister(Message)


@admin.register(Message)
class ModeratedMessageAdmin(ModerationAdminMixin, MessageAdmin):
    """Messages are read-only in the admin for everyone: changing or deleting a row here would
    skip the version that tells clients (and break the gap-free order). Moderators hide and
    restore through the pages below, which announce the change.

    Search by the sender's username, the group title or the text; filter by date, kind and
    hidden; or open ``?conversation__id__exact=<id>`` / ``?sender__id__exact=<id>`` (linked from
    the conversation and user pages), with ``created_at__gte=`` / ``created_at__lt=`` for ranges.
    """

    show_full_result_count = False  # no COUNT(*) over the whole table on every page
    change_form_template = CHANGE_FORM_TEMPLATE
    moderation_actions = (
        ModerationAction(
            name="hide",
            title="Hide message",
            description="Members see a tombstone at once; the text stays here and in reports.",
            permission=services.HIDE_MESSAGES,
            available=lambda m: m.hidden_at is None and m.kind == Message.Kind.TEXT,
            perform=lambda mod, m, d: services.hide_message(
                actor=mod, message_id=m.pk, reason=d["reason"], report_id=d["report"]
            ),
        ),
        ModerationAction(
            name="restore",
            title="Restore message",
            description="Members see the message again at once.",
            permission=services.HIDE_MESSAGES,
            available=lambda m: m.hidden_at is not None,
            perform=lambda mod, m, d: services.restore_message(actor=mod, message_id=m.pk, reason=d["reason"]),
        ),
    )

    def get_list_display(self, request: HttpRequest) -> Any:
        return ("id", "conversation", "seq", "sender", "kind", "excerpt", "created_at", "deleted_at", "hidden_at")

    def get_list_filter(self, request: HttpRequest) -> Any:
        return ("kind", HiddenFilter, ("created_at", admin.DateFieldListFilter))

    def get_search_fields(self, request: HttpRequest) -> Any:
        return ("sender__username", "conversation__title", "body")

    @admin.display(description="Text")
    def excerpt(self, message: Message) -> str:
        return message.body[:80] + ("…" if len(message.body) > 80 else "")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        return False

    def extra_links(self, request: HttpRequest, obj: Message) -> list[tuple[str, str]]:
        return [
            ("Conversation", admin_url(Conversation(pk=obj.conversation_id))),
            ("Messages around it", admin_url(Message, "changelist", conversation__id__exact=obj.conversation_id)),
        ]


# --- conversations ---------------------------------------------------------------------------------


FrozenFilter = moderated_state_filter("frozen_at", "frozen", "Frozen", "Not frozen")


def _members(conversation: Conversation) -> dict[str, Any]:
    active = Membership.objects.filter(conversation=conversation, left_at__isnull=True).select_related("user")
    return {"members": list(active.order_by("user__username"))}


admin.site.unregister(Conversation)


@admin.register(Conversation)
class ModeratedConversationAdmin(ModerationAdminMixin, ConversationAdmin):
    """Moderators see conversations and their members; they freeze groups and remove members
    through the pages below (each posts a system message to the group)."""

    change_form_template = CHANGE_FORM_TEMPLATE
    moderation_actions = (
        ModerationAction(
            name="freeze",
            title="Freeze group",
            description="No new messages until it is unfrozen; members see a system message.",
            permission=services.FREEZE_GROUPS,
            available=lambda c: c.kind == Conversation.Kind.GROUP and c.frozen_at is None,
            perform=lambda mod, c, d: services.set_group_frozen(
                actor=mod, conversation_id=c.pk, frozen=True, reason=d["reason"], report_id=d["report"]
            ),
        ),
        ModerationAction(
            name="unfreeze",
            title="Unfreeze group",
            description="Members can send messages again.",
            permission=services.FREEZE_GROUPS,
            available=lambda c: c.frozen_at is not None,
            perform=lambda mod, c, d: services.set_group_frozen(
                actor=mod, conversation_id=c.pk, frozen=False, reason=d["reason"]
            ),
        ),
        ModerationAction(
            name="remove-member",
            title="Remove a member",
            description="The member leaves the group at once and can no longer read it.",
            permission=services.FREEZE_GROUPS,
            form_class=RemoveMemberForm,
            form_kwargs=_members,
            available=lambda c: c.kind == Conversation.Kind.GROUP,
            perform=lambda mod, c, d: services.remove_group_member(
                actor=mod, conversation_id=c.pk, user_id=d["user"], reason=d["reason"], report_id=d["report"]
            ),
        ),
    )

    def get_list_display(self, request: HttpRequest) -> Any:
        return (*ConversationAdmin.list_display, "frozen_at")

    def get_list_filter(self, request: HttpRequest) -> Any:
        return ("kind", FrozenFilter)

    def get_search_fields(self, request: HttpRequest) -> Any:
        return ("title", "=id")

    def get_readonly_fields(self, request: HttpRequest, obj: Conversation | None = None) -> Any:
        return (*super().get_readonly_fields(request, obj), "frozen_at")

    def extra_links(self, request: HttpRequest, obj: Conversation) -> list[tuple[str, str]]:
        return [("Messages", admin_url(Message, "changelist", conversation__id__exact=obj.pk))]


# --- reports -------------------------------------------------------------------------------------


def _snapshot_html(report: Report) -> SafeString:
    """The frozen snapshot as a table; the reported message is marked."""
    snapshot = report.snapshot or {}
    reported = snapshot.get("reported_message_id")
    conversation = snapshot.get("conversation") or {}
    rows = []
    for m in snapshot.get("messages", []):
        sender = (m.get("sender") or {}).get("username", "—")
        flags = [f for f in ("deleted", "hidden") if m.get(f)] + (["edited"] if m.get("edited_at") else [])
        if m.get("kind") == Message.Kind.SYSTEM:
            text = format_html("<em>{}</em>", (m.get("meta") or {}).get("event", "system"))
        else:
            text = linebreaksbr(m.get("body") or "", autoescape=True)
        files = ", ".join(a.get("filename", "") for a in m.get("attachments", []))
        rows.append(
            (
                "▶ reported" if m.get("id") == reported else "",
                m.get("seq"),
                m.get("created_at", "")[:19].replace("T", " "),
                sender,
                text,
                " ".join(flags) + (f" files: {files}" if files else ""),
            )
        )
    header = format_html(
        "<p>{} {} — taken {}</p>",
        conversation.get("kind", "no conversation"),
        conversation.get("title") or conversation.get("id") or "",
        (snapshot.get("taken_at") or "")[:19].replace("T", " "),
    )
    if not rows:
        return format_html("{}<p>No messages.</p>", header)
    body = format_html_join("", "<tr><td>{}</td><td>#{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows)
    return format_html(
        "{}<table><thead><tr><th></th><th>seq</th><th>sent</th><th>sender</th><th>text</th><th></th></tr></thead>"
        "<tbody>{}</tbody></table>",
        header,
        body,
    )


@admin.register(Report)
class ReportAdmin(ModerationAdminMixin, admin.ModelAdmin[Report]):
    """The reports queue: filter by status (open first), reason and date; a report's page shows
    the snapshot and links to the actions, each of which marks the report actioned."""

    list_display = ("id", "created_at", "status", "reason", "reporter", "reported_user", "reported", "resolved_by")
    list_filter = ("status", "reason", ("created_at", admin.DateFieldListFilter))
    search_fields = ("reported_user__username", "reporter__username", "details")
    list_select_related = ("reporter", "reported_user", "resolved_by")
    ordering = ("-created_at",)
    fields = (
        "status",
        "reason",
        "details",
        "reporter",
        "reported_user",
        "conversation",
        "message",
        "created_at",
        "snapshot_view",
        "resolved_by",
        "resolved_at",
        "resolution",
    )
    readonly_fields = fields
    change_form_template = CHANGE_FORM_TEMPLATE
    moderation_actions = (
        ModerationAction(
            name="resolve",
            title="Resolve report",
            description="Dismiss it, or mark it actioned if you acted elsewhere.",
            permission=services.RESOLVE_REPORTS,
            form_class=ResolveForm,
            available=lambda r: r.status == Report.Status.OPEN,
            perform=lambda mod, r, d: services.resolve_report(
                actor=mod, report_id=r.pk, status=d["status"], reason=d["reason"]
            ),
        ),
    )

    @admin.display(description="Reported")
    def reported(self, report: Report) -> str:
        for m in (report.snapshot or {}).get("messages", []):
            if m.get("id") == report.snapshot.get("reported_message_id"):
                body = m.get("body") or ""
                return body[:60] + ("…" if len(body) > 60 else "")
        return "(the user)"

    @admin.display(description="What was reported, as it was then")
    def snapshot_view(self, report: Report) -> SafeString:
        return _snapshot_html(report)

    def extra_links(self, request: HttpRequest, obj: Report) -> list[tuple[str, str]]:
        """The actions a report leads to; taking one marks this report actioned."""
        user, links = request.user, []
        if obj.message_id and user.has_perm(services.HIDE_MESSAGES):
            links.append(("Hide the message", admin_url(Message(pk=obj.message_id), "hide", report=obj.pk)))
        if obj.reported_user_id and user.has_perm(services.SUSPEND_USERS):
            target = User(pk=obj.reported_user_id)
            links.append(("Suspend the user", admin_url(target, "suspend", report=obj.pk)))
            links.append(("Ban the user", admin_url(target, "ban", report=obj.pk)))
        conversation = obj.conversation
        is_group = conversation is not None and conversation.kind == Conversation.Kind.GROUP
        if conversation is not None and is_group and user.has_perm(services.FREEZE_GROUPS):
            freeze = admin_url(conversation, "freeze", report=obj.pk)
            remove = admin_url(conversation, "remove-member", report=obj.pk, user=obj.reported_user_id)
            links += [("Freeze the group", freeze), ("Remove from the group", remove)]
        if obj.conversation_id:
            links.append(
                (
                    "Messages of the conversation",
                    admin_url(Message, "changelist", conversation__id__exact=obj.conversation_id),
                )
            )
        return links

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # reports come from users (POST /api/v1/reports/)

    def has_change_permission(self, request: HttpRequest, obj: Report | None = None) -> bool:
        return False  # resolved through the "Resolve report" page, which audits

    def has_delete_permission(self, request: HttpRequest, obj: Report | None = None) -> bool:
        return False


# --- the audit log and blocks: read-only for everyone ---------------------------------------------


@admin.register(AuditLog)
class AuditLogAdmin(admin.ModelAdmin[AuditLog]):
    """Visible and filterable; nobody, superusers included, can add, change or delete entries."""

    list_display = ("created_at", "actor", "action", "target_type", "target", "short_reason")
    list_filter = (
        "action",
        "target_type",
        ("actor", admin.RelatedOnlyFieldListFilter),
    )
    search_fields = ("reason", "target_repr", "actor__username", "=target_id")
    list_select_related = ("actor",)
    date_hierarchy = "created_at"
    fields = ("created_at", "actor", "action", "target_type", "target_id", "target", "reason", "data")
    readonly_fields = fields

    @admin.display(description="Target")
    def target(self, entry: AuditLog) -> SafeString:
        model: type[Model] | None = {
            AuditLog.Target.USER: User,
            AuditLog.Target.MESSAGE: Message,
            AuditLog.Target.CONVERSATION: Conversation,
            AuditLog.Target.REPORT: Report,
        }.get(AuditLog.Target(entry.target_type))
        if model is None:
            return format_html("{}", entry.target_repr)
        return format_html('<a href="{}">{}</a>', admin_url(model(pk=entry.target_id)), entry.target_repr)

    @admin.display(description="Reason")
    def short_reason(self, entry: AuditLog) -> str:
        return entry.reason[:80] + ("…" if len(entry.reason) > 80 else "")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditLog | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditLog | None = None) -> bool:
        return False


@admin.register(Block)
class BlockAdmin(admin.ModelAdmin[Block]):
    """Who blocked whom (a signal for moderators); users manage their blocks themselves."""

    list_display = ("created_at", "blocker", "blocked")
    search_fields = ("blocker__username", "blocked__username")
    list_select_related = ("blocker", "blocked")
    readonly_fields = ("blocker", "blocked", "created_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Block | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Block | None = None) -> bool:
        return False
