"""Moderation and abuse controls (issue 7): blocks, reports, the moderator role in the admin,
suspensions and bans, hidden messages, frozen groups, and the audit log.

REST through DRF's client, the admin through django.test.Client (logged in through the real,
throttled admin login), and the live effects through a real ASGI server and WebSocket
clients. Real PostgreSQL, Redis and RabbitMQ; no mocks.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import httpx
import pytest
from django.apps import apps as django_apps
from django.contrib.auth.models import Group
from django.db import DatabaseError, connection, connections, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Device, User
from chat_project.errors import Forbidden
from conversations import services as chat
from conversations.models import Conversation, Membership, Message
from moderation import services
from moderation.models import AppendOnly, AuditLog, Block, Report
from moderation.selectors import Blocked
from tests.conftest import PASSWORD, LiveServer, app_login, make_user
from tests.wsclient import WSClient, refused_close_code, run

pytestmark = pytest.mark.django_db

BLOCKS = "/api/v1/blocks/"
REPORTS = "/api/v1/reports/"
TOKEN = "/api/v1/auth/token/"
REFRESH = "/api/v1/auth/token/refresh/"
ME = "/api/v1/me/"

T = TypeVar("T")
_ids = itertools.count(1)


# --- helpers -----------------------------------------------------------------------------------


def api_for(user: User) -> APIClient:
    client = APIClient()
    client.default_format = "json"
    client.force_authenticate(user)
    return client


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.content
    return response.json() if response.content else None


def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    assert error["detail"]
    return error


def direct(a: User, b: User) -> Conversation:
    conversation, _ = chat.get_or_create_direct(user=a, other_user_id=b.pk)
    return conversation


def quick_send(user: User, conversation_id: int, body: str = "hello") -> Message:
    message, _ = chat.send_message(
        sender=user, conversation_id=conversation_id, client_msg_id=f"m-{next(_ids)}", body=body
    )
    return message


def rest_send(user: User, conversation_id: int, body: str = "hi") -> Any:
    data = {"client_msg_id": f"r-{next(_ids)}", "body": body}
    return api_for(user).post(f"/api/v1/conversations/{conversation_id}/messages/", data, format="json")


def moderator_group() -> Group:
    """The group migration 0003 made; remade if a transactional test's flush removed it."""
    group = Group.objects.filter(name="moderator").first()
    if group is None:
        migration = importlib.import_module("moderation.migrations.0003_moderator_group")
        migration.create_group(django_apps, None)
        group = Group.objects.get(name="moderator")
    return group


def make_moderator(username: str = "mod") -> User:
    user = make_user(username)
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    user.groups.add(moderator_group())
    return User.objects.get(pk=user.pk)  # a fresh object: no cached permissions


@pytest.fixture
def moderator(db: None) -> User:
    return make_moderator()


def admin_login(user: User) -> Client:
    """A browser logged in through the real (throttled) admin login page."""
    client = Client()
    response = client.post("/admin/login/", {"username": user.username, "password": PASSWORD, "next": "/admin/"})
    assert response.status_code == 302, response.content.decode()[:2000]
    return client


def admin_action(client: Client, path: str, data: dict[str, Any], status: int = 302) -> Any:
    response = client.post(path, data)
    assert response.status_code == status, response.content.decode()[:3000]
    return response


def page_text(response: Any) -> str:
    return re.sub(r"\s+", " ", response.content.decode())


def in_thread(func: Callable[..., T], /, **kwargs: Any) -> Any:
    """Run a synchronous service from async test code, on its own connection, closed after."""

    def call() -> T:
        try:
            return func(**kwargs)
        finally:
            connections.close_all()

    return asyncio.to_thread(call)


# --- blocking over REST ----------------------------------------------------------------------------


def test_a_block_refuses_direct_messages_in_both_directions_until_unblocked(
    alice: User, bob: User, carol: User
) -> None:
    chat_ab = direct(alice, bob)
    group = chat.create_group(creator=alice, title="Both of us", member_ids=[bob.pk, carol.pk])

    created = ok(api_for(alice).post(f"{BLOCKS}{bob.pk}/"), 201)
    again = ok(api_for(alice).post(f"{BLOCKS}{bob.pk}/"), 200)

    assert created["user"] == {"id": bob.pk, "username": "bob", "display_name": "Bob"}
    assert again["created_at"] == created["created_at"]
    assert ok(api_for(alice).get(BLOCKS)) == [created]
    assert ok(api_for(bob).get(BLOCKS)) == []
    from_blocked = error_of(rest_send(bob, chat_ab.pk), 403, "blocked")
    from_blocker = error_of(rest_send(alice, chat_ab.pk), 403, "blocked")
    assert from_blocked["detail"] == "This user does not accept messages from you."
    assert "unblock" in from_blocker["detail"]
    assert not Message.objects.filter(conversation=chat_ab).exists()
    # Groups they share are not affected.
    ok(rest_send(bob, group.pk, "still fine in the group"), 201)

    assert ok(api_for(alice).delete(f"{BLOCKS}{bob.pk}/"), 204) is None
    assert ok(api_for(alice).delete(f"{BLOCKS}{bob.pk}/"), 204) is None  # idempotent
    ok(rest_send(bob, chat_ab.pk, "hello again"), 201)
    ok(rest_send(alice, chat_ab.pk, "hi"), 201)
    assert not Block.objects.exists()


