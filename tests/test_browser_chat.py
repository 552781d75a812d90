"""The chat UI in a real Chromium, two or three people at once, found by accessible names.

One web process (collected static files, as deployed) and one Celery worker serve every
test here, both on the S3 server (moto over HTTP) so that photos get their thumbnails. The
web process says hello with a short heartbeat, so a frozen socket is noticed within seconds.
Screenshots of each main screen go to test-artifacts/chat-*.png.
"""

from __future__ import annotations

import io
import math
import re
import struct
import subprocess
import sys
import wave
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Literal, TypeVar

import pytest
from django.db import connections
from playwright.sync_api import FilePayload, Locator, Page, ViewportSize, expect

from accounts.models import User
from conversations import services
from conversations.models import Conversation, Message
from tests.browser import DESKTOP, PHONE, Browsing, has_horizontal_scroll, screenshot
from tests.conftest import (
    PASSWORD,
    ROOT,
    S3,
    LiveServer,
    Worker,
    server_env,
    start_server,
    start_worker,
    stop_server,
    stop_worker,
)
from tests.media_files import ffmpeg, jpeg_with_gps, pdf

pytest_plugins = ("tests.browser",)
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

T = TypeVar("T")
HEARTBEAT_SECONDS = 4
SLOW = 20_000  # ms: waits that include a Celery task or a missed heartbeat


@dataclass
class ChatStack:
    server: LiveServer
    worker: Worker


@pytest.fixture(scope="session")
def chat_stack(django_db_setup: None, s3_server: S3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatStack]:
    """A web process with collected static files and a worker, both storing media in S3."""
    from chat_project.celery import app as celery_app

    celery_app.control.purge()  # tasks left in this run's queues by an earlier run
    var_dir = tmp_path_factory.mktemp("chat-var")
    env = {"VAR_DIR": str(var_dir), **s3_server.env()}
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
        cwd=ROOT,
        env=server_env(**env),
        check=True,
    )
    server = start_server(var_dir, "chat-web", WS_HEARTBEAT_SECONDS=str(HEARTBEAT_SECONDS), **env)
    worker = start_worker(var_dir, name="chat-worker", queues="media,default", **env)
    yield ChatStack(server=server, worker=worker)
    stop_worker(worker)
    stop_server(server)


@pytest.fixture(scope="session")
def browser_server(chat_stack: ChatStack) -> LiveServer:
    """tests.browser's pages open on this module's server (S3 and a worker behind it)."""
    return chat_stack.server


# --- finding things the way a person does ------------------------------------------------------


def connection(page: Page) -> Locator:
    return page.get_by_role("status", name="Connection")


def chat_link(page: Page, name: str) -> Locator:
    """A conversation in the list: a link whose name starts with the conversation's name."""
    return page.get_by_role("navigation", name="Conversations").get_by_role(
        "link", name=re.compile(f"^{re.escape(name)}")
    )


def chat_log(page: Page) -> Locator:
    return page.get_by_role("log", name="Messages")


def message(page: Page, text: str, *, exact: bool = False) -> Locator:
    items = chat_log(page).get_by_role("listitem")
    return items.filter(has=page.get_by_text(text, exact=True)) if exact else items.filter(has_text=text)


def typing(page: Page, text: str) -> Locator:
    """The open chat's header line that says who is typing."""
    return page.get_by_role("main", name="Chat").get_by_text(text)


def composer(page: Page) -> Locator:
    return page.get_by_role("textbox", name="Message")


def send(page: Page, text: str) -> None:
    box = composer(page)
    box.fill(text)
    box.press("Enter")
    expect(box).to_have_value("")


def message_action(page: Page, text: str, action: str) -> None:
    message(page, text).get_by_role("button", name="Message options").click()
    page.get_by_role("menuitem", name=action).click()


def log_in(page: Page, username: str) -> None:
    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(connection(page)).to_have_text("Connected")


