"""Media beyond the happy path: direct uploads, bad input, processing, access, memory, clean-up.

S3 is moto's server over real HTTP (``tests.conftest.s3_server``). Tests that take
``media_stack`` talk to a real web process and a real Celery worker on RabbitMQ; the 100 MB
test starts its own web process to measure it; the others call the REST API in-process and
run the processing service themselves, against the same S3 server. Nothing is mocked.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from PIL import Image
from rest_framework.test import APIClient

from accounts.models import User
from chat_project.celery import app as celery_app
from conversations import services as conversations
from conversations.models import Conversation, Message
from media import services
from media.models import Attachment
from tests.conftest import ROOT, S3, MediaStack, app_login, make_user, start_server, stop_server, wait_until
from tests.media_files import (
    GPS_IFD,
    HTML,
    SVG_WITH_SCRIPT,
    exif_of,
    ffmpeg,
    jpeg_with_gps,
    pdf,
    photo_with_position,
    png,
    png_bomb,
    truncated_jpeg,
)

MEDIA = "/api/v1/media/"
MB = 1024 * 1024
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = pytest.mark.django_db


# --- helpers ----------------------------------------------------------------------------


def api_for(user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.content
    return response.json()


def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    """Assert the status and the one error shape with this code; return the error object."""
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code, body
    assert body["error"]["detail"]
    return dict(body["error"])


def upload(client: APIClient, name: str, data: bytes, content_type: str = "application/octet-stream") -> Any:
    return client.post(MEDIA, {"file": SimpleUploadedFile(name, data, content_type)}, format="multipart")


def uploaded(client: APIClient, name: str, data: bytes, content_type: str = "application/octet-stream") -> Any:
    return ok(upload(client, name, data, content_type), 201)


def send(client: APIClient, conversation_id: int, attachment_ids: list[int], body: str = "", cmid: str = "") -> Any:
    return client.post(
        f"/api/v1/conversations/{conversation_id}/messages/",
        {"client_msg_id": cmid or f"m-{os.urandom(6).hex()}", "body": body, "attachment_ids": attachment_ids},
        format="json",
    )


def download(client: APIClient, attachment_id: int, variant: str = "original") -> Any:
    return client.get(f"{MEDIA}{attachment_id}/download/", {"variant": variant})


def follow(response: Any) -> httpx.Response:
    """Follow a download's redirect to the store, as a browser would."""
    assert response.status_code == 302, response.content
    return httpx.get(response["Location"], timeout=30)


def object_bytes(s3: S3, key: str) -> bytes:
    data: bytes = s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    return data


def object_exists(s3: S3, key: str) -> bool:
    try:
        s3.client().head_object(Bucket=s3.bucket, Key=key)
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("404", "NoSuchKey"):
            return False
        raise
    return True


def bucket_keys(s3: S3) -> set[str]:
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=s3.bucket)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


def direct_chat(user: User, other: User) -> Conversation:
    conversation, _ = conversations.get_or_create_direct(user=user, other_user_id=other.pk)
    return conversation


def process(attachment_id: int) -> Attachment:
    """What the worker does for an upload, run here; returns the attachment as stored."""
    services.process_attachment(attachment_id)
    return Attachment.objects.get(pk=attachment_id)


def image_of(data: bytes) -> tuple[str | None, tuple[int, int]]:
    with Image.open(io.BytesIO(data)) as image:
        return image.format, image.size


# --- the presigned (direct) upload path ---------------------------------------------------


def post_to_store(upload: dict[str, Any], name: str, data: bytes) -> httpx.Response:
    """What a client does with a presigned POST: the fields, then the file, straight to S3."""
    assert upload["method"] == "POST"
    return httpx.post(upload["url"], data=upload["fields"], files={"file": (name, data)}, timeout=30)


def policy_conditions(upload: dict[str, Any]) -> list[Any]:
    policy = json.loads(base64.b64decode(upload["fields"]["policy"]))
    conditions: list[Any] = policy["conditions"]
    return conditions