def test_blocks_each_other_and_bad_targets(alice: User, bob: User) -> None:
    chat_ab = direct(alice, bob)
    ok(api_for(alice).post(f"{BLOCKS}{bob.pk}/"), 201)
    ok(api_for(bob).post(f"{BLOCKS}{alice.pk}/"), 201)
    ok(api_for(alice).delete(f"{BLOCKS}{bob.pk}/"), 204)

    error_of(rest_send(alice, chat_ab.pk), 403, "blocked")  # bob's block still stands
    error_of(api_for(alice).post(f"{BLOCKS}{alice.pk}/"), 400, "invalid")
    error_of(api_for(alice).post(f"{BLOCKS}999999/"), 404, "not_found")
    assert APIClient().get(BLOCKS).status_code == 401


def test_the_send_rule_costs_one_probe_for_direct_chats_and_none_for_groups(
    alice: User, bob: User, carol: User, django_assert_num_queries: Any
) -> None:
    chat_ab = direct(alice, bob)
    group = chat.create_group(creator=alice, title="G", member_ids=[bob.pk, carol.pk])
    services.block_user(user=alice, blocked_id=bob.pk)

    with django_assert_num_queries(2), pytest.raises(Blocked):  # the gate (with the frozen flag), the probe
        chat.send_message(sender=bob, conversation_id=chat_ab.pk, client_msg_id="x", body="hi")
    with CaptureQueriesContext(connection) as group_send:
        chat.send_message(sender=bob, conversation_id=group.pk, client_msg_id="y", body="hi")

    assert not [q for q in group_send.captured_queries if "moderation_block" in q["sql"]]


# --- reports -----------------------------------------------------------------------------------------


def test_a_report_keeps_its_snapshot_after_the_original_is_edited_or_deleted(alice: User, bob: User) -> None:
    chat_ab = direct(alice, bob)
    for i in range(12):
        quick_send(bob if i % 2 else alice, chat_ab.pk, f"message {i}")
    reported = quick_send(bob, chat_ab.pk, "you <b>will</b> regret this")
    data = {"reason": "harassment", "conversation_id": chat_ab.pk, "message_id": reported.pk, "details": "threat"}

    body = ok(api_for(alice).post(REPORTS, data, format="json"), 201)
    again = ok(api_for(alice).post(REPORTS, data, format="json"), 200)

    report = Report.objects.get()
    assert body == {
        "id": report.pk,
        "status": "open",
        "reason": "harassment",
        "conversation_id": chat_ab.pk,
        "message_id": reported.pk,
        "user_id": bob.pk,
        "created_at": body["created_at"],
    }
    assert again["id"] == report.pk
    snapshot = report.snapshot
    assert snapshot["reported_message_id"] == reported.pk
    assert snapshot["reported_user"] == {"id": bob.pk, "username": "bob", "display_name": "Bob"}
    assert snapshot["conversation"] == {"id": chat_ab.pk, "kind": "direct", "title": ""}
    assert [m["seq"] for m in snapshot["messages"]] == list(range(3, 14))  # the message and ten before it
    assert snapshot["messages"][-1]["body"] == "you <b>will</b> regret this"
    assert snapshot["messages"][-2]["body"] == "message 11"

    chat.edit_message(user=bob, conversation_id=chat_ab.pk, message_id=reported.pk, body="just kidding")
    earlier = Message.objects.get(conversation=chat_ab, seq=12)
    chat.delete_message(user=bob, conversation_id=chat_ab.pk, message_id=earlier.pk)

    report.refresh_from_db()
    assert report.snapshot == snapshot
    assert Message.objects.get(pk=reported.pk).body == "just kidding"


def test_reports_of_users_and_refused_reports(alice: User, bob: User, carol: User) -> None:
    chat_ab = direct(alice, bob)
    own = quick_send(alice, chat_ab.pk, "mine")
    theirs = quick_send(bob, chat_ab.pk, "spam spam")
    api = api_for(alice)

    user_report = ok(api.post(REPORTS, {"reason": "spam", "user_id": bob.pk, "conversation_id": chat_ab.pk}), 201)

    assert user_report["user_id"] == bob.pk and user_report["message_id"] is None
    snapshot = Report.objects.get(pk=user_report["id"]).snapshot
    assert [m["body"] for m in snapshot["messages"]] == ["mine", "spam spam"]
    ok(api.post(REPORTS, {"reason": "spam", "user_id": carol.pk}, format="json"), 201)
    # Not a member of the conversation: the same not-found as a missing one.
    error_of(
        api_for(carol).post(REPORTS, {"reason": "spam", "conversation_id": chat_ab.pk, "message_id": theirs.pk}),
        404,
        "not_found",
    )
    error_of(api.post(REPORTS, {"reason": "spam", "conversation_id": chat_ab.pk, "message_id": own.pk}), 400, "invalid")
    error_of(api.post(REPORTS, {"reason": "spam", "message_id": theirs.pk}), 400, "invalid")
    error_of(api.post(REPORTS, {"reason": "spam"}), 400, "invalid")
    error_of(api.post(REPORTS, {"reason": "meh", "user_id": bob.pk}), 400, "invalid")
    error_of(api.post(REPORTS, {"reason": "spam", "user_id": alice.pk}), 400, "invalid")
    assert Report.objects.count() == 2