def sign_up(page: Page, *, username: str, display_name: str) -> None:
    page.goto("/signup/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Display name").fill(display_name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    expect(connection(page)).to_have_text("Connected")


def open_as(browsing: Browsing, user: User, viewport: ViewportSize = DESKTOP) -> Page:
    page = browsing.new_page(viewport)
    log_in(page, user.username)
    return page


def open_chat(page: Page, name: str) -> None:
    chat_link(page, name).click()
    expect(page.get_by_role("heading", name=name, exact=True)).to_be_visible()


def off_loop(setup: Callable[[], T]) -> T:
    """Run test setup that announces events in a thread of its own: Playwright keeps an
    event loop running on this one, where the services' async_to_sync may not run."""

    def run() -> T:
        try:
            return setup()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


def direct_chat(a: User, b: User) -> Conversation:
    conversation, _ = services.get_or_create_direct(user=a, other_user_id=b.pk)
    return conversation


def real_errors(browsing: Browsing, *allowed: str) -> list[str]:
    """Errors the pages logged, except expected ones (e.g. sockets failing while offline)."""
    return [e for e in browsing.errors if not any(a in e for a in allowed)]


# --- the tests ------------------------------------------------------------------------------------


def test_two_people_sign_up_and_chat_live(browsing: Browsing) -> None:
    """Ticks go one, two, blue; typing comes and goes; reply, react, edit, delete; Shift+Enter."""
    bob = browsing.new_page()
    sign_up(bob, username="bob", display_name="Bob Builder")
    expect(bob.get_by_text("No chats yet")).to_be_visible()
    bob.goto("about:blank")  # Bob is away: his messages can only be sent, not delivered

    alice = browsing.new_page()
    sign_up(alice, username="alice", display_name="Alice Liddell")
    screenshot(alice, "chat-empty-desktop")
    alice.get_by_label("Search users").fill("bob")
    alice.get_by_role("button", name=re.compile("Bob Builder")).click()
    expect(alice.get_by_role("heading", name="Bob Builder")).to_be_visible()
    header = alice.get_by_role("main", name="Chat")
    expect(header.get_by_text(re.compile(r"^last seen (today|yesterday) at "))).to_be_visible()  # Bob left
    send(alice, "Hi Bob! 👋")
    first = message(alice, "Hi Bob! 👋")
    expect(first).to_contain_text("Sent")  # one tick: stored, not yet on Bob's device

    bob.goto("/")
    expect(connection(bob)).to_have_text("Connected")
    expect(header.get_by_text("online", exact=True)).to_be_visible()
    expect(chat_link(bob, "Alice Liddell")).to_contain_text("1 unread message")
    expect(first).to_contain_text("Delivered")  # two ticks: Bob's browser has it
    screenshot(bob, "chat-list-desktop")
    open_chat(bob, "Alice Liddell")
    expect(message(bob, "Hi Bob! 👋")).to_be_visible()
    expect(first).to_contain_text("Read")  # blue ticks: Bob has seen it
    expect(chat_link(bob, "Alice Liddell")).not_to_contain_text("unread")

    # Typing shows on the other side, and goes when the text is cleared.
    box = composer(bob)
    box.press_sequentially("Hello Alice")
    expect(typing(alice, "Bob Builder is typing…")).to_be_visible()
    box.fill("")
    expect(typing(alice, "Bob Builder is typing…")).to_be_hidden()
    # Shift+Enter breaks the line, Enter sends.
    box.press_sequentially("Hello Alice")
    box.press("Shift+Enter")
    box.press_sequentially("How are you?")
    expect(box).to_have_value("Hello Alice\nHow are you?")
    box.press("Enter")
    expect(box).to_have_value("")
    expect(message(alice, "How are you?")).to_contain_text("Hello Alice")
    expect(typing(alice, "Bob Builder is typing…")).to_be_hidden()
    expect(message(bob, "How are you?")).to_contain_text("Read")  # Alice has the chat open

    # Reply, react, edit, delete.
    message_action(alice, "How are you?", "Reply")
    expect(alice.get_by_text("Replying to Bob Builder")).to_be_visible()
    screenshot(alice, "chat-reply-desktop")
    send(alice, "Great, thanks!")
    reply = message(bob, "Great, thanks!")
    expect(reply.get_by_role("button", name=re.compile("How are you"))).to_be_visible()  # the quote
    message_action(bob, "Great, thanks!", "React with 👍")
    expect(message(alice, "Great, thanks!").get_by_role("button", name=re.compile("👍"))).to_be_visible()
    message_action(alice, "Great, thanks!", "Edit")
    expect(composer(alice)).to_have_value("Great, thanks!")
    composer(alice).fill("Great, thanks a lot!")
    composer(alice).press("Enter")
    expect(message(bob, "Great, thanks a lot!")).to_contain_text("edited")
    expect(message(bob, "Great, thanks a lot!").get_by_role("button", name=re.compile("👍"))).to_be_visible()
    send(alice, "Oops, wrong chat")
    expect(message(bob, "Oops, wrong chat")).to_be_visible()
    message_action(alice, "Oops, wrong chat", "Delete for everyone")
    alice.get_by_role("dialog").get_by_role("button", name="Delete for everyone").click()
    expect(message(bob, "This message was deleted")).to_be_visible()
    expect(message(bob, "Oops, wrong chat")).to_have_count(0)
    expect(message(alice, "You deleted this message")).to_be_visible()
    expect(alice.get_by_role("heading", name="Today")).to_be_visible()  # the day separator

    screenshot(alice, "chat-desktop")
    screenshot(bob, "chat-desktop-other-side")
    assert real_errors(browsing) == []


def test_a_group_of_three_chats_live_and_admins_manage_members(
    browsing: Browsing, alice: User, bob: User, carol: User
) -> None:
    pages = {user.username: open_as(browsing, user) for user in (alice, bob, carol)}
    a, b, c = pages["alice"], pages["bob"], pages["carol"]

    a.get_by_role("button", name="New group").click()
    dialog = a.get_by_role("dialog", name="New group")
    dialog.get_by_label("Group name").fill("Weekend trip")
    dialog.get_by_label("Add people").fill("bo")
    dialog.get_by_role("button", name="Add Bob").click()
    dialog.get_by_label("Add people").fill("car")
    dialog.get_by_role("button", name="Add Carol").click()
    expect(dialog.get_by_role("list", name="Members")).to_contain_text("Carol")
    screenshot(a, "chat-new-group-desktop")
    dialog.get_by_role("button", name="Create group").click()
    expect(a.get_by_role("heading", name="Weekend trip")).to_be_visible()
    expect(message(a, "You created the group “Weekend trip”")).to_be_visible()

    for page in (b, c):  # the group appears live in the others' lists
        open_chat(page, "Weekend trip")
        expect(message(page, "Alice created the group")).to_be_visible()
    send(a, "Who brings the tent?")
    expect(message(b, "Who brings the tent?")).to_contain_text("Alice")  # the sender's name
    expect(message(c, "Who brings the tent?")).to_be_visible()
    expect(message(a, "Who brings the tent?")).to_contain_text("Read")  # read by both
    send(b, "I will 🏕️")
    expect(message(c, "I will 🏕️")).to_contain_text("Bob")
    expect(message(a, "I will 🏕️")).to_be_visible()
    expect(a.get_by_role("main", name="Chat").get_by_text("Bob, Carol, You")).to_be_visible()  # the members

    a.get_by_role("button", name="Group info").click()
    info = a.get_by_role("dialog", name="Weekend trip")
    info.get_by_role("button", name="Make Bob admin").click()
    expect(info.get_by_role("listitem").filter(has_text="Bob")).to_contain_text("Admin")
    expect(message(b, "Alice made you an admin")).to_be_visible()
    screenshot(a, "chat-group-info-desktop")
    info.get_by_role("button", name="Remove Carol").click()
    expect(info.get_by_role("listitem").filter(has_text="Carol")).to_have_count(0)
    info.get_by_role("button", name="Close").click()
    expect(message(a, "You removed Carol")).to_be_visible()
    expect(message(b, "Alice removed Carol")).to_be_visible()
    expect(chat_link(c, "Weekend trip")).to_have_count(0)  # gone from Carol's list, live
    expect(c.get_by_role("alert")).to_have_text("You are no longer in that conversation.")
    b.get_by_role("button", name="Group info").click()  # Bob is an admin now: he adds her back
    info = b.get_by_role("dialog", name="Weekend trip")
    info.get_by_label("Add members").fill("car")
    info.get_by_role("button", name="Add Carol").click()
    expect(info.get_by_role("listitem").filter(has_text="Carol")).to_be_visible()
    info.get_by_role("button", name="Close").click()
    open_chat(c, "Weekend trip")  # back in Carol's list, live
    expect(message(c, "Bob added you")).to_be_visible()
    expect(message(c, "Who brings the tent?")).to_have_count(0)  # history from before stays hidden
    screenshot(b, "chat-group-desktop")
    assert real_errors(browsing) == []


# A player of that name has loaded its file's metadata (from the store, through the redirect).
METADATA_LOADED = (
    "name => [...document.querySelectorAll('audio, video')].some((m) => m.ariaLabel === name && m.readyState)"
)


def wav_tone(seconds: float = 1.0, rate: int = 8000) -> bytes:
    """A short sine tone as a WAV file."""
    frames = b"".join(
        struct.pack("<h", int(12000 * math.sin(2 * math.pi * 440 * n / rate))) for n in range(int(seconds * rate))
    )
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(rate)
        file.writeframes(frames)
    return out.getvalue()


def test_photos_and_files_reach_the_other_side(browsing: Browsing, alice: User, bob: User, tmp_path: Path) -> None:
    direct_chat(alice, bob)
    a, b = open_as(browsing, alice), open_as(browsing, bob)
    open_chat(a, "Bob")
    open_chat(b, "Alice")

    with a.expect_file_chooser() as chooser:
        a.get_by_role("button", name="Attach").click()
    chooser.value.set_files(
        [
            FilePayload(name="holiday.jpg", mimeType="image/jpeg", buffer=jpeg_with_gps()),
            FilePayload(name="plan.pdf", mimeType="application/pdf", buffer=pdf()),
        ]
    )
    tray = a.get_by_role("list", name="Attachments")
    expect(tray.get_by_role("listitem")).to_have_count(2)
    expect(tray.get_by_text("Ready to send")).to_have_count(2)
    composer(a).fill("Our trip")
    screenshot(a, "chat-upload-desktop")
    a.get_by_role("button", name="Send").click()
    expect(tray).to_be_hidden()

    photo = message(b, "Our trip").get_by_role("img", name="holiday.jpg")
    expect(photo).to_have_attribute("src", re.compile(r"variant=thumbnail"), timeout=SLOW)  # processed
    b.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=photo.element_handle())
    expect(message(b, "Our trip").get_by_role("link", name=re.compile("plan.pdf"))).to_contain_text("B")  # size
    expect(message(a, "Our trip")).to_contain_text("Read")
    screenshot(b, "chat-media-desktop")

    photo.click()  # opens full size
    viewer = b.get_by_role("dialog", name="Photo")
    expect(viewer).to_be_visible()
    full = viewer.get_by_role("img", name="holiday.jpg")
    b.wait_for_function("img => img.complete && img.naturalWidth === 1200", arg=full.element_handle())
    viewer.get_by_role("button", name="Close").click()
    expect(viewer).to_be_hidden()

    # Drag and drop a file onto the chat.
    dropped = a.evaluate_handle(
        "() => { const d = new DataTransfer();"
        " d.items.add(new File(['packing list'], 'notes.txt', {type: 'text/plain'})); return d; }"
    )
    chat_log(a).dispatch_event("dragenter", {"dataTransfer": dropped})
    expect(a.get_by_text("Drop files to send")).to_be_visible()
    chat_log(a).dispatch_event("drop", {"dataTransfer": dropped})
    expect(a.get_by_text("Drop files to send")).to_be_hidden()
    expect(tray.get_by_text("Ready to send")).to_be_visible()
    a.get_by_role("button", name="Send").click()
    expect(chat_log(b).get_by_role("link", name=re.compile("notes.txt"))).to_be_visible(timeout=SLOW)

    # Sound and video get players.
    clip = ffmpeg(
        tmp_path / "clip.webm", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=10:duration=1", "-c:v", "libvpx"
    )
    with a.expect_file_chooser() as chooser:
        a.get_by_role("button", name="Attach").click()
    chooser.value.set_files(
        [
            FilePayload(name="tone.wav", mimeType="audio/wav", buffer=wav_tone()),
            FilePayload(name="clip.webm", mimeType="video/webm", buffer=clip),
        ]
    )
    expect(tray.get_by_text("Ready to send")).to_have_count(2)
    a.get_by_role("button", name="Send").click()
    for name in ("tone.wav", "clip.webm"):
        expect(chat_log(b).get_by_label(name)).to_be_visible(timeout=SLOW)
        b.wait_for_function(METADATA_LOADED, arg=name)
    screenshot(b, "chat-media-players-desktop")
    assert real_errors(browsing) == []