@pytest.mark.django_db(transaction=True)
def test_direct_upload_goes_to_s3_and_the_worker_makes_it_ready(
    media_stack: MediaStack, alice: User, bob: User
) -> None:
    server, s3 = media_stack.server, media_stack.s3
    chat = direct_chat(alice, bob)
    alice_login, bob_login = app_login(alice), app_login(bob)
    photo = png(500, 300)
    with httpx.Client(base_url=server.http_url, timeout=30, headers=bearer(alice_login.access)) as http:
        started = http.post(f"{MEDIA}uploads/", json={"filename": "scan.png", "size": len(photo)})
        assert started.status_code == 201, started.text
        attachment, presigned = started.json()["attachment"], started.json()["upload"]
        assert attachment["status"] == "pending"
        assert presigned["url"].startswith(s3.endpoint)
        # The store itself refuses a body larger than declared (real S3 and MinIO enforce
        # the policy; moto does not, so complete checks the size again: see the next test).
        assert ["content-length-range", 1, len(photo)] in policy_conditions(presigned)

        early = http.post(f"{MEDIA}{attachment['id']}/complete/")
        error_of(early, 409, "not_uploaded")

        stored = post_to_store(presigned, "scan.png", photo)
        assert stored.status_code in (200, 201, 204), stored.text
        completed = http.post(f"{MEDIA}{attachment['id']}/complete/")
        assert completed.status_code == 200, completed.text
        assert (completed.json()["status"], completed.json()["kind"]) == ("processing", "image")
        again = http.post(f"{MEDIA}{attachment['id']}/complete/")
        assert again.status_code == 200  # completing twice is harmless

        def ready() -> bool:
            meta = http.get(f"{MEDIA}{attachment['id']}/").json()
            return bool(meta["status"] == "ready")

        wait_until(ready, timeout=30, what="the worker to process the direct upload")
        meta = http.get(f"{MEDIA}{attachment['id']}/").json()
        sent = http.post(
            f"/api/v1/conversations/{chat.pk}/messages/",
            json={"client_msg_id": "direct-1", "body": "", "attachment_ids": [attachment["id"]]},
        )
        assert sent.status_code == 201, sent.text
        link = http.get(f"{MEDIA}{attachment['id']}/download/", headers=bearer(bob_login.access))
        thumb = http.get(f"{MEDIA}{attachment['id']}/download/?variant=thumbnail", headers=bearer(bob_login.access))
    assert (meta["kind"], meta["content_type"], meta["width"], meta["height"]) == ("image", "image/png", 500, 300)
    assert meta["has_thumbnail"] and meta["size"] == len(photo)
    assert link.status_code == 302 and thumb.status_code == 302
    assert httpx.get(link.headers["location"]).content == photo
    assert image_of(httpx.get(thumb.headers["location"]).content) == ("JPEG", (320, 192))


def test_a_completed_direct_upload_cannot_be_swapped_by_posting_again(
    s3: S3, alice: User, django_capture_on_commit_callbacks: Any
) -> None:
    photo = png(40, 30)
    client = api_for(alice)
    started = ok(client.post(f"{MEDIA}uploads/", {"filename": "scan.png", "size": len(photo)}, format="json"), 201)
    attachment_id, presigned = started["attachment"]["id"], started["upload"]
    posted_key = Attachment.objects.get(pk=attachment_id).key
    assert post_to_store(presigned, "scan.png", photo).status_code < 300
    with django_capture_on_commit_callbacks(execute=True):
        ok(client.post(f"{MEDIA}{attachment_id}/complete/"))
    sealed_key = Attachment.objects.get(pk=attachment_id).key
    # The presigned POST is still valid: a second POST writes only the key it names.
    assert post_to_store(presigned, "scan.png", b"<html><script>alert(1)</script>").status_code < 300
    body = s3.client().get_object(Bucket=s3.bucket, Key=sealed_key)["Body"].read()
    assert sealed_key != posted_key and body == photo


def test_direct_upload_larger_than_declared_is_refused_at_completion(
    s3: S3, alice: User, django_capture_on_commit_callbacks: Any
) -> None:
    client = api_for(alice)
    started = ok(client.post(f"{MEDIA}uploads/", {"filename": "notes.pdf", "size": 100}, format="json"), 201)
    attachment_id, presigned = started["attachment"]["id"], started["upload"]
    key = Attachment.objects.get(pk=attachment_id).key
    sent = post_to_store(presigned, "notes.pdf", pdf() + b"%" * 400)
    if sent.status_code >= 400:  # a store that enforces the policy: nothing was stored
        assert b"EntityTooLarge" in sent.content
        error_of(client.post(f"{MEDIA}{attachment_id}/complete/"), 409, "not_uploaded")
    else:  # moto stores it: completion measures the object and refuses it
        with django_capture_on_commit_callbacks(execute=True):
            refused = error_of(client.post(f"{MEDIA}{attachment_id}/complete/"), 413, "too_large")
        assert "declared" in refused["detail"]
        assert not object_exists(s3, key)
        assert not Attachment.objects.filter(pk=attachment_id).exists()