# --- the moderator role in the admin ----------------------------------------------------------------


EXPECTED_MODERATOR_PERMISSIONS = {
    "accounts.view_user",
    "conversations.view_conversation",
    "conversations.view_membership",
    "conversations.view_message",
    "moderation.view_block",
    "moderation.view_report",
    "moderation.change_report",
    "moderation.view_auditlog",
    "moderation.suspend_user",
    "moderation.hide_message",
    "moderation.freeze_conversation",
}


def test_the_moderator_group_has_exactly_the_permissions_it_needs(db: None) -> None:
    group = Group.objects.get(name="moderator")
    granted = {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.select_related("content_type")}
    assert granted == EXPECTED_MODERATOR_PERMISSIONS


def test_a_moderator_finds_a_report_sees_its_context_and_suspends_the_sender(
    moderator: User, alice: User, bob: User
) -> None:
    chat_ab = direct(alice, bob)
    quick_send(alice, chat_ab.pk, "what's up")
    bad = quick_send(bob, chat_ab.pk, "<script>alert(1)</script> go away")
    bob_app = app_login(bob)
    report_id = ok(
        api_for(alice).post(REPORTS, {"reason": "harassment", "conversation_id": chat_ab.pk, "message_id": bad.pk}),
        201,
    )["id"]
    admin = admin_login(moderator)

    queue = admin.get("/admin/moderation/report/", {"status__exact": "open"})
    page = admin.get(f"/admin/moderation/report/{report_id}/change/")
    suspend_url = f"/admin/accounts/user/{bob.pk}/suspend/?report={report_id}"
    form = admin.get(suspend_url)
    done = admin_action(
        admin, suspend_url, {"duration": "24", "reason": "Threats in a direct chat", "report": report_id}
    )

    assert queue.status_code == 200 and f"/admin/moderation/report/{report_id}/change/" in queue.content.decode()
    text = page_text(page)
    assert page.status_code == 200
    assert "what&#x27;s up" in text and "&lt;script&gt;alert(1)&lt;/script&gt; go away" in text
    assert "<script>alert(1)" not in text
    assert f'href="{suspend_url}"' in text  # the action is linked from the report
    assert form.status_code == 200
    assert done["Location"] == f"/admin/moderation/report/{report_id}/change/"
    bob.refresh_from_db()
    assert bob.suspended_until is not None
    assert timedelta(hours=23) < bob.suspended_until - timezone.now() <= timedelta(hours=24)
    report = Report.objects.get(pk=report_id)
    assert (report.status, report.resolved_by_id) == (Report.Status.ACTIONED, moderator.pk)
    (entry,) = AuditLog.objects.all()
    assert (entry.actor_id, entry.action, entry.target_type, entry.target_id, entry.reason) == (
        moderator.pk,
        AuditLog.Action.USER_SUSPENDED,
        AuditLog.Target.USER,
        bob.pk,
        "Threats in a direct chat",
    )
    assert entry.data["report_id"] == report_id
    # Login, refresh and the access token are refused, with a clear answer.
    api = APIClient()
    login = error_of(
        api.post(TOKEN, {"username": "bob", "password": PASSWORD}, format="json"), 403, "account_suspended"
    )
    assert "suspended until" in login["detail"]
    error_of(api.post(REFRESH, {"refresh": bob_app.refresh}, format="json"), 403, "account_suspended")
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {bob_app.access}")
    error_of(api.get(ME), 401, "token_not_valid")
    page = Client().post("/login/", {"username": "bob", "password": PASSWORD})
    assert page.status_code == 400 and "This account is suspended until" in page.content.decode()
    # The audit log shows it, filtered by action.
    log = admin.get("/admin/moderation/auditlog/", {"action__exact": "user_suspended"})
    assert log.status_code == 200 and "Threats in a direct chat" in log.content.decode()