def test_messages_sent_while_one_side_is_offline_arrive_once(browsing: Browsing, alice: User, bob: User) -> None:
    direct_chat(alice, bob)
    a, b = open_as(browsing, alice), open_as(browsing, bob)
    open_chat(a, "Bob")
    open_chat(b, "Alice")

    b.context.set_offline(True)  # the socket freezes; the browser's "offline" event says so
    expect(connection(b)).to_have_text("Offline")
    send(a, "Are you there?")
    send(a, "Hello?")
    expect(message(a, "Hello?")).to_contain_text("Sent")
    send(b, "On a train, back soon")
    queued = message(b, "On a train, back soon")
    expect(queued).to_contain_text("Waiting to send")
    expect(b.get_by_text("You are offline. 1 message will be sent when you are back online.")).to_be_visible()
    screenshot(b, "chat-offline-desktop")

    b.context.set_offline(False)
    expect(connection(b)).to_have_text("Connected")
    expect(queued).to_contain_text("Read", timeout=SLOW)  # sent on reconnect, and Alice saw it
    expect(message(a, "On a train, back soon")).to_have_count(1)
    expect(message(b, "Are you there?")).to_have_count(1)
    expect(message(b, "Hello?")).to_have_count(1)
    expect(message(a, "Hello?")).to_contain_text("Read")
    assert Message.objects.filter(body="On a train, back soon").count() == 1
    assert real_errors(browsing, "WebSocket connection to") == []