def test_direct_upload_checks_its_request(s3: S3, alice: User, bob: User) -> None:
    client = api_for(alice)
    error_of(client.post(f"{MEDIA}uploads/", {"filename": "a.bin", "size": 0}, format="json"), 400, "invalid")
    error_of(client.post(f"{MEDIA}uploads/", {"filename": "a.bin", "size": "big"}, format="json"), 400, "invalid")
    too_big = client.post(f"{MEDIA}uploads/", {"filename": "a.bin", "size": services.upload_limit() + 1}, format="json")
    error_of(too_big, 413, "too_large")
    assert not Attachment.objects.exists()
    started = ok(client.post(f"{MEDIA}uploads/", {"filename": "a.pdf", "size": 500}, format="json"), 201)
    post_to_store(started["upload"], "a.pdf", pdf())
    # Unchecked until completed: not even its uploader fetches it yet.
    error_of(client.get(f"{MEDIA}{started['attachment']['id']}/"), 404, "not_found")
    # Only its uploader completes it; to anyone else it does not exist.
    error_of(api_for(bob).post(f"{MEDIA}{started['attachment']['id']}/complete/"), 404, "not_found")
    error_of(client.post(f"{MEDIA}987654321/complete/"), 404, "not_found")
    assert ok(client.post(f"{MEDIA}{started['attachment']['id']}/complete/"))["status"] == "processing"


def test_direct_upload_is_unavailable_on_the_embedded_storage(alice: User) -> None:
    assert "S3" not in django_settings.STORAGES["default"]["BACKEND"]  # no s3 fixture: files stay local
    response = api_for(alice).post(f"{MEDIA}uploads/", {"filename": "a.pdf", "size": 500}, format="json")
    error_of(response, 409, "direct_upload_unavailable")
    assert not Attachment.objects.exists()


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "claimed_type", "data"),
    [("cute-cat.jpg", "image/jpeg", HTML), ("logo.svg", "image/svg+xml", SVG_WITH_SCRIPT)],
    ids=["html-as-jpeg", "svg-with-script"],
)
def test_executable_content_is_only_ever_a_download(
    s3: S3, alice: User, bob: User, name: str, claimed_type: str, data: bytes
) -> None:
    meta = uploaded(api_for(alice), name, data, claimed_type)
    assert (meta["kind"], meta["content_type"], meta["filename"]) == ("file", "application/octet-stream", name)
    ok(send(api_for(alice), direct_chat(alice, bob).pk, [meta["id"]]), 201)
    stored = process(meta["id"])
    assert (stored.kind, stored.content_type, stored.thumbnail_key) == ("file", "application/octet-stream", "")

    link = download(api_for(bob), meta["id"])
    fetched = follow(link)
    assert fetched.status_code == 200 and fetched.content == data
    assert fetched.headers["content-type"] == "application/octet-stream"
    assert fetched.headers["content-disposition"] == f'attachment; filename="{name}"'
    # Even fetched without our response headers, the object is not labelled as what the client claimed.
    head = s3.client().head_object(Bucket=s3.bucket, Key=stored.key)
    assert head["ContentType"] == "application/octet-stream"
    error_of(download(api_for(bob), meta["id"], "thumbnail"), 404, "not_found")


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: png_bomb(20_000), "DecompressionBomb"),
        (truncated_jpeg, "truncated"),
        (lambda: png()[:60] + b"\x00" * 200, "corrupt"),
    ],
    ids=["bomb-20000x20000", "truncated-jpeg", "corrupt-png"],
)
def test_unusable_images_are_kept_as_plain_files(s3: S3, alice: User, make: Any, error: str) -> None:
    data = make()
    meta = uploaded(api_for(alice), "photo.jpg", data, "image/jpeg")
    assert meta["kind"] == "image"  # the magic bytes say image: only decoding tells
    stored = process(meta["id"])
    assert (stored.status, stored.kind, stored.content_type) == ("ready", "file", "application/octet-stream")
    assert (stored.width, stored.height, stored.thumbnail_key) == (None, None, "")
    assert error in stored.error
    assert object_bytes(s3, stored.key) == data  # kept as it came, served only as a download