def test_a_moderator_cannot_change_passwords_flags_permissions_or_the_audit_log(
    moderator: User, alice: User, bob: User
) -> None:
    admin = admin_login(moderator)
    services.ban_user(actor=make_superuser(), user_id=bob.pk, reason="spam bot")
    entry = AuditLog.objects.get()

    for path in (
        "/admin/accounts/user/",
        f"/admin/accounts/user/{alice.pk}/change/",
        "/admin/conversations/conversation/",
        "/admin/conversations/message/",
        "/admin/moderation/report/",
        "/admin/moderation/auditlog/",
        f"/admin/moderation/auditlog/{entry.pk}/change/",
        "/admin/moderation/block/",
    ):
        assert admin.get(path).status_code == 200, path
    user_page = admin.get(f"/admin/accounts/user/{alice.pk}/change/").content.decode()
    assert 'name="is_superuser"' not in user_page and 'name="password"' not in user_page

    refused = {
        "change a password": admin.post(
            f"/admin/accounts/user/{alice.pk}/password/", {"password1": "x" * 20, "password2": "x" * 20}
        ),
        "see the password form": admin.get(f"/admin/accounts/user/{moderator.pk}/password/"),
        "make themselves superuser": admin.post(
            f"/admin/accounts/user/{moderator.pk}/change/",
            {"username": "mod", "is_active": "on", "is_staff": "on", "is_superuser": "on"},
        ),
        "add a user": admin.get("/admin/accounts/user/add/"),
        "delete a user": admin.post(f"/admin/accounts/user/{alice.pk}/delete/", {"post": "yes"}),
        "edit groups": admin.get("/admin/auth/group/"),
        "edit the audit log": admin.post(
            f"/admin/moderation/auditlog/{entry.pk}/change/", {"reason": "nothing happened"}
        ),
        "delete from the audit log": admin.post(f"/admin/moderation/auditlog/{entry.pk}/delete/", {"post": "yes"}),
        "add to the audit log": admin.get("/admin/moderation/auditlog/add/"),
        "see devices": admin.get("/admin/accounts/device/"),
        "edit a message": admin.post(f"/admin/conversations/message/{quick_msg(alice, bob).pk}/change/", {"body": "x"}),
    }

    assert {what: r.status_code for what, r in refused.items()} == dict.fromkeys(refused, 403)
    moderator.refresh_from_db()
    alice.refresh_from_db()
    assert not moderator.is_superuser and alice.check_password(PASSWORD)
    assert AuditLog.objects.get().reason == "spam bot" and AuditLog.objects.count() == 1
    # Staff are off limits to moderators; and moderators never act on themselves.
    other_moderator = make_moderator("mod2")
    error = admin_action(admin, f"/admin/accounts/user/{other_moderator.pk}/ban/", {"reason": "power trip"}, status=400)
    assert "Only a superuser can suspend or ban staff." in error.content.decode()
    assert User.objects.get(pk=other_moderator.pk).banned_at is None


def make_superuser() -> User:
    return User.objects.create_superuser(username=f"root{next(_ids)}", password=PASSWORD)


def quick_msg(a: User, b: User) -> Message:
    return quick_send(a, direct(a, b).pk, "a message")


def test_staff_without_the_role_cannot_moderate(alice: User, bob: User) -> None:
    staff = make_user("helpdesk")
    staff.is_staff = True
    staff.save(update_fields=["is_staff"])
    admin = admin_login(staff)
    message = quick_msg(alice, bob)

    assert admin.get(f"/admin/accounts/user/{bob.pk}/suspend/").status_code == 403
    assert admin.post(f"/admin/conversations/message/{message.pk}/hide/", {"reason": "x"}).status_code == 403
    with pytest.raises(Forbidden):
        services.hide_message(actor=staff, message_id=message.pk, reason="x")
    assert not AuditLog.objects.exists()


def test_hide_and_restore_a_message_from_the_admin(moderator: User, alice: User, bob: User, carol: User) -> None:
    group = chat.create_group(creator=alice, title="Trip", member_ids=[bob.pk, carol.pk])
    message = quick_send(bob, group.pk, "buy cheap pills")
    chat.set_reaction(user=carol, conversation_id=group.pk, message_id=message.pk, emoji="👍")
    admin = admin_login(moderator)
    messages_page = admin.get("/admin/conversations/message/", {"conversation__id__exact": str(group.pk), "q": "bob"})

    admin_action(admin, f"/admin/conversations/message/{message.pk}/hide/", {"reason": "spam"})

    assert messages_page.status_code == 200 and "buy cheap pills" in messages_page.content.decode()
    (seen,) = [
        m
        for m in ok(api_for(carol).get(f"/api/v1/conversations/{group.pk}/messages/"))["messages"]
        if m["id"] == message.pk
    ]
    assert (seen["hidden"], seen["deleted"], seen["body"], seen["reactions"]) == (True, False, "", [])
    stored = Message.objects.get(pk=message.pk)
    assert (stored.body, stored.hidden_reason) == ("buy cheap pills", "spam")
    assert stored.version > message.version
    # The sender cannot edit or delete it while it is hidden; hiding twice is refused.
    error_of(
        api_for(bob).patch(f"/api/v1/conversations/{group.pk}/messages/{message.pk}/", {"body": "x"}, format="json"),
        404,
        "not_found",
    )
    twice = admin_action(admin, f"/admin/conversations/message/{message.pk}/hide/", {"reason": "again"}, status=400)
    assert "already hidden" in twice.content.decode()
    link = f"/admin/conversations/message/{message.pk}/change/"
    assert link in admin.get("/admin/conversations/message/", {"hidden": "yes"}).content.decode()
    assert link not in admin.get("/admin/conversations/message/", {"hidden": "no"}).content.decode()

    admin_action(admin, f"/admin/conversations/message/{message.pk}/restore/", {"reason": "a false alarm"})

    (seen,) = [
        m
        for m in ok(api_for(carol).get(f"/api/v1/conversations/{group.pk}/messages/"))["messages"]
        if m["id"] == message.pk
    ]
    assert (seen["hidden"], seen["body"]) == (False, "buy cheap pills")
    assert list(AuditLog.objects.order_by("id").values_list("action", "target_id", "reason")) == [
        ("message_hidden", message.pk, "spam"),
        ("message_restored", message.pk, "a false alarm"),
    ]