def test_a_frozen_socket_is_noticed_by_the_missing_pong(browsing: Browsing, alice: User, bob: User) -> None:
    """Without the browser's offline event, only the heartbeat can tell the socket froze."""
    direct_chat(alice, bob)
    a = open_as(browsing, alice)
    b = browsing.new_page()
    b.context.add_init_script("addEventListener('offline', (e) => e.stopImmediatePropagation(), true)")
    log_in(b, "bob")
    open_chat(a, "Bob")
    open_chat(b, "Alice")

    b.context.set_offline(True)
    expect(connection(b)).to_have_text("Offline", timeout=SLOW)
    send(a, "Ping?")
    b.context.set_offline(False)
    expect(connection(b)).to_have_text("Connected")
    expect(message(b, "Ping?")).to_have_count(1)
    assert real_errors(browsing, "WebSocket connection to") == []


def test_scrolling_up_loads_older_history(browsing: Browsing, alice: User, bob: User) -> None:
    conversation = direct_chat(alice, bob)

    def history() -> None:
        for number in range(1, 121):
            services.send_message(
                sender=alice,
                conversation_id=conversation.pk,
                client_msg_id=f"h{number}",
                body=f"Message number {number}",
            )

    off_loop(history)
    yesterday = Message.objects.filter(conversation=conversation, seq__lte=10)
    yesterday.update(created_at=Message.objects.get(conversation=conversation, seq=1).created_at - timedelta(days=1))
    b = open_as(browsing, bob)
    expect(chat_link(b, "Alice")).to_contain_text("120 unread messages")
    open_chat(b, "Alice")
    log = chat_log(b)
    expect(message(b, "Message number 120", exact=True)).to_be_in_viewport()
    expect(log.get_by_role("listitem")).to_have_count(50)

    log.evaluate("log => { log.scrollTop = 0; }")
    expect(log.get_by_role("listitem")).to_have_count(100)
    expect(message(b, "Message number 71", exact=True)).to_be_in_viewport()  # the reader stays where they were
    log.evaluate("log => { log.scrollTop = 0; }")
    expect(log.get_by_role("listitem")).to_have_count(120)
    expect(message(b, "Message number 21", exact=True)).to_be_in_viewport()
    log.evaluate("log => { log.scrollTop = 0; }")  # nothing more to load: the start is there
    expect(log.get_by_text("This is the beginning of your chat with Alice.")).to_be_in_viewport()
    expect(message(b, "Message number 1", exact=True)).to_be_in_viewport()
    expect(log.get_by_role("heading", name="Yesterday")).to_be_visible()
    expect(log.get_by_role("region", name="Yesterday").get_by_role("listitem")).to_have_count(10)
    screenshot(b, "chat-history-desktop")
    assert real_errors(browsing) == []