@pytest.mark.parametrize("side", [120, 200], ids=["over-the-limit-warning", "over-twice-the-limit-error"])
def test_pixel_limit_comes_from_settings(s3: S3, alice: User, settings: Any, side: int) -> None:
    settings.MEDIA_MAX_IMAGE_PIXELS = 10_000  # 120x120 warns in Pillow, 200x200 raises: both refused
    meta = uploaded(api_for(alice), "big.png", png(side, side))
    stored = process(meta["id"])
    assert (stored.kind, stored.thumbnail_key) == ("file", "")
    settings.MEDIA_MAX_IMAGE_PIXELS = 50_000
    assert process(uploaded(api_for(alice), "ok.png", png(side, side))["id"]).kind == "image"


@pytest.mark.django_db(transaction=True)
def test_the_worker_survives_bad_images_and_processes_the_next_file(media_stack: MediaStack, alice: User) -> None:
    login = app_login(alice)
    worker_pid = media_stack.worker.process.pid
    files = [("bomb.png", png_bomb(20_000)), ("cut.jpg", truncated_jpeg()), ("fine.jpg", jpeg_with_gps(640, 480))]
    with httpx.Client(base_url=media_stack.server.http_url, timeout=30, headers=bearer(login.access)) as http:
        ids = []
        for name, data in files:
            response = http.post(MEDIA, files={"file": (name, data, "image/jpeg")})
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])

        def all_ready() -> bool:
            return all(http.get(f"{MEDIA}{i}/").json()["status"] == "ready" for i in ids)

        wait_until(all_ready, timeout=60, what="the worker to process the three files")
        bomb, cut, fine = (http.get(f"{MEDIA}{i}/").json() for i in ids)
    assert media_stack.worker.process.poll() is None and media_stack.worker.process.pid == worker_pid
    log = media_stack.worker.log()  # nor did a pool process die, nor a task fail, on the way
    assert not [marker for marker in ("exited with", "WorkerLostError", "raised unexpected") if marker in log]
    assert (bomb["kind"], bomb["content_type"], bomb["has_thumbnail"]) == ("file", "application/octet-stream", False)
    assert (cut["kind"], cut["has_thumbnail"]) == ("file", False)
    assert (fine["kind"], fine["width"], fine["height"], fine["has_thumbnail"]) == ("image", 640, 480, True)


def test_size_limits_are_per_kind(s3: S3, alice: User, settings: Any) -> None:
    settings.MEDIA_MAX_BYTES = {"image": 1 * MB, "video": 3 * MB, "audio": 3 * MB, "file": 2 * MB}
    client = api_for(alice)
    before = bucket_keys(s3)
    big_image = png()[:64] + b"\x00" * (MB + 10)  # sniffed as an image by its header
    too_large = error_of(upload(client, "huge.png", big_image, "image/png"), 413, "too_large")
    assert "1 MB" in too_large["detail"]
    assert uploaded(client, "data.bin", b"\x01" * (MB + 10))["kind"] == "file"  # files may be larger
    error_of(upload(client, "data.bin", b"\x01" * (2 * MB + 10)), 413, "too_large")
    error_of(
        client.post(f"{MEDIA}uploads/", {"filename": "a.bin", "size": 3 * MB + 1}, format="json"), 413, "too_large"
    )
    assert Attachment.objects.count() == 1
    assert len(bucket_keys(s3) - before) == 1  # nothing stored for the refused ones


def test_a_content_length_over_the_limit_is_refused_before_the_body_is_read(alice: User, settings: Any) -> None:
    settings.MEDIA_MAX_BYTES = {"image": 1 * MB, "video": 1 * MB, "audio": 1 * MB, "file": 1 * MB}
    client = api_for(alice)
    # The body is a few bytes: reading (or parsing) it as the 50 MB it claims would fail the test
    # client's payload ("Cannot read more than the available bytes").
    response = client.post(
        MEDIA,
        data=b"--x\r\n",
        content_type="multipart/form-data; boundary=x",
        CONTENT_LENGTH=str(50 * MB),
    )
    error_of(response, 413, "too_large")
    assert not Attachment.objects.exists()


def test_an_empty_file_or_no_file_is_invalid(s3: S3, alice: User) -> None:
    client = api_for(alice)
    empty = error_of(upload(client, "empty.txt", b""), 400, "invalid")
    assert "file" in empty["fields"]
    missing = error_of(client.post(MEDIA, {"other": "x"}, format="multipart"), 400, "invalid")
    assert "file" in missing["fields"]
    assert not Attachment.objects.exists()