def test_freeze_a_group_and_remove_a_member_from_the_admin(
    moderator: User, alice: User, bob: User, carol: User
) -> None:
    group = chat.create_group(creator=alice, title="Raid", member_ids=[bob.pk, carol.pk])
    admin = admin_login(moderator)

    admin_action(admin, f"/admin/conversations/conversation/{group.pk}/freeze/", {"reason": "coordinated abuse"})

    frozen = error_of(rest_send(bob, group.pk), 403, "frozen")
    assert "froze" in frozen["detail"]
    last = Message.objects.filter(conversation=group).order_by("-seq").first()
    assert last is not None and last.meta == {"event": "group_frozen", "by_moderator": True} and last.sender is None

    admin_action(admin, f"/admin/conversations/conversation/{group.pk}/unfreeze/", {"reason": "calmed down"})
    ok(rest_send(bob, group.pk, "back"), 201)
    page = admin.get(f"/admin/conversations/conversation/{group.pk}/remove-member/")
    admin_action(
        admin,
        f"/admin/conversations/conversation/{group.pk}/remove-member/",
        {"user": carol.pk, "reason": "ringleader"},
    )

    assert page.status_code == 200 and "carol" in page.content.decode()
    assert Membership.objects.get(conversation=group, user=carol).left_at is not None
    error_of(rest_send(carol, group.pk), 404, "not_found")
    assert list(AuditLog.objects.order_by("id").values_list("action", "target_type", "target_id", "data")) == [
        ("group_frozen", "conversation", group.pk, {}),
        ("group_unfrozen", "conversation", group.pk, {}),
        ("member_removed", "conversation", group.pk, {"user_id": carol.pk}),
    ]
    assert all(e.actor_id == moderator.pk for e in AuditLog.objects.all())


def test_dismissing_and_banning_from_reports(moderator: User, alice: User, bob: User) -> None:
    chat_ab = direct(alice, bob)
    messages = [quick_send(bob, chat_ab.pk, f"m{i}") for i in range(2)]
    report_ids = [
        services.report_abuse(reporter=alice, reason="spam", conversation_id=chat_ab.pk, message_id=m.pk)[0].pk
        for m in messages
    ]
    admin = admin_login(moderator)

    admin_action(
        admin, f"/admin/moderation/report/{report_ids[0]}/resolve/", {"status": "dismissed", "reason": "not spam"}
    )
    admin_action(
        admin, f"/admin/accounts/user/{bob.pk}/ban/?report={report_ids[1]}", {"reason": "bot", "report": report_ids[1]}
    )
    resolve_again = admin.post(
        f"/admin/moderation/report/{report_ids[0]}/resolve/", {"status": "actioned", "reason": "second thoughts"}
    )

    assert resolve_again.status_code == 400
    statuses = dict(Report.objects.values_list("pk", "status"))
    assert statuses == {report_ids[0]: "dismissed", report_ids[1]: "actioned"}
    assert list(AuditLog.objects.order_by("id").values_list("action", "reason")) == [
        ("report_dismissed", "not spam"),
        ("user_banned", "bot"),
    ]
    error_of(APIClient().post(TOKEN, {"username": "bob", "password": PASSWORD}, format="json"), 403, "account_banned")
    assert admin.get("/admin/moderation/report/", {"status__exact": "open"}).status_code == 200


# --- the audit log is append-only ----------------------------------------------------------------------


def test_the_audit_log_refuses_changes_in_the_model_and_the_database(moderator: User, bob: User) -> None:
    services.ban_user(actor=make_superuser(), user_id=bob.pk, reason="spam bot")
    entry = AuditLog.objects.get()
    superuser = admin_login(make_superuser())

    entry.reason = "nothing to see"
    with pytest.raises(AppendOnly):
        entry.save()
    with pytest.raises(AppendOnly):
        entry.delete()
    with pytest.raises(AppendOnly):
        AuditLog.objects.filter(pk=entry.pk).update(reason="nothing to see")
    with pytest.raises(AppendOnly):
        AuditLog.objects.all().delete()
    for sql in ("UPDATE moderation_auditlog SET reason = 'x'", "DELETE FROM moderation_auditlog"):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql)
    refused = [
        superuser.post(f"/admin/moderation/auditlog/{entry.pk}/change/", {"reason": "x"}).status_code,
        superuser.post(f"/admin/moderation/auditlog/{entry.pk}/delete/", {"post": "yes"}).status_code,
        superuser.get("/admin/moderation/auditlog/add/").status_code,
    ]

    assert refused == [403, 403, 403]
    assert AuditLog.objects.get().reason == "spam bot"