def test_turning_on_notifications_says_plainly_why_it_failed(browsing: Browsing, alice: User) -> None:
    """Headless Chromium reaches no push service: the flow gets as far as subscribing."""
    page = open_as(browsing, alice)
    page.context.grant_permissions(["notifications"])
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))

    page.get_by_role("button", name="Enable notifications").click()

    expect(page.get_by_role("alert")).to_contain_text("Notifications could not be turned on: ")
    assert f"{browsing.base_url}/api/v1/push/config/" in asked  # permission given, worker registered
    scope = page.evaluate("navigator.serviceWorker.getRegistration('/').then((r) => r && r.scope)")
    assert scope == f"{browsing.base_url}/"
    worker = page.request.get("/sw.js")
    assert worker.headers["content-type"].startswith("text/javascript")
    assert worker.headers["service-worker-allowed"] == "/"
    screenshot(page, "chat-notifications-desktop")
    # Chromium explains on the console that it has no Push API here (a private context).
    assert real_errors(browsing, "Push API") == []


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_on_a_phone_list_and_chat_take_turns(
    browsing: Browsing, alice: User, bob: User, scheme: Literal["light", "dark"]
) -> None:
    conversation = direct_chat(alice, bob)

    def chats() -> None:
        lines = [
            (bob, "Are we still on for lunch?"),
            (alice, "Yes! 12:30 at the usual place?"),
            (bob, "Perfect. I'll book a table 🍜"),
        ]
        for number, (sender, body) in enumerate(lines):
            services.send_message(sender=sender, conversation_id=conversation.pk, client_msg_id=f"p{number}", body=body)
        group = services.create_group(creator=bob, title="Book club", member_ids=[alice.pk])
        services.send_message(sender=bob, conversation_id=group.pk, client_msg_id="g1", body="Next book: Dune")

    off_loop(chats)
    context = browsing.browser.new_context(
        base_url=browsing.base_url, viewport=PHONE, color_scheme=scheme, is_mobile=True, has_touch=True
    )
    page = context.new_page()
    browsing.pages.append(page)
    log_in(page, "alice")

    search = page.get_by_label("Search users")
    expect(search).to_be_visible()
    expect(chat_link(page, "Book club")).to_contain_text("Next book: Dune")
    assert not has_horizontal_scroll(page)
    screenshot(page, f"chat-list-phone-{scheme}")

    open_chat(page, "Bob")
    expect(search).to_be_hidden()  # one pane at a time
    expect(message(page, "Perfect. I'll book a table")).to_be_in_viewport()
    send(page, "See you there 👍")
    expect(message(page, "See you there")).to_contain_text("Sent")
    message(page, "Perfect. I'll book a table").get_by_text("Perfect").tap()  # no hover on a phone
    expect(page.get_by_role("menu", name="Message options")).to_be_visible()
    screenshot(page, f"chat-phone-menu-{scheme}")
    page.keyboard.press("Escape")
    expect(page.get_by_role("menu")).to_have_count(0)
    expect(composer(page)).to_be_in_viewport()
    assert not has_horizontal_scroll(page)
    screenshot(page, f"chat-phone-{scheme}")

    page.get_by_role("link", name="Back to chats").click()
    expect(search).to_be_visible()
    expect(chat_link(page, "Bob")).to_contain_text("See you there")
    open_chat(page, "Book club")
    page.get_by_role("button", name="Group info").click()
    info = page.get_by_role("dialog", name="Book club")
    expect(info.get_by_role("listitem").filter(has_text="Bob")).to_contain_text("Owner")
    expect(info.get_by_role("button", name="Remove Bob")).to_have_count(0)  # members manage nothing
    screenshot(page, f"chat-group-info-phone-{scheme}")
    context.close()