# --- processing, in-process against S3 ------------------------------------------------------


def test_processing_strips_gps_and_makes_a_small_jpeg_thumbnail(s3: S3, alice: User) -> None:
    photo = jpeg_with_gps(1200, 800)
    assert GPS_IFD in exif_of(photo)
    meta = uploaded(api_for(alice), "holiday.jpg", photo, "image/jpeg")
    original_key = Attachment.objects.get(pk=meta["id"]).key
    stored = process(meta["id"])
    shared = object_bytes(s3, stored.key)
    assert GPS_IFD not in exif_of(shared) and exif_of(shared) == {}
    assert not object_exists(s3, original_key)  # the copy with the position is gone
    assert (stored.width, stored.height, stored.size) == (1200, 800, len(shared))
    assert stored.sha256 == hashlib.sha256(shared).hexdigest()
    fmt, (width, height) = image_of(object_bytes(s3, stored.thumbnail_key))
    assert fmt == "JPEG" and max(width, height) == django_settings.MEDIA_THUMBNAIL_SIZE
    assert (width, height) == (320, 213)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_no_position_survives_processing_in_any_image_format(s3: S3, alice: User, fmt: str) -> None:
    photo = photo_with_position(fmt)
    assert GPS_IFD in exif_of(photo)
    stored = process(uploaded(api_for(alice), f"photo.{fmt.lower()}", photo)["id"])
    shared = object_bytes(s3, stored.key)
    assert (stored.kind, stored.content_type) == ("image", f"image/{fmt.lower()}")
    assert exif_of(shared) == {} and b"GPS" not in shared
    assert image_of(shared) == (fmt, (800, 600))


def test_processing_twice_is_harmless(s3: S3, alice: User, bob: User) -> None:
    client = api_for(alice)
    meta = uploaded(client, "holiday.jpg", jpeg_with_gps(), "image/jpeg")
    message = ok(send(client, direct_chat(alice, bob).pk, [meta["id"]], body="look"), 201)
    assert services.process_attachment(meta["id"]) == message["id"]  # members must hear of it
    first = Attachment.objects.get(pk=meta["id"])
    keys = bucket_keys(s3)
    assert services.process_attachment(meta["id"]) is None  # a redelivered task: nothing to do
    second = Attachment.objects.get(pk=meta["id"])
    assert (second.key, second.thumbnail_key, second.processed_at) == (
        first.key,
        first.thumbnail_key,
        first.processed_at,
    )
    assert bucket_keys(s3) == keys
    assert {first.key, first.thumbnail_key} <= keys


