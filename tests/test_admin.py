"""The Django admin serves users, devices and conversations to staff only."""

from __future__ import annotations

import pytest
from django.test import Client

from accounts.models import User
from conversations import services
from tests.conftest import PASSWORD, app_login


@pytest.fixture
def admin_client(db: None) -> Client:
    User.objects.create_superuser(username="root", password=PASSWORD)
    client = Client()
    assert client.login(username="root", password=PASSWORD)
    return client


@pytest.mark.parametrize(
    ("path", "shows"),
    [
        ("/admin/accounts/user/", b"alice"),
        ("/admin/accounts/device/", b"test phone"),
        ("/admin/conversations/conversation/", b"Direct"),
        ("/admin/conversations/message/", b"alice"),
    ],
)
def test_admin_lists_load_for_staff(admin_client: Client, alice: User, bob: User, path: str, shows: bytes) -> None:
    app_login(alice)
    chat, _ = services.get_or_create_direct(user=alice, other_user_id=bob.pk)
    services.send_message(sender=alice, conversation_id=chat.pk, client_msg_id="a", body="hello admin")
    response = admin_client.get(path)
    assert response.status_code == 200
    assert shows in response.content


def test_admin_refuses_non_staff(alice: User) -> None:
    client = Client()
    client.force_login(alice)
    response = client.get("/admin/accounts/user/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