# --- the admin login is throttled like the app's ---------------------------------------------------------


def test_the_admin_login_is_throttled_and_shares_the_apps_counters(moderator: User, settings: Any) -> None:
    settings.LOGIN_FAILURE_WINDOW_SECONDS = 24 * 60 * 60
    for _ in range(settings.LOGIN_FAILURES_PER_USERNAME - 1):
        error_of(
            APIClient().post(TOKEN, {"username": "mod", "password": "wrong"}, format="json"), 401, "invalid_credentials"
        )
    wrong = Client().post("/admin/login/", {"username": "mod", "password": "wrong"})
    right = Client().post("/admin/login/", {"username": "mod", "password": PASSWORD})

    assert wrong.status_code == 200 and "correct username and password" in wrong.content.decode()
    assert right.status_code == 200
    assert "Too many failed logins" in right.content.decode()


def test_a_suspended_moderator_cannot_log_in_to_the_admin_and_their_session_ends(moderator: User) -> None:
    admin = admin_login(moderator)
    services.suspend_user(
        actor=make_superuser(), user_id=moderator.pk, until=timezone.now() + timedelta(hours=1), reason="audit"
    )

    after = admin.get("/admin/moderation/report/")
    login = Client().post("/admin/login/", {"username": "mod", "password": PASSWORD})

    assert after.status_code == 302 and after["Location"].startswith("/admin/login/")
    assert "This account is suspended until" in login.content.decode()


def test_a_suspension_ends_browser_sessions_and_lifting_it_restores_access(alice: User) -> None:
    browser = Client()
    assert browser.post("/login/", {"username": "alice", "password": PASSWORD}).status_code == 302
    app, other_app = app_login(alice), app_login(alice)
    superuser = make_superuser()
    services.suspend_user(actor=superuser, user_id=alice.pk, until=timezone.now() + timedelta(hours=1), reason="x")

    assert browser.get("/").status_code == 302
    assert browser.get(ME).status_code in (401, 403)
    # A suspended app can still log out: its device is revoked for good.
    ok(APIClient().post("/api/v1/auth/logout/", {"refresh": other_app.refresh}, format="json"), 204)
    assert Device.objects.get(pk=other_app.device.pk).revoked_at is not None

    services.lift_suspension(actor=superuser, user_id=alice.pk, reason="appeal accepted")
    refreshed = ok(APIClient().post(REFRESH, {"refresh": app.refresh}, format="json"))
    assert set(refreshed) == {"access", "refresh"}
    error_of(APIClient().post(REFRESH, {"refresh": other_app.refresh}, format="json"), 401, "token_not_valid")
    assert Client().post("/login/", {"username": "alice", "password": PASSWORD}).status_code == 302
    assert [e.action for e in AuditLog.objects.order_by("id")] == ["user_suspended", "user_unsuspended"]


# --- live: a real ASGI server and WebSocket clients ---------------------------------------------------------


async def connect(server: LiveServer, access: str) -> WSClient:
    return await WSClient.connect(server.ws_url, token=access)


def send_frame(conversation_id: int, body: str) -> dict[str, Any]:
    return {
        "type": "message.send",
        "id": f"f{next(_ids)}",
        "conversation_id": conversation_id,
        "client_msg_id": f"w-{next(_ids)}",
        "body": body,
    }