@pytest.fixture(scope="module")
def av_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A 2 s video and 1 s voice notes, made by ffmpeg from its test sources."""
    tmp = tmp_path_factory.mktemp("av")
    return {
        "clip.mp4": ffmpeg(
            tmp / "clip.mp4", "-f", "lavfi", "-i", "testsrc=duration=2:size=320x240:rate=10", "-pix_fmt", "yuv420p"
        ),
        "note.ogg": ffmpeg(tmp / "note.ogg", "-f", "lavfi", "-i", "sine=duration=1"),
        "note.mp3": ffmpeg(tmp / "note.mp3", "-f", "lavfi", "-i", "sine=duration=1"),
        "note.webm": ffmpeg(tmp / "note.webm", "-f", "lavfi", "-i", "sine=duration=1", "-c:a", "libopus"),
    }


def test_video_gets_duration_size_and_a_poster(s3: S3, alice: User, av_files: dict[str, bytes]) -> None:
    meta = uploaded(api_for(alice), "clip.mp4", av_files["clip.mp4"], "video/mp4")
    assert (meta["kind"], meta["content_type"]) == ("video", "video/mp4")
    stored = process(meta["id"])
    assert (stored.kind, stored.status, stored.width, stored.height) == ("video", "ready", 320, 240)
    assert stored.duration == pytest.approx(2.0, abs=0.15)
    assert image_of(object_bytes(s3, stored.thumbnail_key)) == ("JPEG", (320, 240))


def test_a_video_that_keeps_ffmpeg_busy_stays_a_plain_file(
    s3: S3, alice: User, settings: Any, av_files: dict[str, bytes]
) -> None:
    settings.MEDIA_FFMPEG_TIMEOUT_SECONDS = 0.001  # no probe finishes in time
    stored = process(uploaded(api_for(alice), "clip.mp4", av_files["clip.mp4"])["id"])
    assert (stored.status, stored.kind, stored.content_type) == ("ready", "file", "application/octet-stream")
    assert "took longer" in stored.error and stored.duration is None


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("note.ogg", "audio/ogg"), ("note.mp3", "audio/mpeg"), ("note.webm", "audio/webm")],
)
def test_audio_gets_its_kind_and_duration(
    s3: S3, alice: User, av_files: dict[str, bytes], name: str, content_type: str
) -> None:
    stored = process(uploaded(api_for(alice), name, av_files[name])["id"])
    # An audio-only WebM (a browser's voice note) is sniffed as video until probed.
    assert (stored.kind, stored.content_type, stored.thumbnail_key) == ("audio", content_type, "")
    assert stored.duration == pytest.approx(1.0, abs=0.1)


# --- access ---------------------------------------------------------------------------------


def test_a_non_member_gets_the_same_not_found_as_for_a_made_up_id(s3: S3, alice: User, bob: User, carol: User) -> None:
    meta = uploaded(api_for(alice), "plan.pdf", pdf())
    ok(send(api_for(alice), direct_chat(alice, bob).pk, [meta["id"]]), 201)
    process(meta["id"])
    outsider = api_for(carol)
    made_up = meta["id"] + 1000
    for url in (f"{MEDIA}{{}}/", f"{MEDIA}{{}}/download/", f"{MEDIA}{{}}/download/?variant=thumbnail"):
        theirs, missing = outsider.get(url.format(meta["id"])), outsider.get(url.format(made_up))
        assert (theirs.status_code, theirs.json()) == (missing.status_code, missing.json())
        error_of(theirs, 404, "not_found")
    assert ok(api_for(bob).get(f"{MEDIA}{meta['id']}/"))["id"] == meta["id"]


def test_a_member_who_joined_later_cannot_fetch_earlier_files(s3: S3, alice: User, bob: User, carol: User) -> None:
    group = conversations.create_group(creator=alice, title="Plans", member_ids=[bob.pk])
    before = uploaded(api_for(alice), "old.pdf", pdf())
    ok(send(api_for(alice), group.pk, [before["id"]]), 201)
    conversations.add_members(actor=alice, conversation_id=group.pk, user_ids=[carol.pk])
    after = uploaded(api_for(alice), "new.pdf", pdf())
    ok(send(api_for(alice), group.pk, [after["id"]]), 201)
    process(before["id"])
    process(after["id"])
    newcomer = api_for(carol)
    error_of(newcomer.get(f"{MEDIA}{before['id']}/"), 404, "not_found")
    error_of(download(newcomer, before["id"]), 404, "not_found")
    assert follow(download(newcomer, after["id"])).content == pdf()
    assert follow(download(api_for(bob), before["id"])).content == pdf()


def test_only_the_uploader_fetches_a_file_before_it_is_processed(s3: S3, alice: User, bob: User) -> None:
    photo = jpeg_with_gps()
    meta = uploaded(api_for(alice), "holiday.jpg", photo, "image/jpeg")
    ok(send(api_for(alice), direct_chat(alice, bob).pk, [meta["id"]]), 201)
    assert ok(api_for(bob).get(f"{MEDIA}{meta['id']}/"))["status"] == "processing"
    error_of(download(api_for(bob), meta["id"]), 409, "processing")  # not yet stripped of its GPS position
    assert follow(download(api_for(alice), meta["id"])).content == photo  # their own file, as sent
    process(meta["id"])
    shared = follow(download(api_for(bob), meta["id"]))
    assert shared.headers["content-type"] == "image/jpeg" and GPS_IFD not in exif_of(shared.content)


@pytest.mark.parametrize("how", ["deleted by its sender", "hidden by a moderator"])
def test_a_message_gone_for_everyone_takes_its_files_with_it(s3: S3, alice: User, bob: User, how: str) -> None:
    chat = direct_chat(alice, bob)
    meta = uploaded(api_for(alice), "plan.pdf", pdf())
    message = ok(send(api_for(alice), chat.pk, [meta["id"]], body="plan"), 201)
    process(meta["id"])
    assert follow(download(api_for(bob), meta["id"])).content == pdf()  # shared while the message stands
    if how == "deleted by its sender":
        conversations.delete_message(user=alice, conversation_id=chat.pk, message_id=message["id"])
    else:
        conversations.set_message_hidden(message_id=message["id"], hidden=True, reason="spam")
    for user in (bob, alice):
        error_of(api_for(user).get(f"{MEDIA}{meta['id']}/"), 404, "not_found")
        error_of(download(api_for(user), meta["id"]), 404, "not_found")


def attachable_cases(s3: S3, alice: User, bob: User, chat: Conversation) -> dict[str, int]:
    """Attachment ids that alice may not send: bob's, one already sent, one never uploaded."""
    bobs = uploaded(api_for(bob), "bob.pdf", pdf())["id"]
    sent = uploaded(api_for(alice), "sent.pdf", pdf())["id"]
    ok(send(api_for(alice), chat.pk, [sent]), 201)
    pending = ok(api_for(alice).post(f"{MEDIA}uploads/", {"filename": "a.pdf", "size": 500}, format="json"), 201)
    return {"someone-elses": bobs, "already-sent": sent, "not-uploaded": pending["attachment"]["id"]}