def test_keyboard_only_reaches_a_chat_and_sends(browsing: Browsing, alice: User, bob: User) -> None:
    direct_chat(alice, bob)
    page = open_as(browsing, alice)
    page.get_by_label("Search users").focus()
    page.keyboard.press("Tab")
    expect(chat_link(page, "Bob")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Bob")).to_be_visible()
    expect(composer(page)).to_be_focused()
    page.keyboard.type("Sent with the keyboard")
    page.keyboard.press("Enter")
    expect(message(page, "Sent with the keyboard")).to_contain_text("Sent")
    message(page, "Sent with the keyboard").get_by_role("button", name="Message options").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("menuitem").first).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.get_by_role("menu")).to_have_count(0)


PROTOCOL_SCRIPT = (Path(__file__).parent / "protocol_client_check.js").read_text()


def test_the_protocol_client_dedupes_resyncs_gaps_and_resends_its_outbox(browsing: Browsing) -> None:
    """chat-client.js alone, against a scripted socket: the rules of docs/protocol.md."""
    page = browsing.new_page()
    page.goto("/login/")

    result = page.evaluate(PROTOCOL_SCRIPT)

    assert result["applied"] == ["sync:6@11", "new:7@12", "updated:6@13", "new:9@15", "ack:10@16"]
    assert result["beforeGap"] == {"3": 13}
    assert result["resync"] == {"3": 13}  # the gap froze the cursor: seq 8 will come with the sync
    assert result["stored"] == 1  # the unsent message is in storage
    assert result["offlineState"] == "offline"
    assert result["sockets"] == 2
    assert result["sends"] == [True, True]  # sent, then sent again after reconnecting: same id
    assert (result["outbox"], result["storedAfter"]) == (0, 0)  # the ack emptied the outbox
    assert result["states"] == ["connected", "offline", "reconnecting", "connected"]
    # One frame for a burst of receipts (read implies delivered), repeated on the new socket
    # in case the first was lost with the old one.
    assert result["receipts"] == ["read:7", "read:7"]