@pytest.mark.django_db(transaction=True)
def test_blocking_live_hides_presence_both_ways_and_refuses_sends(
    live_server_asgi: LiveServer, alice: User, bob: User, carol: User
) -> None:
    chat_ab = direct(alice, bob)
    a_login, b_login, c_login = app_login(alice), app_login(bob), app_login(carol)

    async def scenario() -> dict[str, Any]:
        http = httpx.AsyncClient(base_url=live_server_asgi.http_url)
        a = await connect(live_server_asgi, a_login.access)
        b = await connect(live_server_asgi, b_login.access)
        c = await connect(live_server_asgi, c_login.access)
        got: dict[str, Any] = {}
        await b.send({"type": "presence.subscribe", "user_ids": [alice.pk]})
        got["bob_sees_alice"] = await b.expect("presence", lambda f: f["user_id"] == alice.pk)
        await a.send({"type": "presence.subscribe", "user_ids": [bob.pk]})
        got["alice_sees_bob"] = await a.expect("presence", lambda f: f["user_id"] == bob.pk)
        await c.send({"type": "presence.subscribe", "user_ids": [alice.pk]})
        await c.expect("presence", lambda f: f["user_id"] == alice.pk)

        blocked = await http.post(f"{BLOCKS}{bob.pk}/", headers={"Authorization": f"Bearer {a_login.access}"})
        got["block_status"] = blocked.status_code
        got["bob_hidden"] = await b.expect("presence", lambda f: f["user_id"] == alice.pk)
        got["alice_hidden"] = await a.expect("presence", lambda f: f["user_id"] == bob.pk)
        got["bob_send"] = await b.request(send_frame(chat_ab.pk, "hey"), "message.ack")
        got["alice_send"] = await a.request(send_frame(chat_ab.pk, "hey"), "message.ack")
        await b.send({"type": "presence.subscribe", "id": "again", "user_ids": [alice.pk]})
        got["bob_resubscribed"] = await b.expect("presence", lambda f: f["user_id"] == alice.pk)
        # Alice goes offline: carol hears it, bob (blocked) does not.
        await a.close()
        got["carol_hears"] = await c.expect("presence", lambda f: f["user_id"] == alice.pk and f["online"] is False)
        await b.request({"type": "ping", "id": "sync-point"}, "pong")
        got["bob_frames_after"] = [f for f in b.inbox if f.get("type") == "presence"]

        unblocked = await http.delete(f"{BLOCKS}{bob.pk}/", headers={"Authorization": f"Bearer {a_login.access}"})
        got["unblock_status"] = unblocked.status_code
        a = await connect(live_server_asgi, a_login.access)
        await b.send({"type": "presence.subscribe", "user_ids": [alice.pk]})
        got["bob_sees_alice_again"] = await b.expect(
            "presence", lambda f: f["user_id"] == alice.pk and f["online"] is True
        )
        got["bob_send_again"] = await b.request(send_frame(chat_ab.pk, "sorry"), "message.ack")
        got["alice_receives"] = await a.expect("message.new")
        for ws in (a, b, c):
            await ws.close()
        await http.aclose()
        return got

    got = run(scenario())
    assert got["bob_sees_alice"]["online"] is True and got["alice_sees_bob"]["online"] is True
    assert got["block_status"] == 201
    hidden = {"type": "presence", "online": None, "last_seen": None}
    assert got["bob_hidden"] == {**hidden, "user_id": alice.pk}
    assert got["alice_hidden"] == {**hidden, "user_id": bob.pk}
    assert (got["bob_send"]["type"], got["bob_send"]["code"]) == ("error", "blocked")
    assert (got["alice_send"]["type"], got["alice_send"]["code"]) == ("error", "blocked")
    assert got["bob_resubscribed"] == {**hidden, "user_id": alice.pk}
    assert got["carol_hears"]["last_seen"] is not None
    assert got["bob_frames_after"] == []
    assert got["unblock_status"] == 204
    assert got["bob_send_again"]["type"] == "message.ack"
    assert got["alice_receives"]["message"]["body"] == "sorry"


@pytest.mark.django_db(transaction=True)
def test_suspension_closes_live_sockets_at_once_and_refuses_reconnect_refresh_and_login(
    live_server_asgi: LiveServer, alice: User, bob: User
) -> None:
    phone, laptop = app_login(bob), app_login(bob, platform=Device.Platform.DESKTOP)
    alice_login = app_login(alice)
    browser = Client()
    assert browser.post("/login/", {"username": "bob", "password": PASSWORD}).status_code == 302
    cookie = f"sessionid={browser.cookies['sessionid'].value}"
    superuser = make_superuser()

    async def scenario() -> dict[str, Any]:
        got: dict[str, Any] = {}
        sockets = [
            await connect(live_server_asgi, phone.access),
            await connect(live_server_asgi, laptop.access),
            await WSClient.connect(live_server_asgi.ws_url, cookie=cookie, origin=live_server_asgi.origin),
        ]
        bystander = await connect(live_server_asgi, alice_login.access)
        await in_thread(
            services.suspend_user,
            actor=superuser,
            user_id=bob.pk,
            until=timezone.now() + timedelta(days=7),
            reason="harassment",
        )
        got["codes"] = [await ws.expect_close() for ws in sockets]
        got["bystander"] = await bystander.request({"type": "ping", "id": "still"}, "pong")
        await bystander.close()
        got["reconnect"] = await refused_close_code(live_server_asgi.ws_url, token=phone.access)
        async with httpx.AsyncClient(base_url=live_server_asgi.http_url) as http:
            refresh = await http.post(REFRESH, json={"refresh": laptop.refresh})
            login = await http.post(TOKEN, json={"username": "bob", "password": PASSWORD})
            me = await http.get(ME, headers={"Authorization": f"Bearer {phone.access}"})
        got["refresh"], got["login"], got["me"] = refresh, login, me
        return got

    got = run(scenario())
    assert got["codes"] == [4423, 4423, 4423]
    assert got["bystander"]["type"] == "pong"
    assert got["reconnect"] == 4401
    assert (got["refresh"].status_code, got["refresh"].json()["error"]["code"]) == (403, "account_suspended")
    assert (got["login"].status_code, got["login"].json()["error"]["code"]) == (403, "account_suspended")
    assert "suspended until" in got["login"].json()["error"]["detail"]
    assert got["me"].status_code == 401
    assert AuditLog.objects.get().action == AuditLog.Action.USER_SUSPENDED