@pytest.mark.parametrize("case", ["someone-elses", "already-sent", "not-uploaded"])
def test_attaching_what_is_not_yours_to_send_stores_nothing(s3: S3, alice: User, bob: User, case: str) -> None:
    chat = direct_chat(alice, bob)
    bad = attachable_cases(s3, alice, bob, chat)[case]
    good = uploaded(api_for(alice), "ok.pdf", pdf())["id"]
    messages, last_seq = Message.objects.count(), Conversation.objects.get(pk=chat.pk).last_seq
    error_of(send(api_for(alice), chat.pk, [good, bad], body="files"), 404, "not_found")
    assert Message.objects.count() == messages
    assert Conversation.objects.get(pk=chat.pk).last_seq == last_seq
    assert Attachment.objects.get(pk=good).message_id is None  # still free to send
    ok(send(api_for(alice), chat.pk, [good], body="files"), 201)


def test_too_many_attachments_are_refused(s3: S3, alice: User, bob: User, settings: Any) -> None:
    settings.MEDIA_MAX_PER_MESSAGE = 2
    chat = direct_chat(alice, bob)
    ids = [uploaded(api_for(alice), f"{n}.pdf", pdf())["id"] for n in range(3)]
    refused = error_of(send(api_for(alice), chat.pk, ids), 400, "invalid")
    assert "attachment_ids" in refused["fields"]
    assert not Message.objects.filter(conversation=chat).exists()
    # Over the REST API's own bound (whatever the setting), refused before any lookup.
    settings.MEDIA_MAX_PER_MESSAGE = 100
    error_of(send(api_for(alice), chat.pk, list(range(1, 12))), 400, "invalid")
    assert ok(send(api_for(alice), chat.pk, ids), 201)["attachments"][2]["id"] == ids[2]


def test_a_message_may_be_only_attachments(s3: S3, alice: User, bob: User) -> None:
    chat = direct_chat(alice, bob)
    first = uploaded(api_for(alice), "first.pdf", pdf())["id"]
    second = uploaded(api_for(alice), "second.png", png())["id"]
    message = ok(send(api_for(alice), chat.pk, [second, first], body=""), 201)
    assert message["body"] == ""
    history = ok(api_for(bob).get(f"/api/v1/conversations/{chat.pk}/messages/"))
    (seen,) = [m for m in history["messages"] if m["id"] == message["id"]]
    # Listed in upload order, the same when sent as on every later read.
    assert [a["filename"] for a in message["attachments"]] == ["first.pdf", "second.png"]
    assert seen["attachments"] == message["attachments"]
    error_of(send(api_for(alice), chat.pk, [], body=""), 400, "invalid")  # but not nothing at all


# --- a 100 MB upload through a real server, with its memory measured -----------------------------


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


def multipart_stream(name: str, size: int, chunk: bytes) -> tuple[Iterator[bytes], int, str]:
    """A multipart body with one file of ``size`` bytes, generated as it is sent."""
    boundary = "chat-test-" + os.urandom(8).hex()
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body() -> Iterator[bytes]:
        yield head
        left = size
        while left > 0:
            yield chunk[:left]
            left -= len(chunk)
        yield tail

    return body(), len(head) + size + len(tail), f"multipart/form-data; boundary={boundary}"


class MemoryGrowth(AssertionError):
    """The server's peak memory grew past the bound. Under daphne it does (+1.3 GB for 100 MB:
    Twisted parses a whole multipart body in memory), which is why uvicorn is the default."""


