"""The /ws/ gateway over a real daphne process and a real WebSocket client."""

from __future__ import annotations

import threading

import httpx
import pytest
from django.test import Client

from accounts.models import Device, User
from tests.conftest import PASSWORD, LiveServer, app_login
from tests.wsclient import WSClient, refused_close_code, run

pytestmark = pytest.mark.django_db(transaction=True)


def browser_session_cookie(user: User) -> str:
    """Log a browser in through the real login page; return its Cookie header."""
    client = Client()
    response = client.post("/login/", {"username": user.username, "password": PASSWORD})
    assert response.status_code == 302
    return f"sessionid={client.cookies['sessionid'].value}"


def test_app_with_bearer_token_and_no_origin_gets_hello(live_server_asgi: LiveServer, alice: User) -> None:
    login = app_login(alice)

    async def scenario() -> dict[str, object]:
        client = await WSClient.connect(live_server_asgi.ws_url, token=login.access, expect_hello=False)
        hello = await client.expect("hello")
        await client.close()
        return hello

    hello = run(scenario())
    assert hello["user_id"] == alice.pk
    assert hello["device_id"] == login.device.pk
    assert hello["protocol"] == 1


def test_browser_with_session_cookie_and_own_origin_gets_hello(live_server_asgi: LiveServer, alice: User) -> None:
    cookie = browser_session_cookie(alice)
    web_device = Device.objects.get(user=alice, platform=Device.Platform.WEB)

    async def scenario() -> dict[str, object]:
        client = await WSClient.connect(live_server_asgi.ws_url, cookie=cookie, origin=live_server_asgi.origin)
        pong = await client.request({"type": "ping", "id": "p1"}, "pong")
        await client.close()
        return pong

    assert run(scenario()) == {"type": "pong", "id": "p1"}
    assert web_device.revoked_at is None


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-credentials"),
        pytest.param({"token": "not-a-jwt"}, id="garbage-token"),
        pytest.param({"cookie": "sessionid=forged"}, id="forged-session"),
    ],
)
def test_anonymous_and_invalid_credentials_are_refused_4401(
    live_server_asgi: LiveServer, headers: dict[str, str]
) -> None:
    kwargs = {**headers, "origin": live_server_asgi.origin}
    assert run(refused_close_code(live_server_asgi.ws_url, **kwargs)) == 4401


def test_cross_site_socket_with_session_cookie_is_refused_4403(live_server_asgi: LiveServer, alice: User) -> None:
    cookie = browser_session_cookie(alice)
    foreign = run(refused_close_code(live_server_asgi.ws_url, cookie=cookie, origin="https://evil.example"))
    missing_origin = run(refused_close_code(live_server_asgi.ws_url, cookie=cookie))
    assert (foreign, missing_origin) == (4403, 4403)


def test_foreign_origin_is_refused_even_with_a_token(live_server_asgi: LiveServer, alice: User) -> None:
    login = app_login(alice)
    code = run(refused_close_code(live_server_asgi.ws_url, token=login.access, origin="https://evil.example"))
    assert code == 4403


def test_malformed_frames_get_errors_and_the_socket_stays_usable(live_server_asgi: LiveServer, alice: User) -> None:
    login = app_login(alice)

    async def scenario() -> list[dict[str, object]]:
        client = await WSClient.connect(live_server_asgi.ws_url, token=login.access)
        replies = []
        for raw in ["{not json", "[1, 2]", '{"type": 5}', '{"type": "nope", "id": "x"}', "x" * 300_000]:
            await client.send(raw)
            replies.append(await client.expect("error"))
        replies.append(await client.request({"type": "ping", "id": 7}, "pong"))
        await client.close()
        return replies

    replies = run(scenario())
    assert [r.get("code") for r in replies[:5]] == [
        "malformed",
        "malformed",
        "malformed",
        "unknown_type",
        "frame_too_large",
    ]
    assert replies[3]["id"] == "x"
    assert replies[5] == {"type": "pong", "id": 7}


def test_app_logout_closes_that_devices_sockets_only(live_server_asgi: LiveServer, alice: User) -> None:
    phone, laptop = app_login(alice), app_login(alice, platform=Device.Platform.DESKTOP)

    async def scenario() -> tuple[int, dict[str, object], int]:
        phone_ws = await WSClient.connect(live_server_asgi.ws_url, token=phone.access)
        laptop_ws = await WSClient.connect(live_server_asgi.ws_url, token=laptop.access)
        async with httpx.AsyncClient(base_url=live_server_asgi.http_url) as http:
            response = await http.post("/api/v1/auth/logout/", json={"refresh": phone.refresh})
        closed_with = await phone_ws.expect_close()
        still_alive = await laptop_ws.request({"type": "ping", "id": "alive"}, "pong")
        await laptop_ws.close()
        # The logged-out device's access token no longer opens a socket.
        reconnect = await refused_close_code(live_server_asgi.ws_url, token=phone.access)
        return response.status_code, still_alive, closed_with * 10000 + reconnect

    status, still_alive, codes = run(scenario())
    assert status == 204
    assert codes == 4401 * 10000 + 4401
    assert still_alive["type"] == "pong"


def test_browser_logout_closes_its_socket(live_server_asgi: LiveServer, alice: User) -> None:
    client = Client()
    client.post("/login/", {"username": "alice", "password": PASSWORD})
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    connected = threading.Event()
    result: dict[str, int] = {}

    async def scenario() -> None:
        ws = await WSClient.connect(live_server_asgi.ws_url, cookie=cookie, origin=live_server_asgi.origin)
        connected.set()  # hello arrived: the socket is in its user's group
        result["code"] = await ws.expect_close()

    thread = threading.Thread(target=lambda: run(scenario()))
    thread.start()
    assert connected.wait(timeout=10), "the browser socket did not connect"
    response = client.post("/logout/")
    thread.join(timeout=15)
    assert response.status_code == 302
    assert result.get("code") == 4401


def test_tokens_never_reach_the_server_log(live_server_asgi: LiveServer, alice: User) -> None:
    login = app_login(alice)

    async def scenario() -> None:
        client = await WSClient.connect(live_server_asgi.ws_url, token=login.access)
        await client.close()
        async with httpx.AsyncClient(base_url=live_server_asgi.http_url) as http:
            me = await http.get("/api/v1/me/", headers={"Authorization": f"Bearer {login.access}"})
            assert me.status_code == 200
            await http.post("/api/v1/auth/token/refresh/", json={"refresh": login.refresh})

    run(scenario())
    log = live_server_asgi.log()
    assert "/ws/" in log or "/api/v1/me/" in log  # the log does record requests
    assert login.access not in log
    assert login.refresh not in log
