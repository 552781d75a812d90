"""Media end to end: a real web process and Celery worker on RabbitMQ, S3 over HTTP (moto)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from accounts.models import User
from conversations import services
from media.models import Attachment
from tests.conftest import MediaStack, app_login
from tests.media_files import exif_of, jpeg_with_gps, pdf
from tests.wsclient import WSClient, run

pytestmark = pytest.mark.django_db(transaction=True)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_photo_and_pdf_to_a_group_reach_members_with_a_thumbnail(
    media_stack: MediaStack, alice: User, bob: User, carol: User
) -> None:
    group = services.create_group(creator=alice, title="Photos", member_ids=[bob.pk, carol.pk])
    outsider = User.objects.create_user(username="mallory", password="x-" * 8)
    alice_login, bob_login, carol_login = app_login(alice), app_login(bob), app_login(carol)
    outsider_login = app_login(outsider)
    server = media_stack.server
    photo = jpeg_with_gps()

    async def scenario() -> dict[str, Any]:
        b = await WSClient.connect(server.ws_url, token=bob_login.access)
        c = await WSClient.connect(server.ws_url, token=carol_login.access)
        async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as http:
            up_photo = await http.post(
                "/api/v1/media/",
                files={"file": ("holiday.jpg", photo, "text/plain")},
                headers=bearer(alice_login.access),
            )
            up_pdf = await http.post(
                "/api/v1/media/", files={"file": ("plan.pdf", pdf(), "image/png")}, headers=bearer(alice_login.access)
            )
            ids = [up_photo.json()["id"], up_pdf.json()["id"]]
            sent = await http.post(
                f"/api/v1/conversations/{group.pk}/messages/",
                json={"client_msg_id": "media-1", "body": "our trip", "attachment_ids": ids},
                headers=bearer(alice_login.access),
            )
            new_for_bob = await b.expect("message.new")
            new_for_carol = await c.expect("message.new", lambda f: f["message"]["body"] == "our trip")

            def photo_ready(frame: dict[str, Any]) -> bool:
                return any(a["kind"] == "image" and a["status"] == "ready" for a in frame["message"]["attachments"])

            # Usually the worker is still processing when the message goes out, and members
            # hear "ready" in a message.updated; a worker that finished first makes the
            # message arrive ready (no update then, nothing to wait for).
            ready = new_for_bob if photo_ready(new_for_bob) else await b.expect("message.updated", photo_ready, 60)
            if not photo_ready(new_for_carol):
                await c.expect("message.updated", photo_ready, timeout=60)
            thumb = await http.get(
                f"/api/v1/media/{ids[0]}/download/?variant=thumbnail", headers=bearer(bob_login.access)
            )
            original = await http.get(f"/api/v1/media/{ids[0]}/download/", headers=bearer(carol_login.access))
            pdf_link = await http.get(f"/api/v1/media/{ids[1]}/download/", headers=bearer(bob_login.access))
            outsider_meta = await http.get(f"/api/v1/media/{ids[0]}/", headers=bearer(outsider_login.access))
            outsider_dl = await http.get(f"/api/v1/media/{ids[1]}/download/", headers=bearer(outsider_login.access))
            async with httpx.AsyncClient(timeout=30) as store:  # follow the presigned redirects to S3
                thumb_bytes = (await store.get(thumb.headers["location"])).content
                original_resp = await store.get(original.headers["location"])
                pdf_resp = await store.get(pdf_link.headers["location"])
        for ws in (b, c):
            await ws.close()
        return {
            "uploads": [up_photo, up_pdf],
            "sent": sent,
            "new": new_for_bob,
            "ready": ready,
            "thumb": (thumb.status_code, thumb_bytes),
            "original": original_resp,
            "pdf": pdf_resp,
            "outsider": (outsider_meta.status_code, outsider_dl.status_code),
        }

    result = run(scenario(), timeout=120)
    up_photo, up_pdf = result["uploads"]
    assert (up_photo.status_code, up_photo.json()["kind"], up_photo.json()["content_type"]) == (
        201,
        "image",
        "image/jpeg",
    )
    assert (up_pdf.json()["kind"], up_pdf.json()["content_type"]) == ("file", "application/pdf")  # the bytes decide
    assert result["sent"].status_code == 201
    assert [a["filename"] for a in result["new"]["message"]["attachments"]] == ["holiday.jpg", "plan.pdf"]
    ready_photo = next(a for a in result["ready"]["message"]["attachments"] if a["kind"] == "image")
    assert (ready_photo["width"], ready_photo["height"], ready_photo["has_thumbnail"]) == (1200, 800, True)
    status, thumb_bytes = result["thumb"]
    assert status == 302 and thumb_bytes[:3] == b"\xff\xd8\xff"
    original = result["original"]
    assert original.status_code == 200 and original.headers["content-type"] == "image/jpeg"
    assert 0x8825 not in exif_of(original.content)  # GPS stripped before sharing
    assert 0x8825 in exif_of(photo)
    assert result["pdf"].headers["content-type"] == "application/octet-stream"
    assert result["pdf"].headers["content-disposition"].startswith("attachment")
    assert result["outsider"] == (404, 404)
    stored = Attachment.objects.get(pk=ready_photo["id"])
    assert stored.status == Attachment.Status.READY and len(stored.sha256) == 64