@pytest.mark.django_db(transaction=True)
def test_a_100_mb_upload_streams_through_the_server_in_bounded_memory(
    s3_server: S3, alice: User, tmp_path: Path
) -> None:
    size, block = 100 * MB, os.urandom(MB)
    login = app_login(alice)
    server = start_server(tmp_path, name="upload-100mb", **s3_server.env())
    try:
        with httpx.Client(base_url=server.http_url, timeout=120, headers=bearer(login.access)) as http:
            warm = http.post(MEDIA, files={"file": ("warm.pdf", pdf())})  # load boto3 and open the S3 pool
            assert warm.status_code == 201, warm.text
            before = peak_rss_mb(server.process.pid)
            body, length, content_type = multipart_stream("big.bin", size, block)
            response = http.post(
                MEDIA, content=body, headers={"Content-Type": content_type, "Content-Length": str(length)}
            )
            after = peak_rss_mb(server.process.pid)
    finally:
        stop_server(server)
    growth = after - before
    figure = f"100 MB upload through POST {MEDIA}: server peak RSS {before:.0f} -> {after:.0f} MB (+{growth:.0f} MB)"
    print(f"\n{figure}")  # and kept where a run under xdist (which swallows prints) leaves it:
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "media-upload-memory.txt").write_text(figure + "\n")
    assert response.status_code == 201, response.text
    attachment = Attachment.objects.get(pk=response.json()["id"])
    assert (attachment.size, attachment.kind) == (size, "file")
    head = s3_server.client().head_object(Bucket=s3_server.bucket, Key=attachment.key)
    assert head["ContentLength"] == size
    if growth >= 64:
        raise MemoryGrowth(f"the server's peak memory grew by {growth:.0f} MB for a {size // MB} MB upload")


# --- orphans ----------------------------------------------------------------------------------


def test_orphans_are_deleted_with_their_objects(
    s3: S3, alice: User, bob: User, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.MEDIA_ORPHAN_SECONDS = 3600
    client = api_for(alice)
    orphan = uploaded(client, "forgotten.jpg", jpeg_with_gps(), "image/jpeg")["id"]
    process(orphan)
    sent = uploaded(client, "sent.pdf", pdf())["id"]
    ok(send(client, direct_chat(alice, bob).pk, [sent]), 201)
    recent = uploaded(client, "recent.pdf", pdf())["id"]
    never_completed = ok(client.post(f"{MEDIA}uploads/", {"filename": "x.pdf", "size": 500}, format="json"), 201)
    post_to_store(never_completed["upload"], "x.pdf", pdf())
    stale = [orphan, sent, never_completed["attachment"]["id"]]
    Attachment.objects.filter(pk__in=stale).update(created_at=timezone.now() - timedelta(seconds=3601))
    doomed = [k for a in Attachment.objects.filter(pk__in=[stale[0], stale[2]]) for k in (a.key, a.thumbnail_key) if k]
    assert len(doomed) == 3 and all(object_exists(s3, k) for k in doomed)

    with django_capture_on_commit_callbacks(execute=True):  # objects go once the rows are gone
        assert services.delete_orphans(batch=1) == 2
    assert set(Attachment.objects.values_list("pk", flat=True)) == {sent, recent}
    assert not any(object_exists(s3, k) for k in doomed)
    assert all(object_exists(s3, a.key) for a in Attachment.objects.all())
    assert services.delete_orphans() == 0


def test_the_beat_schedule_runs_the_orphan_sweep() -> None:
    from media.tasks import delete_orphans_task

    # What beat runs is what the Celery app was configured with, from settings.
    (entry,) = (e for e in celery_app.conf.beat_schedule.values() if e["task"] == delete_orphans_task.name)
    assert delete_orphans_task.name == "media.tasks.delete_orphans_task"
    assert delete_orphans_task.name in celery_app.tasks
    assert isinstance(entry["schedule"], int | float)
    assert 0 < entry["schedule"] <= django_settings.MEDIA_ORPHAN_SECONDS


def test_made_up_users_cannot_see_anything(s3: S3, alice: User) -> None:
    """A user with no conversations gets not-found for every upload of someone else."""
    stranger = make_user("stranger")
    meta = uploaded(api_for(alice), "a.pdf", pdf())
    error_of(api_for(stranger).get(f"{MEDIA}{meta['id']}/"), 404, "not_found")
    error_of(download(api_for(stranger), meta["id"]), 404, "not_found")
    error_of(api_for(stranger).get(f"{MEDIA}not-a-number/"), 404, "not_found")
