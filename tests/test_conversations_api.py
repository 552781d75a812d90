"""The conversations REST API over DRF's test client: chats, members, messages, receipts.

The REST mirror of the messaging core (docs/architecture.md, "Delivery semantics"): every
test asserts the response and the database state, against real PostgreSQL, with no mocks.
Setup goes through the API or the real services; concurrency tests use real threads with
their own connections and commit for real.
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone
from openapi_spec_validator import validate
from rest_framework.test import APIClient

from accounts.models import User
from conversations import services
from conversations.models import Conversation, Membership, Message, Reaction
from tests.conftest import app_login, make_user

CONVERSATIONS = "/api/v1/conversations/"

pytestmark = pytest.mark.django_db

_ids = itertools.count(1)


# --- helpers ----------------------------------------------------------------------------


def api_for(user: User | None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def conv_url(conversation_id: int, tail: str = "") -> str:
    return f"{CONVERSATIONS}{conversation_id}/{tail}"


def msg_url(conversation_id: int, message_id: int, tail: str = "") -> str:
    return conv_url(conversation_id, f"messages/{message_id}/{tail}")


def call(client: APIClient, method: str, url: str, data: Any = None) -> Any:
    if method == "get":
        return client.get(url, data)
    return getattr(client, method)(url, data, format="json")


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.content
    return response.json()


def error_of(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """Assert the status and the one error shape (and its code); return the error object."""
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "detail", "fields"}
    assert isinstance(body["error"]["detail"], str)
    assert body["error"]["detail"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return dict(body["error"])


def cmid() -> str:
    return f"m-{next(_ids)}"


def start_direct(user: User, other: User) -> int:
    body = ok(call(api_for(user), "post", CONVERSATIONS, {"kind": "direct", "user_id": other.pk}), 201)
    return int(body["id"])


def start_group(owner: User, *members: User, title: str = "Trip") -> int:
    data = {"kind": "group", "title": title, "member_ids": [m.pk for m in members]}
    body = ok(call(api_for(owner), "post", CONVERSATIONS, data), 201)
    return int(body["id"])


def send(user: User, conversation_id: int, body: str = "hello", **extra: Any) -> dict[str, Any]:
    data = {"client_msg_id": cmid(), "body": body, **extra}
    result: dict[str, Any] = ok(call(api_for(user), "post", conv_url(conversation_id, "messages/"), data), 201)
    return result


def quick_send(user: User, conversation_id: int, body: str = "hello") -> Message:
    """Bulk setup through the real service, without the HTTP round trip."""
    message, _ = services.send_message(sender=user, conversation_id=conversation_id, client_msg_id=cmid(), body=body)
    return message


def history(user: User, conversation_id: int, **params: Any) -> dict[str, Any]:
    result: dict[str, Any] = ok(api_for(user).get(conv_url(conversation_id, "messages/"), params))
    return result


def seqs(page: dict[str, Any]) -> list[int]:
    return [m["seq"] for m in page["messages"]]


def membership(user: User, conversation_id: int) -> Membership:
    return Membership.objects.get(user=user, conversation_id=conversation_id)


def listing(user: User) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = ok(api_for(user).get(CONVERSATIONS))
    return result


def row_of(user: User, conversation_id: int) -> dict[str, Any]:
    (row,) = [c for c in listing(user) if c["id"] == conversation_id]
    return row


def run_together(*jobs: Callable[[], Any]) -> list[Any]:
    """Run the jobs in threads released at once by a barrier; each closes its own connection."""
    barrier = threading.Barrier(len(jobs))
    results: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []

    def run(index: int, job: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=10)
            results[index] = job()
        except BaseException as exc:  # re-raised in the test's thread below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    if errors:
        raise errors[0]
    return results


@pytest.fixture
def dave(db: None) -> User:
    return make_user("dave", "Dave")


# --- direct chats -------------------------------------------------------------------------


def test_direct_chat_is_created_once_and_found_again_from_both_sides(alice, bob):
    first = call(api_for(alice), "post", CONVERSATIONS, {"kind": "direct", "user_id": bob.pk})

    body = ok(first, 201)
    assert body["kind"] == "direct"
    assert body["title"] == "Bob"
    assert body["peer"] == {"id": bob.pk, "username": "bob", "display_name": "Bob"}
    assert body["last_seq"] == 0
    assert body["last_message"] is None
    assert body["member_count"] == 2
    assert body["unread_count"] == 0
    assert sorted((m["user"]["id"], m["role"]) for m in body["members"]) == [(alice.pk, "member"), (bob.pk, "member")]
    conversation = Conversation.objects.get()
    assert conversation.pk == body["id"]
    assert conversation.direct_key == f"{min(alice.pk, bob.pk)}:{max(alice.pk, bob.pk)}"
    assert conversation.created_by == alice
    assert sorted(conversation.memberships.values_list("user_id", flat=True)) == sorted([alice.pk, bob.pk])

    again = ok(call(api_for(alice), "post", CONVERSATIONS, {"kind": "direct", "user_id": bob.pk}), 200)
    other_side = ok(call(api_for(bob), "post", CONVERSATIONS, {"kind": "direct", "user_id": alice.pk}), 200)

    assert again["id"] == other_side["id"] == conversation.pk
    assert other_side["title"] == "Alice"
    assert other_side["peer"]["id"] == alice.pk
    assert Conversation.objects.count() == 1
    assert Membership.objects.count() == 2


def test_an_app_with_a_bearer_token_starts_a_chat_and_sends(alice, bob):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {app_login(alice).access}")

    conversation = ok(call(client, "post", CONVERSATIONS, {"kind": "direct", "user_id": bob.pk}), 201)
    message = ok(
        call(client, "post", conv_url(conversation["id"], "messages/"), {"client_msg_id": "a", "body": "hi"}), 201
    )

    assert message["sender_id"] == alice.pk
    assert Message.objects.get().body == "hi"
    assert [c["id"] for c in listing(bob)] == [conversation["id"]]


@pytest.mark.parametrize("who", ["self", "unknown", "inactive"])
def test_direct_chat_with_self_an_unknown_or_an_inactive_user_is_not_found(alice, dave, who):
    User.objects.filter(pk=dave.pk).update(is_active=False)
    other_id = {"self": alice.pk, "unknown": dave.pk + 1000, "inactive": dave.pk}[who]

    response = call(api_for(alice), "post", CONVERSATIONS, {"kind": "direct", "user_id": other_id})

    error_of(response, 404, "not_found")
    assert not Conversation.objects.exists()
    assert not Membership.objects.exists()


def test_direct_chat_needs_a_user_id(alice):
    error = error_of(call(api_for(alice), "post", CONVERSATIONS, {"kind": "direct"}), 400, "invalid")

    assert list(error["fields"]) == ["user_id"]
    assert not Conversation.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_direct_chat_started_from_both_sides_at_once_is_one_chat(alice, bob, carol):
    # Several pairs: one round rarely shows an interleaving bug.
    def start(user: User, peer: User) -> tuple[int, int]:
        response = call(api_for(user), "post", CONVERSATIONS, {"kind": "direct", "user_id": peer.pk})
        return response.status_code, response.json()["id"]

    for one, other in [(alice, bob), (alice, carol), (bob, carol)]:
        results = run_together(functools.partial(start, one, other), functools.partial(start, other, one))

        assert sorted(status for status, _ in results) == [200, 201]
        assert results[0][1] == results[1][1]
        key = f"{min(one.pk, other.pk)}:{max(one.pk, other.pk)}"
        conversation = Conversation.objects.get(direct_key=key)
        assert conversation.pk == results[0][1]
        assert sorted(conversation.memberships.values_list("user_id", flat=True)) == sorted([one.pk, other.pk])
    assert Conversation.objects.count() == 3
    assert Membership.objects.count() == 6


# --- groups ---------------------------------------------------------------------------------


def test_group_is_created_with_its_creator_as_owner_and_a_system_message(alice, bob, carol):
    data = {"kind": "group", "title": " Trip ", "member_ids": [bob.pk, carol.pk, alice.pk, bob.pk]}

    body = ok(call(api_for(alice), "post", CONVERSATIONS, data), 201)

    assert body["kind"] == "group"
    assert body["title"] == "Trip"
    assert body["role"] == "owner"
    assert body["peer"] is None
    assert body["member_count"] == 3
    assert body["last_seq"] == 1
    assert {m["user"]["id"]: m["role"] for m in body["members"]} == {
        alice.pk: "owner",
        bob.pk: "member",
        carol.pk: "member",
    }
    conversation = Conversation.objects.get()
    assert (conversation.kind, conversation.title, conversation.last_seq) == ("group", "Trip", 1)
    assert conversation.direct_key is None
    assert dict(conversation.memberships.values_list("user_id", "role")) == {
        alice.pk: "owner",
        bob.pk: "member",
        carol.pk: "member",
    }
    system = Message.objects.get()
    assert (system.seq, system.kind, system.sender_id, system.client_msg_id) == (1, "system", alice.pk, None)
    assert system.meta == {"event": "group_created", "title": "Trip", "user_ids": [bob.pk, carol.pk]}
    assert body["last_message"]["id"] == system.pk

    (seen,) = history(bob, conversation.pk)["messages"]
    assert (seen["seq"], seen["kind"], seen["meta"]["event"]) == (1, "system", "group_created")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        pytest.param({"kind": "group", "member_ids": []}, "title", id="missing-title"),
        pytest.param({"kind": "group", "title": "   "}, "title", id="blank-title"),
        pytest.param({"kind": "group", "title": "T" * 129}, "title", id="long-title"),
        pytest.param({"kind": "channel", "title": "T"}, "kind", id="unknown-kind"),
        pytest.param({"kind": "group", "title": "T", "member_ids": "bob"}, "member_ids", id="ids-not-a-list"),
    ],
)
def test_group_with_invalid_fields_is_refused(alice, data, field):
    error = error_of(call(api_for(alice), "post", CONVERSATIONS, data), 400, "invalid")

    assert list(error["fields"]) == [field]
    assert not Conversation.objects.exists()


def test_group_with_an_unknown_member_is_refused_naming_the_field(alice, bob):
    data = {"kind": "group", "title": "Trip", "member_ids": [bob.pk, bob.pk + 1000]}

    error = error_of(call(api_for(alice), "post", CONVERSATIONS, data), 400, "invalid")

    assert list(error["fields"]) == ["member_ids"]
    assert str(bob.pk + 1000) in error["fields"]["member_ids"][0]
    assert not Conversation.objects.exists()
    assert not Message.objects.exists()


def test_group_over_the_member_limit_is_full(alice, bob, carol, settings):
    settings.GROUP_MAX_MEMBERS = 2
    too_many = {"kind": "group", "title": "Trip", "member_ids": [bob.pk, carol.pk]}

    error_of(call(api_for(alice), "post", CONVERSATIONS, too_many), 409, "group_full")
    assert not Conversation.objects.exists()

    group = start_group(alice, bob)  # exactly at the limit

    error_of(call(api_for(alice), "post", conv_url(group, "members/"), {"user_ids": [carol.pk]}), 409, "group_full")
    assert not Membership.objects.filter(user=carol).exists()
    assert Conversation.objects.get(pk=group).last_seq == 1


# --- members -------------------------------------------------------------------------------


def test_admin_adds_a_member_who_sees_history_only_from_joining(alice, bob, carol):
    group = start_group(alice, bob)
    before = [send(alice, group, "before carol"), send(bob, group, "still before")]

    response = call(api_for(alice), "post", conv_url(group, "members/"), {"user_ids": [carol.pk]})

    members = ok(response, 201)
    assert {m["user"]["id"]: m["role"] for m in members} == {alice.pk: "owner", bob.pk: "member", carol.pk: "member"}
    newcomer = membership(carol, group)
    assert (newcomer.role, newcomer.joined_seq, newcomer.delivered_seq, newcomer.read_seq) == ("member", 3, 3, 3)
    system = Message.objects.get(conversation_id=group, seq=4)
    assert (system.kind, system.sender_id, system.meta) == (
        "system",
        alice.pk,
        {"event": "members_added", "user_ids": [carol.pk]},
    )
    assert Conversation.objects.get(pk=group).last_seq == 4

    assert seqs(history(carol, group)) == [4]
    assert history(carol, group, before_seq=4) == {"messages": [], "has_more": False}
    assert seqs(history(carol, group, after_seq=0)) == [4]
    assert seqs(history(bob, group)) == [1, 2, 3, 4]
    assert row_of(carol, group)["unread_count"] == 1
    # What came before joining cannot be reached by id either.
    old = before[0]["id"]
    error_of(call(api_for(carol), "put", msg_url(group, old, "reaction/"), {"emoji": "👍"}), 404, "not_found")
    reply = {"client_msg_id": "r", "body": "hi", "reply_to": old}
    error_of(call(api_for(carol), "post", conv_url(group, "messages/"), reply), 404, "not_found")

    assert send(carol, group, "hi all")["seq"] == 5


def test_adding_someone_already_in_the_group_changes_nothing(alice, bob):
    group = start_group(alice, bob)

    members = ok(call(api_for(alice), "post", conv_url(group, "members/"), {"user_ids": [bob.pk]}), 201)

    assert sorted(m["user"]["id"] for m in members) == sorted([alice.pk, bob.pk])
    assert Conversation.objects.get(pk=group).last_seq == 1
    assert Membership.objects.filter(conversation_id=group).count() == 2


def test_adding_an_unknown_user_is_refused(alice, bob):
    group = start_group(alice)

    response = call(api_for(alice), "post", conv_url(group, "members/"), {"user_ids": [bob.pk, bob.pk + 1000]})

    assert list(error_of(response, 400, "invalid")["fields"]) == ["user_ids"]
    assert list(Membership.objects.filter(conversation_id=group).values_list("user_id", flat=True)) == [alice.pk]
    assert Conversation.objects.get(pk=group).last_seq == 1


def test_a_plain_member_cannot_add_members(alice, bob, carol):
    group = start_group(alice, bob)

    response = call(api_for(bob), "post", conv_url(group, "members/"), {"user_ids": [carol.pk]})

    error_of(response, 403, "forbidden")
    assert not Membership.objects.filter(user=carol).exists()
    assert Conversation.objects.get(pk=group).last_seq == 1


def test_admin_removes_a_member_who_then_loses_all_access(alice, bob, carol):
    group = start_group(alice, bob, carol)
    mine = send(bob, group, "bob was here")

    response = call(api_for(alice), "delete", conv_url(group, f"members/{bob.pk}/"))

    assert response.status_code == 204, response.content
    assert membership(bob, group).left_at is not None
    system = Message.objects.get(conversation_id=group, seq=3)
    assert (system.kind, system.meta) == ("system", {"event": "member_removed", "user_ids": [bob.pk]})
    bob_api = api_for(bob)
    for method, url, data in [
        ("get", conv_url(group), None),
        ("get", conv_url(group, "messages/"), None),
        ("post", conv_url(group, "messages/"), {"client_msg_id": "late", "body": "hello?"}),
        ("post", conv_url(group, "read/"), {"seq": 3}),
        ("patch", msg_url(group, mine["id"]), {"body": "edited"}),
    ]:
        error_of(call(bob_api, method, url, data), 404, "not_found")
    assert group not in [c["id"] for c in listing(bob)]
    assert Message.objects.filter(conversation_id=group).count() == 3
    assert membership(bob, group).read_seq == 2
    carol_row = row_of(carol, group)
    assert carol_row["member_count"] == 2
    assert carol_row["last_message"]["meta"]["event"] == "member_removed"


def test_a_plain_member_cannot_remove_anyone_and_an_admin_cannot_remove_the_owner(alice, bob, carol):
    group = start_group(alice, bob, carol)

    error_of(call(api_for(bob), "delete", conv_url(group, f"members/{carol.pk}/")), 403, "forbidden")
    ok(call(api_for(alice), "patch", conv_url(group, f"members/{bob.pk}/"), {"role": "admin"}))
    error_of(call(api_for(bob), "delete", conv_url(group, f"members/{alice.pk}/")), 403, "forbidden")

    assert Membership.objects.filter(conversation_id=group, left_at__isnull=True).count() == 3
    assert membership(alice, group).role == "owner"


def test_removing_someone_who_is_not_a_member_is_not_found(alice, bob, carol):
    group = start_group(alice, bob)

    error_of(call(api_for(alice), "delete", conv_url(group, f"members/{carol.pk}/")), 404, "not_found")

    assert Conversation.objects.get(pk=group).last_seq == 1


def test_any_member_can_leave(alice, bob, carol):
    group = start_group(alice, bob, carol)

    response = call(api_for(carol), "delete", conv_url(group, f"members/{carol.pk}/"))

    assert response.status_code == 204, response.content
    assert membership(carol, group).left_at is not None
    last = Message.objects.get(conversation_id=group, seq=2)
    assert (last.kind, last.sender_id, last.meta) == (
        "system",
        carol.pk,
        {"event": "member_left", "user_ids": [carol.pk]},
    )
    error_of(api_for(carol).get(conv_url(group)), 404, "not_found")
    assert dict(
        Membership.objects.filter(conversation_id=group, left_at__isnull=True).values_list("user_id", "role")
    ) == {
        alice.pk: "owner",
        bob.pk: "member",
    }


def test_the_last_owner_leaving_hands_ownership_to_an_admin(alice, bob, carol):
    group = start_group(alice, bob, carol)  # bob is the longest-standing member, carol becomes admin
    ok(call(api_for(alice), "patch", conv_url(group, f"members/{carol.pk}/"), {"role": "admin"}))

    response = call(api_for(alice), "delete", conv_url(group, f"members/{alice.pk}/"))

    assert response.status_code == 204, response.content
    assert dict(
        Membership.objects.filter(conversation_id=group, left_at__isnull=True).values_list("user_id", "role")
    ) == {
        bob.pk: "member",
        carol.pk: "owner",
    }
    assert ok(api_for(carol).get(conv_url(group)))["role"] == "owner"


def test_the_last_owner_leaving_without_admins_hands_ownership_to_the_longest_standing_member(alice, bob, carol):
    group = start_group(alice, carol)  # carol joins first although bob's user id is lower
    ok(call(api_for(alice), "post", conv_url(group, "members/"), {"user_ids": [bob.pk]}), 201)

    response = call(api_for(alice), "delete", conv_url(group, f"members/{alice.pk}/"))

    assert response.status_code == 204, response.content
    assert dict(
        Membership.objects.filter(conversation_id=group, left_at__isnull=True).values_list("user_id", "role")
    ) == {
        bob.pk: "member",
        carol.pk: "owner",
    }
    # The new owner can run the group.
    ok(call(api_for(carol), "patch", conv_url(group, f"members/{bob.pk}/"), {"role": "admin"}))


def test_owner_grants_roles_and_an_admin_cannot_make_owners(alice, bob, carol):
    group = start_group(alice, bob, carol)

    promoted = ok(call(api_for(alice), "patch", conv_url(group, f"members/{bob.pk}/"), {"role": "admin"}))

    assert promoted["user"]["id"] == bob.pk
    assert promoted["role"] == "admin"
    assert membership(bob, group).role == "admin"
    system = Message.objects.get(conversation_id=group, seq=2)
    assert system.meta == {"event": "role_changed", "user_ids": [bob.pk], "role": "admin"}

    error_of(call(api_for(bob), "patch", conv_url(group, f"members/{carol.pk}/"), {"role": "owner"}), 403, "forbidden")
    error_of(call(api_for(bob), "patch", conv_url(group, f"members/{alice.pk}/"), {"role": "member"}), 403, "forbidden")
    assert membership(carol, group).role == "member"
    assert membership(alice, group).role == "owner"

    # Admins may make admins; plain members may not change roles at all.
    error_of(
        call(api_for(carol), "patch", conv_url(group, f"members/{carol.pk}/"), {"role": "admin"}), 403, "forbidden"
    )
    assert (
        ok(call(api_for(bob), "patch", conv_url(group, f"members/{carol.pk}/"), {"role": "admin"}))["role"] == "admin"
    )
    assert membership(carol, group).role == "admin"
    error = error_of(call(api_for(alice), "patch", conv_url(group, f"members/{bob.pk}/"), {"role": "king"}), 400)
    assert list(error["fields"]) == ["role"]
    assert Conversation.objects.get(pk=group).last_seq == 3


def test_the_last_owner_cannot_step_down_without_naming_another_owner(alice, bob, carol):
    group = start_group(alice, bob, carol)
    ok(call(api_for(alice), "patch", conv_url(group, f"members/{carol.pk}/"), {"role": "admin"}))

    for role in ["member", "admin"]:
        response = call(api_for(alice), "patch", conv_url(group, f"members/{alice.pk}/"), {"role": role})
        error_of(response, 403, "forbidden")
    roles = dict(Membership.objects.filter(conversation_id=group).values_list("user_id", "role"))
    assert roles == {alice.pk: "owner", bob.pk: "member", carol.pk: "admin"}
    assert Conversation.objects.get(pk=group).last_seq == 2  # no role_changed message for a change not made

    ok(call(api_for(alice), "patch", conv_url(group, f"members/{bob.pk}/"), {"role": "owner"}))
    stepped_down = ok(call(api_for(alice), "patch", conv_url(group, f"members/{alice.pk}/"), {"role": "member"}))

    assert stepped_down["role"] == "member"
    roles = dict(Membership.objects.filter(conversation_id=group).values_list("user_id", "role"))
    assert roles == {alice.pk: "member", bob.pk: "owner", carol.pk: "admin"}


def test_direct_chats_have_no_members_to_manage(alice, bob, carol):
    chat = start_direct(alice, bob)
    client = api_for(alice)

    error_of(call(client, "post", conv_url(chat, "members/"), {"user_ids": [carol.pk]}), 403, "forbidden")
    error_of(call(client, "delete", conv_url(chat, f"members/{bob.pk}/")), 403, "forbidden")
    error_of(call(client, "delete", conv_url(chat, f"members/{alice.pk}/")), 403, "forbidden")
    error_of(call(client, "patch", conv_url(chat, f"members/{bob.pk}/"), {"role": "admin"}), 403, "forbidden")

    assert dict(
        Membership.objects.filter(conversation_id=chat, left_at__isnull=True).values_list("user_id", "role")
    ) == {
        alice.pk: "member",
        bob.pk: "member",
    }
    assert not Message.objects.exists()


# --- the gate: non-members and anonymous callers ----------------------------------------------

ROUTES: list[tuple[str, str, Any]] = [
    ("get", "{c}", None),
    ("get", "{c}messages/", None),
    ("post", "{c}messages/", {"client_msg_id": "intruder", "body": "hi"}),
    ("patch", "{c}messages/{m}/", {"body": "edited"}),
    ("delete", "{c}messages/{m}/", None),
    ("put", "{c}messages/{m}/reaction/", {"emoji": "👍"}),
    ("delete", "{c}messages/{m}/reaction/", None),
    ("get", "{c}messages/{m}/info/", None),
    ("post", "{c}read/", {"seq": 1}),
    ("post", "{c}delivered/", {"seq": 1}),
    ("post", "{c}members/", {"user_ids": ["{u}"]}),
    ("delete", "{c}members/{u}/", None),
    ("patch", "{c}members/{u}/", {"role": "admin"}),
]


def fill(template: str, conversation_id: int, message_id: int, user_id: int) -> str:
    return template.format(c=conv_url(conversation_id), m=message_id, u=user_id)


def fill_data(data: Any, user_id: int) -> Any:
    if isinstance(data, dict) and data.get("user_ids") == ["{u}"]:
        return {"user_ids": [user_id]}
    return data


def database_state() -> list[Any]:
    return [
        list(Conversation.objects.order_by("pk").values_list("pk", "last_seq", "version")),
        list(Membership.objects.order_by("pk").values_list("pk", "role", "left_at", "delivered_seq", "read_seq")),
        list(Message.objects.order_by("pk").values_list("pk", "body", "version", "deleted_at")),
        list(Reaction.objects.order_by("pk").values_list("pk", "emoji")),
    ]


@pytest.mark.parametrize(("method", "template", "data"), ROUTES, ids=[f"{m}-{t}" for m, t, _ in ROUTES])
def test_non_members_get_the_same_not_found_as_for_a_missing_conversation(alice, bob, carol, method, template, data):
    group = start_group(alice, bob)
    message = send(alice, group, "private")
    ok(call(api_for(bob), "put", msg_url(group, message["id"], "reaction/"), {"emoji": "👍"}))
    before = database_state()
    missing = Conversation.objects.order_by("-pk").values_list("pk", flat=True)[0] + 1000

    hidden = call(api_for(carol), method, fill(template, group, message["id"], bob.pk), fill_data(data, carol.pk))
    absent = call(api_for(carol), method, fill(template, missing, message["id"], bob.pk), fill_data(data, carol.pk))

    error_of(hidden, 404, "not_found")
    error_of(absent, 404, "not_found")
    assert hidden.json() == absent.json()
    assert database_state() == before


@pytest.mark.parametrize(
    ("method", "template", "data"),
    [("get", CONVERSATIONS, None), ("post", CONVERSATIONS, {"kind": "direct", "user_id": 1}), *ROUTES],
    ids=["list", "create", *[f"{m}-{t}" for m, t, _ in ROUTES]],
)
def test_anonymous_callers_are_not_authenticated(alice, bob, method, template, data):
    group = start_group(alice, bob)
    message = send(alice, group)
    before = database_state()

    url = template if template == CONVERSATIONS else fill(template, group, message["id"], bob.pk)
    response = call(api_for(None), method, url, fill_data(data, bob.pk))

    error_of(response, 401, "not_authenticated")
    assert database_state() == before


# --- sending ----------------------------------------------------------------------------------


def test_send_returns_the_stored_message_and_moves_the_conversation_on(alice, bob):
    chat = start_direct(alice, bob)
    started = timezone.now()

    body = send(alice, chat, "Hello, Bob")

    message = Message.objects.get()
    assert body.pop("attachments", []) == []
    assert body == {
        "id": message.pk,
        "conversation_id": chat,
        "seq": 1,
        "version": 1,
        "sender_id": alice.pk,
        "client_msg_id": message.client_msg_id,
        "kind": "text",
        "body": "Hello, Bob",
        "meta": None,
        "reply_to": None,
        "created_at": body["created_at"],
        "edited_at": None,
        "deleted": False,
        "hidden": False,
        "reactions": [],
    }
    assert datetime.fromisoformat(body["created_at"]) == message.created_at
    assert started <= message.created_at <= timezone.now()
    assert (message.body, message.sender_id, message.seq) == ("Hello, Bob", alice.pk, 1)
    conversation = Conversation.objects.get(pk=chat)
    assert (conversation.last_seq, conversation.version) == (1, 1)
    assert conversation.last_message_at is not None
    assert started <= conversation.last_message_at <= timezone.now()
    assert row_of(bob, chat)["last_message"]["body"] == "Hello, Bob"


def test_a_retried_send_returns_the_original_message(alice, bob):
    chat = start_direct(alice, bob)
    data = {"client_msg_id": "phone-1", "body": "once"}
    first = ok(call(api_for(alice), "post", conv_url(chat, "messages/"), data), 201)

    retry = call(api_for(alice), "post", conv_url(chat, "messages/"), {**data, "body": "twice?"})

    assert ok(retry, 200) == first
    assert list(Message.objects.values_list("body", flat=True)) == ["once"]
    assert Conversation.objects.get(pk=chat).last_seq == 1
    # The key is the sender's own: bob may use the same one.
    theirs = ok(call(api_for(bob), "post", conv_url(chat, "messages/"), data), 201)
    assert (theirs["seq"], theirs["sender_id"]) == (2, bob.pk)
    assert Message.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicate_sends_store_one_message(alice, bob):
    chat = start_direct(alice, bob)
    rounds = 4
    for n in range(rounds):
        data = {"client_msg_id": f"race-{n}", "body": f"race {n}"}

        def post(data: dict[str, str] = data) -> tuple[int, int]:
            response = call(api_for(alice), "post", conv_url(chat, "messages/"), data)
            return response.status_code, response.json()["id"]

        results = run_together(post, post)

        assert sorted(status for status, _ in results) == [200, 201]
        assert results[0][1] == results[1][1]
        assert Message.objects.filter(client_msg_id=f"race-{n}").count() == 1
    # The loser's seq was rolled back: no gaps.
    assert list(Message.objects.order_by("seq").values_list("seq", flat=True)) == list(range(1, rounds + 1))
    assert Conversation.objects.get(pk=chat).last_seq == rounds


def test_a_body_over_the_limit_is_refused_and_nothing_is_stored(alice, bob, settings):
    chat = start_direct(alice, bob)
    url = conv_url(chat, "messages/")
    assert settings.MESSAGE_MAX_CHARS == 65_536

    error = error_of(call(api_for(alice), "post", url, {"client_msg_id": "big", "body": "x" * 65_537}), 400, "invalid")

    assert list(error["fields"]) == ["body"]
    assert not Message.objects.exists()
    assert Conversation.objects.get(pk=chat).last_seq == 0
    assert send(alice, chat, "x" * 65_536)["seq"] == 1

    settings.MESSAGE_MAX_CHARS = 10
    error = error_of(call(api_for(alice), "post", url, {"client_msg_id": "eleven", "body": "x" * 11}), 400, "invalid")
    assert list(error["fields"]) == ["body"]
    assert Message.objects.count() == 1


@pytest.mark.parametrize(
    ("data", "field"),
    [
        pytest.param({"client_msg_id": "a", "body": ""}, "body", id="empty-body"),
        pytest.param({"client_msg_id": "a", "body": " \n\t "}, "body", id="blank-body"),
        pytest.param({"client_msg_id": "a"}, "body", id="no-body"),
        pytest.param({"client_msg_id": "a", "body": ["hi"]}, "body", id="body-not-text"),
        pytest.param({"body": "hi"}, "client_msg_id", id="no-client-msg-id"),
        pytest.param({"client_msg_id": "", "body": "hi"}, "client_msg_id", id="empty-client-msg-id"),
        pytest.param({"client_msg_id": "k" * 65, "body": "hi"}, "client_msg_id", id="long-client-msg-id"),
        pytest.param({"client_msg_id": "a", "body": "hi", "reply_to": "x"}, "reply_to", id="reply-to-not-an-id"),
    ],
)
def test_invalid_sends_are_refused(alice, bob, data, field):
    chat = start_direct(alice, bob)

    error = error_of(call(api_for(alice), "post", conv_url(chat, "messages/"), data), 400, "invalid")

    assert list(error["fields"]) == [field]
    assert not Message.objects.exists()
    assert Conversation.objects.get(pk=chat).last_seq == 0


def test_a_client_msg_id_of_64_characters_is_accepted(alice, bob):
    chat = start_direct(alice, bob)

    body = ok(call(api_for(alice), "post", conv_url(chat, "messages/"), {"client_msg_id": "k" * 64, "body": "hi"}), 201)

    assert body["client_msg_id"] == "k" * 64
    assert Message.objects.get().client_msg_id == "k" * 64


def test_reply_to_a_message_of_this_chat_only(alice, bob, carol):
    chat = start_direct(alice, bob)
    elsewhere = start_direct(alice, carol)
    original = send(bob, chat, "question")
    foreign = send(carol, elsewhere, "secret")

    reply = send(alice, chat, "answer", reply_to=original["id"])

    assert reply["reply_to"] == original["id"]
    assert Message.objects.get(pk=reply["id"]).reply_to_id == original["id"]
    data = {"client_msg_id": "r2", "body": "leak?", "reply_to": foreign["id"]}
    error_of(call(api_for(alice), "post", conv_url(chat, "messages/"), data), 404, "not_found")
    assert Message.objects.filter(conversation_id=chat).count() == 2
    assert Conversation.objects.get(pk=chat).last_seq == 2


def test_seq_is_gap_free_across_senders(alice, bob, carol):
    group = start_group(alice, bob, carol)
    senders = [alice, bob, carol, carol, bob, alice, bob, carol, alice]
    latest = None

    sent_last = timezone.now()
    for i, sender in enumerate(senders):
        sent_last = timezone.now()
        latest = send(sender, group, f"message {i}")

    assert latest is not None
    rows = list(
        Message.objects.filter(conversation_id=group).order_by("seq").values_list("seq", "version", "sender_id")
    )
    assert [seq for seq, _, _ in rows] == list(range(1, len(senders) + 2))
    assert [version for _, version, _ in rows] == list(range(1, len(senders) + 2))
    assert [sender for _, _, sender in rows[1:]] == [u.pk for u in senders]
    conversation = Conversation.objects.get(pk=group)
    assert conversation.last_seq == latest["seq"] == len(senders) + 1
    assert conversation.last_message_at is not None
    assert sent_last <= conversation.last_message_at <= timezone.now()
    assert seqs(history(carol, group)) == list(range(1, len(senders) + 2))


# --- history -----------------------------------------------------------------------------------


def test_history_pages_run_oldest_first_in_both_directions(alice, bob):
    chat = start_direct(alice, bob)
    for i in range(25):
        quick_send(alice if i % 2 else bob, chat, f"m{i + 1}")

    latest = history(bob, chat, limit=10)
    older = history(bob, chat, limit=10, before_seq=16)
    oldest = history(bob, chat, limit=10, before_seq=6)
    newer = history(bob, chat, limit=10, after_seq=5)
    newest = history(bob, chat, limit=10, after_seq=20)
    everything = history(bob, chat)

    assert (seqs(latest), latest["has_more"]) == (list(range(16, 26)), True)
    assert [m["body"] for m in latest["messages"]] == [f"m{i}" for i in range(16, 26)]
    assert (seqs(older), older["has_more"]) == (list(range(6, 16)), True)
    assert (seqs(oldest), oldest["has_more"]) == ([1, 2, 3, 4, 5], False)
    assert (seqs(newer), newer["has_more"]) == (list(range(6, 16)), True)
    assert (seqs(newest), newest["has_more"]) == ([21, 22, 23, 24, 25], False)
    assert (seqs(everything), everything["has_more"]) == (list(range(1, 26)), False)
    assert history(bob, chat, after_seq=25) == {"messages": [], "has_more": False}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        pytest.param({"limit": 101}, "limit", id="limit-over-100"),
        pytest.param({"limit": 0}, "limit", id="limit-zero"),
        pytest.param({"limit": "ten"}, "limit", id="limit-not-a-number"),
        pytest.param({"before_seq": -1}, "before_seq", id="negative-before"),
        pytest.param({"after_seq": "x"}, "after_seq", id="after-not-a-number"),
    ],
)
def test_invalid_history_queries_are_refused(alice, bob, params, field):
    chat = start_direct(alice, bob)
    quick_send(alice, chat)

    error = error_of(api_for(bob).get(conv_url(chat, "messages/"), params), 400, "invalid")

    assert list(error["fields"]) == [field]


@pytest.mark.parametrize("limit", [5, 100])
def test_history_costs_a_fixed_number_of_queries(alice, bob, carol, limit, django_assert_max_num_queries):
    group = start_group(alice, bob, carol)
    for i in range(40):
        message = quick_send([alice, bob, carol][i % 3], group, f"m{i}")
        services.set_reaction(user=bob, conversation_id=group, message_id=message.pk, emoji="👍")
        services.set_reaction(user=carol, conversation_id=group, message_id=message.pk, emoji="❤️")
    client = api_for(alice)

    with django_assert_max_num_queries(6):
        response = client.get(conv_url(group, "messages/"), {"limit": limit})

    page = ok(response)
    assert len(page["messages"]) == min(limit, 41)
    assert page["messages"][-1]["reactions"] == [
        {"user_id": bob.pk, "emoji": "👍"},
        {"user_id": carol.pk, "emoji": "❤️"},
    ]


# --- editing and deleting --------------------------------------------------------------------------


def test_the_sender_edits_within_the_window(alice, bob):
    chat = start_direct(alice, bob)
    sent = send(alice, chat, "helo")

    edited = ok(call(api_for(alice), "patch", msg_url(chat, sent["id"]), {"body": "hello"}))

    assert (edited["id"], edited["seq"], edited["body"]) == (sent["id"], 1, "hello")
    assert edited["edited_at"] is not None
    assert edited["version"] > sent["version"]
    message = Message.objects.get()
    assert (message.body, message.version) == ("hello", edited["version"])
    assert message.edited_at == datetime.fromisoformat(edited["edited_at"])
    conversation = Conversation.objects.get(pk=chat)
    assert (conversation.last_seq, conversation.version) == (1, edited["version"])
    assert [m["body"] for m in history(bob, chat)["messages"]] == ["hello"]


def test_nobody_else_edits_or_deletes_a_message(alice, bob):
    chat = start_direct(alice, bob)
    sent = send(alice, chat, "mine")

    error_of(call(api_for(bob), "patch", msg_url(chat, sent["id"]), {"body": "yours"}), 403, "not_your_message")
    error_of(call(api_for(bob), "delete", msg_url(chat, sent["id"])), 403, "not_your_message")

    message = Message.objects.get()
    assert (message.body, message.version, message.edited_at, message.deleted_at) == ("mine", 1, None, None)


def test_editing_after_the_window_is_refused(alice, bob, settings):
    chat = start_direct(alice, bob)
    inside, outside = send(alice, chat, "inside"), send(alice, chat, "outside")
    window = timedelta(seconds=settings.MESSAGE_EDIT_WINDOW_SECONDS)
    now = timezone.now()
    Message.objects.filter(pk=inside["id"]).update(created_at=now - window + timedelta(minutes=1))
    Message.objects.filter(pk=outside["id"]).update(created_at=now - window - timedelta(seconds=1))

    ok(call(api_for(alice), "patch", msg_url(chat, inside["id"]), {"body": "inside, edited"}))
    response = call(api_for(alice), "patch", msg_url(chat, outside["id"]), {"body": "outside, edited"})

    error_of(response, 403, "edit_window_closed")
    assert Message.objects.get(pk=outside["id"]).body == "outside"
    assert Message.objects.get(pk=inside["id"]).body == "inside, edited"

    settings.MESSAGE_EDIT_WINDOW_SECONDS = 30
    error_of(call(api_for(alice), "patch", msg_url(chat, inside["id"]), {"body": "again"}), 403, "edit_window_closed")


def test_an_edit_with_a_blank_body_is_refused(alice, bob):
    chat = start_direct(alice, bob)
    sent = send(alice, chat, "keep me")

    error = error_of(call(api_for(alice), "patch", msg_url(chat, sent["id"]), {"body": "  "}), 400, "invalid")

    assert list(error["fields"]) == ["body"]
    assert Message.objects.get().body == "keep me"


def test_deleting_leaves_a_tombstone_without_text_or_reactions(alice, bob):
    chat = start_direct(alice, bob)
    sent = send(alice, chat, "oops")
    send(bob, chat, "after")
    ok(call(api_for(bob), "put", msg_url(chat, sent["id"], "reaction/"), {"emoji": "😮"}))

    deleted = ok(call(api_for(alice), "delete", msg_url(chat, sent["id"])))

    assert (deleted["id"], deleted["seq"], deleted["deleted"], deleted["body"], deleted["reactions"]) == (
        sent["id"],
        1,
        True,
        "",
        [],
    )
    assert deleted["version"] == Conversation.objects.get(pk=chat).version
    row = Message.objects.get(pk=sent["id"])
    assert row.deleted_at is not None
    assert row.body == ""
    assert not Reaction.objects.exists()
    assert [(m["seq"], m["deleted"], m["body"]) for m in history(bob, chat)["messages"]] == [
        (1, True, ""),
        (2, False, "after"),
    ]

    error_of(call(api_for(alice), "delete", msg_url(chat, sent["id"])), 404, "not_found")
    error_of(call(api_for(alice), "patch", msg_url(chat, sent["id"]), {"body": "back"}), 404, "not_found")
    error_of(call(api_for(bob), "put", msg_url(chat, sent["id"], "reaction/"), {"emoji": "👍"}), 404, "not_found")
    assert Message.objects.get(pk=sent["id"]).body == ""
    assert not Reaction.objects.exists()


def test_system_messages_cannot_be_edited_or_deleted(alice, bob):
    group = start_group(alice, bob)
    system = Message.objects.get(conversation_id=group)

    error_of(call(api_for(alice), "patch", msg_url(group, system.pk), {"body": "rewritten"}), 404, "not_found")
    error_of(call(api_for(alice), "delete", msg_url(group, system.pk)), 404, "not_found")

    system.refresh_from_db()
    assert (system.body, system.deleted_at, system.version) == ("", None, 1)


# --- reactions -------------------------------------------------------------------------------------


def test_reactions_are_set_replaced_and_removed(alice, bob):
    chat = start_direct(alice, bob)
    sent = send(alice, chat, "news")
    url = msg_url(chat, sent["id"], "reaction/")

    first = ok(call(api_for(bob), "put", url, {"emoji": "👍"}))
    assert first["reactions"] == [{"user_id": bob.pk, "emoji": "👍"}]
    assert first["version"] > sent["version"]

    second = ok(call(api_for(bob), "put", url, {"emoji": "❤️"}))
    assert second["reactions"] == [{"user_id": bob.pk, "emoji": "❤️"}]
    assert list(Reaction.objects.values_list("user_id", "emoji")) == [(bob.pk, "❤️")]

    both = ok(call(api_for(alice), "put", url, {"emoji": "😂"}))
    assert sorted((r["user_id"], r["emoji"]) for r in both["reactions"]) == sorted([(bob.pk, "❤️"), (alice.pk, "😂")])
    assert Reaction.objects.count() == 2

    removed = ok(call(api_for(bob), "delete", url))
    assert removed["reactions"] == [{"user_id": alice.pk, "emoji": "😂"}]
    assert list(Reaction.objects.values_list("user_id", "emoji")) == [(alice.pk, "😂")]
    assert removed["version"] == Conversation.objects.get(pk=chat).version

    again = ok(call(api_for(bob), "delete", url))  # nothing to remove: nothing changes
    assert again["version"] == removed["version"]
    assert Conversation.objects.get(pk=chat).version == removed["version"]


@pytest.mark.parametrize("emoji", ["ok", "", "👍" * 17, ":+1:"])
def test_a_reaction_that_is_not_one_emoji_is_refused(alice, bob, emoji):
    chat = start_direct(alice, bob)
    sent = send(alice, chat)

    error = error_of(
        call(api_for(bob), "put", msg_url(chat, sent["id"], "reaction/"), {"emoji": emoji}), 400, "invalid"
    )

    assert list(error["fields"]) == ["emoji"]
    assert not Reaction.objects.exists()
    assert Conversation.objects.get(pk=chat).version == sent["version"]


# --- receipts ----------------------------------------------------------------------------------------


def test_read_cursor_moves_forward_only_and_stops_at_the_last_message(alice, bob):
    chat = start_direct(alice, bob)
    for i in range(5):
        quick_send(alice, chat, f"m{i}")
    read_url = conv_url(chat, "read/")

    body = ok(call(api_for(bob), "post", read_url, {"seq": 3}))

    assert body == {"conversation_id": chat, "user_id": bob.pk, "delivered_seq": 3, "read_seq": 3}
    cursors = membership(bob, chat)
    assert (cursors.delivered_seq, cursors.read_seq) == (3, 3)
    assert row_of(bob, chat)["unread_count"] == 2

    back = ok(call(api_for(bob), "post", read_url, {"seq": 1}))
    assert (back["delivered_seq"], back["read_seq"]) == (3, 3)
    cursors.refresh_from_db()
    assert (cursors.delivered_seq, cursors.read_seq) == (3, 3)

    beyond = ok(call(api_for(bob), "post", read_url, {"seq": 99}))
    assert (beyond["delivered_seq"], beyond["read_seq"]) == (5, 5)
    cursors.refresh_from_db()
    assert (cursors.delivered_seq, cursors.read_seq) == (5, 5)
    assert row_of(bob, chat)["unread_count"] == 0


def test_delivered_cursor_moves_only_delivered(alice, bob):
    chat = start_direct(alice, bob)
    for i in range(5):
        quick_send(alice, chat, f"m{i}")

    body = ok(call(api_for(bob), "post", conv_url(chat, "delivered/"), {"seq": 4}))

    assert (body["delivered_seq"], body["read_seq"]) == (4, 0)
    ok(call(api_for(bob), "post", conv_url(chat, "delivered/"), {"seq": 2}))
    cursors = membership(bob, chat)
    assert (cursors.delivered_seq, cursors.read_seq) == (4, 0)
    assert row_of(bob, chat)["unread_count"] == 5

    read = ok(call(api_for(bob), "post", conv_url(chat, "read/"), {"seq": 2}))
    assert (read["delivered_seq"], read["read_seq"]) == (4, 2)
    cursors.refresh_from_db()
    assert (cursors.delivered_seq, cursors.read_seq) == (4, 2)


@pytest.mark.parametrize("seq", [-1, "three", None, 1.5])
def test_an_invalid_cursor_is_refused(alice, bob, seq):
    chat = start_direct(alice, bob)
    quick_send(alice, chat)

    error = error_of(call(api_for(bob), "post", conv_url(chat, "read/"), {"seq": seq}), 400, "invalid")

    assert list(error["fields"]) == ["seq"]
    assert membership(bob, chat).read_seq == 0


def test_unread_count_follows_the_read_cursor_and_own_sends_count_as_read(alice, bob):
    chat = start_direct(alice, bob)
    for i in range(3):
        send(alice, chat, f"a{i}")

    assert row_of(alice, chat)["unread_count"] == 0
    assert row_of(bob, chat)["unread_count"] == 3
    assert (membership(alice, chat).read_seq, membership(alice, chat).delivered_seq) == (3, 3)

    send(bob, chat, "b")  # replying reads what came before

    assert row_of(bob, chat)["unread_count"] == 0
    assert row_of(alice, chat)["unread_count"] == 1
    assert membership(bob, chat).read_seq == 4


def test_your_own_group_actions_are_not_unread_for_you(alice, bob, carol):
    group = start_group(alice, bob)

    assert row_of(alice, group)["unread_count"] == 0
    assert row_of(bob, group)["unread_count"] == 1

    ok(call(api_for(alice), "post", conv_url(group, "members/"), {"user_ids": [carol.pk]}), 201)

    assert row_of(alice, group)["unread_count"] == 0
    assert row_of(bob, group)["unread_count"] == 2
    assert row_of(carol, group)["unread_count"] == 1
    assert membership(alice, group).read_seq == 2


# --- message info ---------------------------------------------------------------------------------


def test_message_info_follows_the_other_members_cursors(alice, bob, carol, dave):
    group = start_group(alice, bob, carol)
    sent = send(alice, group, "did you get this?")
    url = msg_url(group, sent["id"], "info/")

    assert ok(api_for(alice).get(url)) == {
        "message_id": sent["id"],
        "members": [
            {"user_id": bob.pk, "delivered": False, "read": False},
            {"user_id": carol.pk, "delivered": False, "read": False},
        ],
    }

    ok(call(api_for(bob), "post", conv_url(group, "delivered/"), {"seq": sent["seq"]}))
    ok(call(api_for(carol), "post", conv_url(group, "read/"), {"seq": sent["seq"]}))
    ok(call(api_for(alice), "post", conv_url(group, "members/"), {"user_ids": [dave.pk]}), 201)

    assert ok(api_for(alice).get(url))["members"] == [
        {"user_id": bob.pk, "delivered": True, "read": False},
        {"user_id": carol.pk, "delivered": True, "read": True},
    ]
    error_of(api_for(bob).get(url), 403, "not_your_message")


# --- the conversation list -----------------------------------------------------------------------


def test_the_list_is_sorted_by_activity_with_titles_peers_and_counts(alice, bob, carol):
    with_bob = start_direct(alice, bob)
    with_carol = start_direct(alice, carol)
    group = start_group(alice, bob, carol, title="Book club")
    quick_send(bob, with_bob, "first")
    quick_send(carol, with_carol, "second")
    quick_send(bob, group, "third")

    assert [c["id"] for c in listing(alice)] == [group, with_carol, with_bob]

    quick_send(bob, with_bob, "now the newest")

    rows = listing(alice)
    assert [c["id"] for c in rows] == [with_bob, group, with_carol]
    direct, grouped = rows[0], rows[1]
    assert direct["kind"] == "direct"
    assert direct["title"] == "Bob"
    assert direct["peer"] == {"id": bob.pk, "username": "bob", "display_name": "Bob"}
    assert direct["last_message"]["body"] == "now the newest"
    assert direct["last_message"]["sender_id"] == bob.pk
    assert (direct["unread_count"], direct["member_count"], direct["last_seq"]) == (2, 2, 2)
    assert direct["last_message_at"] is not None
    assert grouped["title"] == "Book club"
    assert grouped["peer"] is None
    assert grouped["last_message"]["body"] == "third"
    assert (grouped["unread_count"], grouped["member_count"], grouped["role"]) == (1, 3, "owner")
    assert [c["title"] for c in listing(carol)] == ["Book club", "Alice"]


def test_a_chat_without_messages_does_not_sit_above_active_chats(alice, bob, carol):
    active = start_direct(alice, bob)
    quick_send(bob, active, "hi")
    Conversation.objects.filter(pk=active).update(last_message_at=timezone.now() - timedelta(days=30))
    empty = start_direct(alice, carol)

    assert [c["id"] for c in listing(alice)] == [active, empty]
    assert row_of(alice, empty)["last_message"] is None


def test_the_list_costs_a_fixed_number_of_queries(alice, django_assert_max_num_queries):
    people = [make_user(f"user{i}", f"User {i}") for i in range(12)]
    for i in range(10):
        chat = services.get_or_create_direct(user=alice, other_user_id=people[i].pk)[0]
        message = quick_send(people[i], chat.pk, f"direct {i}")
        services.set_reaction(user=alice, conversation_id=chat.pk, message_id=message.pk, emoji="👍")
    for i in range(10):
        group = services.create_group(creator=alice, title=f"Group {i}", member_ids=[people[i].pk, people[i + 2].pk])
        message = quick_send(people[i + 2], group.pk, f"group {i}")
        services.set_reaction(user=people[i], conversation_id=group.pk, message_id=message.pk, emoji="🎉")
    client = api_for(alice)

    with django_assert_max_num_queries(8):
        response = client.get(CONVERSATIONS)

    rows = ok(response)
    assert len(rows) == 20
    assert sorted(c["kind"] for c in rows) == ["direct"] * 10 + ["group"] * 10
    assert all(c["last_message"] is not None and c["last_message"]["reactions"] for c in rows)
    assert {c["title"] for c in rows if c["kind"] == "direct"} == {f"User {i}" for i in range(10)}
    assert all(c["member_count"] == (2 if c["kind"] == "direct" else 3) for c in rows)


def test_the_list_limit_is_honoured(alice, bob, carol):
    start_direct(alice, bob)
    start_direct(alice, carol)

    assert len(ok(api_for(alice).get(CONVERSATIONS, {"limit": 1}))) == 1
    assert len(ok(api_for(alice).get(CONVERSATIONS, {"limit": "many"}))) == 2


# --- the schema ------------------------------------------------------------------------------------


def test_the_schema_validates_and_documents_the_conversation_paths(client):
    response = client.get("/api/schema/", {"format": "json"})

    assert response.status_code == 200
    schema = response.json()
    validate(schema)
    expected = {
        "/api/v1/conversations/": {"get", "post"},
        "/api/v1/conversations/{conversation_id}/": {"get"},
        "/api/v1/conversations/{conversation_id}/members/": {"post"},
        "/api/v1/conversations/{conversation_id}/members/{user_id}/": {"delete", "patch"},
        "/api/v1/conversations/{conversation_id}/messages/": {"get", "post"},
        "/api/v1/conversations/{conversation_id}/messages/{message_id}/": {"patch", "delete"},
        "/api/v1/conversations/{conversation_id}/messages/{message_id}/reaction/": {"put", "delete"},
        "/api/v1/conversations/{conversation_id}/messages/{message_id}/info/": {"get"},
        "/api/v1/conversations/{conversation_id}/read/": {"post"},
        "/api/v1/conversations/{conversation_id}/delivered/": {"post"},
    }
    for path, methods in expected.items():
        assert path in schema["paths"], path
        assert set(schema["paths"][path]) >= methods, (path, set(schema["paths"][path]))
        for method in methods:
            assert schema["paths"][path][method]["responses"], (path, method)
    history_params = {
        p["name"] for p in schema["paths"]["/api/v1/conversations/{conversation_id}/messages/"]["get"]["parameters"]
    }
    assert {"limit", "before_seq", "after_seq"} <= history_params