@pytest.mark.django_db(transaction=True)
def test_hiding_a_message_reaches_every_member_live_and_restoring_brings_it_back(
    live_server_asgi: LiveServer, alice: User, bob: User, carol: User
) -> None:
    group = chat.create_group(creator=alice, title="Trip", member_ids=[bob.pk, carol.pk])
    message = quick_send(bob, group.pk, "something awful")
    logins = [app_login(u) for u in (alice, bob, carol)]
    moderator = make_moderator()

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        sockets = [await connect(live_server_asgi, login.access) for login in logins]
        await in_thread(services.hide_message, actor=moderator, message_id=message.pk, reason="abusive")
        hidden = [await ws.expect("message.updated", lambda f: f["message"]["id"] == message.pk) for ws in sockets]
        await in_thread(services.restore_message, actor=moderator, message_id=message.pk, reason="on appeal")
        shown = [
            await ws.expect(
                "message.updated", lambda f: f["message"]["id"] == message.pk and not f["message"]["hidden"]
            )
            for ws in sockets
        ]
        for ws in sockets:
            await ws.close()
        return hidden, shown

    hidden, shown = run(scenario())
    assert [(f["message"]["hidden"], f["message"]["body"]) for f in hidden] == [(True, "")] * 3
    assert [(f["message"]["hidden"], f["message"]["body"]) for f in shown] == [(False, "something awful")] * 3
    assert shown[0]["message"]["version"] > hidden[0]["message"]["version"]
    assert [e.action for e in AuditLog.objects.order_by("id")] == ["message_hidden", "message_restored"]


def test_user_search_leaves_out_banned_and_suspended_accounts(
    moderator: User, alice: User, bob: User, carol: User
) -> None:
    bob_two, carol_two = make_user("bob_two"), make_user("carol_two")
    services.ban_user(actor=moderator, user_id=bob_two.pk, reason="spam")
    services.suspend_user(
        actor=moderator, user_id=carol_two.pk, until=timezone.now() + timedelta(days=1), reason="abuse"
    )
    client = APIClient()
    client.force_authenticate(alice)
    found = {u["username"] for u in client.get("/api/v1/users/?q=bo").json()} | {
        u["username"] for u in client.get("/api/v1/users/?q=car").json()
    }
    assert found == {"bob", "carol"}


def test_a_frozen_group_takes_no_edits_or_reactions_but_allows_deletions(
    moderator: User, alice: User, bob: User
) -> None:
    group = chat.create_group(creator=alice, title="Quiet", member_ids=[bob.pk])
    message, _ = chat.send_message(sender=alice, conversation_id=group.pk, client_msg_id="q1", body="before")
    services.set_group_frozen(actor=moderator, conversation_id=group.pk, frozen=True, reason="cool down")
    version = Message.objects.get(pk=message.pk).version
    attempts: list[Callable[[], object]] = [
        lambda: chat.edit_message(user=alice, conversation_id=group.pk, message_id=message.pk, body="after"),
        lambda: chat.set_reaction(user=bob, conversation_id=group.pk, message_id=message.pk, emoji="👍"),
    ]
    for attempt in attempts:
        with pytest.raises(Exception, match="froze") as refused:
            attempt()
        assert getattr(refused.value, "code", None) == "frozen"
    assert Message.objects.get(pk=message.pk).version == version  # nothing changed
    chat.delete_message(user=alice, conversation_id=group.pk, message_id=message.pk)
    assert Message.objects.get(pk=message.pk).deleted_at is not None


@pytest.mark.django_db(transaction=True)
def test_typing_does_not_cross_a_block(live_server_asgi: LiveServer, alice: User, bob: User, carol: User) -> None:
    chat_ab = direct(alice, bob)
    group = chat.create_group(creator=carol, title="All three", member_ids=[alice.pk, bob.pk])
    services.block_user(user=alice, blocked_id=bob.pk)
    a_login, b_login = app_login(alice), app_login(bob)

    async def scenario() -> list[dict[str, Any]]:
        a = await connect(live_server_asgi, a_login.access)
        b = await connect(live_server_asgi, b_login.access)
        await b.send({"type": "typing", "conversation_id": chat_ab.pk, "state": "start"})
        # Blocks do not apply in groups: this one arrives, and it was published after the first.
        await b.send({"type": "typing", "conversation_id": group.pk, "state": "start"})
        await a.expect("typing", lambda f: f["conversation_id"] == group.pk)
        typing = [f for f in a.received if f["type"] == "typing"]
        for ws in (a, b):
            await ws.close()
        return typing

    typing = run(scenario())
    assert [f["conversation_id"] for f in typing] == [group.pk]
