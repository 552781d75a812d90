"""Writes of media: uploads (through us or straight to the store), processing, attaching, clean-up."""

from __future__ import annotations

import functools
import hashlib
import logging
import secrets
import tempfile
import unicodedata
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from chat_project.errors import ApplicationError, InvalidInput, NotFound
from media import processing
from media.models import Attachment
from media.sniff import GENERIC, SNIFF_BYTES, sniff

logger = logging.getLogger(__name__)
CHUNK = 1024 * 1024


class TooLarge(ApplicationError):
    code = "too_large"
    status_code = 413
    default_detail = "The file is larger than allowed."


class NotUploaded(ApplicationError):
    code = "not_uploaded"
    status_code = 409
    default_detail = "The file has not been uploaded yet."


class DirectUploadUnavailable(ApplicationError):
    code = "direct_upload_unavailable"
    status_code = 409
    default_detail = "This server stores files locally: upload with POST /api/v1/media/ instead."


class AttachmentNotFound(NotFound):
    default_detail = "Attachment not found."


def max_bytes(kind: str) -> int:
    """The size limit for a kind of attachment."""
    limit: int = settings.MEDIA_MAX_BYTES[kind]
    return limit


def upload_limit() -> int:
    """The largest upload of any kind: what a request may carry at most."""
    return int(max(settings.MEDIA_MAX_BYTES.values()))


def _check_size(kind: str, size: int) -> None:
    if size > max_bytes(kind):
        raise TooLarge(f"{kind.capitalize()} files are limited to {max_bytes(kind) // (1024 * 1024)} MB.")
    if size <= 0:
        raise InvalidInput(fields={"file": ["The file is empty."]})


def clean_filename(name: Any) -> str:
    """A display name safe to store and to put in a Content-Disposition header."""
    text = unicodedata.normalize("NFC", str(name or "file")).replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(ch for ch in text if ch.isprintable() and ch not in '"<>')[:200].strip(" .")
    return text or "file"


def stored_content_type(content_type: str) -> str:
    """The Content-Type an object is stored with: its sniffed type if browsers may show it inline."""
    return content_type if content_type in settings.MEDIA_INLINE_TYPES else GENERIC


def _new_key(suffix: str = "") -> str:
    return f"att/{secrets.token_urlsafe(24)}{suffix}"


def _enqueue_processing(attachment: Attachment) -> None:
    from media.tasks import process_attachment_task

    attachment_id = attachment.pk
    transaction.on_commit(lambda: process_attachment_task.delay(attachment_id))


def store_upload(*, uploader: User, file: File[Any]) -> Attachment:
    """Store a file that came through us (streamed from the request's temporary file)."""
    head = file.read(SNIFF_BYTES)
    file.seek(0)
    sniffed = sniff(head)
    size = int(file.size or 0)
    _check_size(sniffed.kind, size)
    # The store labels the object with the client's Content-Type unless told otherwise:
    # never keep a type the client chose (text/html named .jpg) on an object in our bucket.
    file.content_type = stored_content_type(sniffed.content_type)  # type: ignore[attr-defined]  # UploadedFile's field
    key = default_storage.save(_new_key(), file)
    with transaction.atomic():
        attachment = Attachment.objects.create(
            uploader=uploader,
            key=key,
            filename=clean_filename(file.name),
            kind=sniffed.kind,
            content_type=sniffed.content_type,
            size=size,
            declared_size=size,
            status=Attachment.Status.PROCESSING,
        )
        _enqueue_processing(attachment)
    return attachment


def _s3_client() -> Any:
    client = getattr(getattr(default_storage, "connection", None), "meta", None)
    if client is None or not settings.AWS_STORAGE_BUCKET_NAME:
        raise DirectUploadUnavailable()
    return client.client


def start_direct_upload(*, uploader: User, filename: Any, size: Any) -> tuple[Attachment, dict[str, Any]]:
    """Reserve an attachment and presign a POST straight to the store, bounded to ``size`` bytes."""
    if not isinstance(size, int) or isinstance(size, bool):
        raise InvalidInput(fields={"size": ["The file's size in bytes."]})
    if size > upload_limit():
        raise TooLarge(f"Files are limited to {upload_limit() // (1024 * 1024)} MB.")
    _check_size("file", size)
    client = _s3_client()
    key = _new_key()
    attachment = Attachment.objects.create(
        uploader=uploader, key=key, filename=clean_filename(filename), declared_size=size
    )
    presigned = client.generate_presigned_post(
        Bucket=settings.AWS_STORAGE_BUCKET_NAME,
        Key=key,
        Conditions=[["content-length-range", 1, size]],
        ExpiresIn=settings.MEDIA_UPLOAD_URL_EXPIRY_SECONDS,
    )
    return attachment, {"method": "POST", "url": presigned["url"], "fields": presigned["fields"]}


def _read_head(key: str) -> bytes:
    """The first bytes of a stored object, without fetching the rest of it.

    (Opening an S3 object through the storage downloads all of it, into memory.)
    """
    if getattr(default_storage, "bucket_name", None):
        response = _s3_client().get_object(
            Bucket=settings.AWS_STORAGE_BUCKET_NAME, Key=key, Range=f"bytes=0-{SNIFF_BYTES - 1}"
        )
        head: bytes = response["Body"].read()
        return head
    with default_storage.open(key, "rb") as stored:
        data: bytes = stored.read(SNIFF_BYTES)
        return data


def complete_direct_upload(*, uploader: User, attachment_id: Any) -> Attachment:
    """Confirm a direct upload: check its real size and type, then process it.

    The presigned policy bounds the size at the store; it is checked again here, since not
    every S3-compatible store enforces policies. The object is first copied to a key no
    presigned request names: the POST stays valid until it expires, and must not be able to
    swap the file after it was checked. Completing twice is harmless.
    """
    with transaction.atomic():
        attachment = Attachment.objects.select_for_update().filter(pk=attachment_id, uploader=uploader).first()
        if attachment is None:
            raise AttachmentNotFound()
        if attachment.status != Attachment.Status.PENDING:
            return attachment
        if not default_storage.exists(attachment.key):
            raise NotUploaded()
        posted_key, attachment.key = attachment.key, _seal(attachment.key)
        transaction.on_commit(lambda: default_storage.delete(posted_key))
        size = default_storage.size(attachment.key)
        sniffed = sniff(_read_head(attachment.key))
        refusal = _refusal(sniffed.kind, size, declared=attachment.declared_size)
        if refusal is None:
            attachment.kind, attachment.content_type, attachment.size = sniffed.kind, sniffed.content_type, size
            attachment.status = Attachment.Status.PROCESSING
            attachment.save(update_fields=["key", "kind", "content_type", "size", "status"])
            _enqueue_processing(attachment)
            return attachment
        key = attachment.key
        attachment.delete()
        transaction.on_commit(lambda: default_storage.delete(key))
    raise refusal


def _seal(key: str) -> str:
    """Copy a directly uploaded object to a fresh key inside the store; return that key."""
    sealed = _new_key()
    _s3_client().copy_object(
        Bucket=settings.AWS_STORAGE_BUCKET_NAME,
        Key=sealed,
        CopySource={"Bucket": settings.AWS_STORAGE_BUCKET_NAME, "Key": key},
    )
    return sealed


def _refusal(kind: str, size: int, *, declared: int) -> ApplicationError | None:
    if size > declared:
        return TooLarge("The file is larger than the size declared for its upload.")
    try:
        _check_size(kind, size)
    except ApplicationError as exc:
        return exc
    return None


def _download(key: str, into: IO[bytes]) -> tuple[str, int]:
    """Copy a stored object to a local file in chunks; return its sha256 and size."""
    digest, size = hashlib.sha256(), 0
    with default_storage.open(key, "rb") as stored:
        while chunk := stored.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            into.write(chunk)
    into.flush()
    return digest.hexdigest(), size


def process_attachment(attachment_id: int) -> int | None:
    """Check and enrich an uploaded file; return its message id if members must hear of it.

    Safe to run twice: a processed attachment is left alone. A file that is not what it
    claims becomes a plain file; nothing here raises on bad input.
    """
    attachment = Attachment.objects.filter(pk=attachment_id, status=Attachment.Status.PROCESSING).first()
    if attachment is None:
        return None
    fields = ["sha256", "size", "status", "processed_at", "kind", "content_type", "width", "height"]
    replaced = None
    with tempfile.NamedTemporaryFile(suffix=".upload") as local:
        attachment.sha256, attachment.size = _download(attachment.key, local)
        path = Path(local.name)
        try:
            if attachment.kind == Attachment.Kind.IMAGE:
                replaced = _process_image(attachment, path, fields)
            elif attachment.kind in (Attachment.Kind.VIDEO, Attachment.Kind.AUDIO):
                _process_av(attachment, path, fields)
        except processing.Unprocessable as exc:
            logger.info("attachment %s kept as a plain file: %s", attachment.pk, exc)
            attachment.kind, attachment.content_type = Attachment.Kind.FILE, "application/octet-stream"
            attachment.width = attachment.height = None
            attachment.error = str(exc)[:255]
            fields.append("error")
    attachment.status, attachment.processed_at = Attachment.Status.READY, timezone.now()
    made = [key for key in (attachment.thumbnail_key, attachment.key if replaced else "") if key]
    # Finish only if nobody else did meanwhile (a second delivery of the task, or the orphan
    # sweep deleting the row): otherwise what this run stored is nobody's and goes.
    values = {name: getattr(attachment, name) for name in dict.fromkeys(fields)}
    if not Attachment.objects.filter(pk=attachment.pk, status=Attachment.Status.PROCESSING).update(**values):
        for key in made:
            default_storage.delete(key)
        return None
    if replaced:
        default_storage.delete(replaced)
    # Read the message link afresh: the file may have been sent while it was processed
    # (sending locks the row, so this sees any send that saw it unprocessed).
    message_id: int | None = Attachment.objects.filter(pk=attachment.pk).values_list("message_id", flat=True).first()
    return message_id


def _process_image(attachment: Attachment, path: Path, fields: list[str]) -> str | None:
    """Record an image's size, replace it by a metadata-free copy if needed, add a thumbnail.

    Returns the key of the replaced original, to delete once the row points at the copy.
    """
    replaced = None
    result = processing.process_image(path)
    attachment.width, attachment.height = result.width, result.height
    if result.clean is not None:
        # Replace the original with the metadata-free copy under a new key.
        replaced = attachment.key
        attachment.key = default_storage.save(_new_key(), ContentFile(result.clean))
        attachment.size = len(result.clean)
        attachment.sha256 = hashlib.sha256(result.clean).hexdigest()
        fields.append("key")
    attachment.thumbnail_key = default_storage.save(_new_key(".jpg"), ContentFile(result.thumbnail))
    fields.append("thumbnail_key")
    return replaced


def _process_av(attachment: Attachment, path: Path, fields: list[str]) -> None:
    result = processing.process_video_or_audio(path, want_poster=attachment.kind == Attachment.Kind.VIDEO)
    attachment.duration = result.duration
    fields.append("duration")
    if attachment.kind == Attachment.Kind.VIDEO and not result.has_video:
        attachment.kind = Attachment.Kind.AUDIO  # e.g. a voice note recorded as audio-only WebM
        attachment.content_type = attachment.content_type.replace("video/", "audio/")
    attachment.width, attachment.height = result.width, result.height
    if result.poster:
        attachment.thumbnail_key = default_storage.save(_new_key(".jpg"), ContentFile(result.poster))
        fields.append("thumbnail_key")


def claim_for_message(*, uploader: User, attachment_ids: Any) -> list[Attachment]:
    """Lock the sender's unattached, uploaded attachments for a message being sent."""
    if not isinstance(attachment_ids, list) or not all(
        isinstance(a, int) and not isinstance(a, bool) for a in attachment_ids
    ):
        raise InvalidInput(fields={"attachment_ids": ["A list of attachment ids."]})
    ids = list(dict.fromkeys(attachment_ids))
    if len(ids) > settings.MEDIA_MAX_PER_MESSAGE:
        raise InvalidInput(fields={"attachment_ids": [f"At most {settings.MEDIA_MAX_PER_MESSAGE} attachments."]})
    attachments = list(
        Attachment.objects.select_for_update()
        .filter(pk__in=ids, uploader=uploader, message__isnull=True)
        .exclude(status=Attachment.Status.PENDING)
        .order_by("pk")
    )
    if len(attachments) != len(ids):
        raise AttachmentNotFound("Some attachments are unknown, not uploaded yet, or already sent.")
    # Upload order, as every later read lists them (the order of the ids is not stored).
    return attachments


def attach(*, attachments: Iterable[Attachment], message_id: int) -> None:
    Attachment.objects.filter(pk__in=[a.pk for a in attachments]).update(message_id=message_id)


def delete_orphans(*, older_than: timedelta | None = None, batch: int = 500) -> int:
    """Delete uploads never attached to a message within MEDIA_ORPHAN_SECONDS, and their objects.

    Rows go first, in batches that skip rows a send has locked; their objects go after each
    commit, so a file is never deleted from under a message that was sent meanwhile.
    """
    cutoff = timezone.now() - (older_than or timedelta(seconds=settings.MEDIA_ORPHAN_SECONDS))
    deleted = 0
    while True:
        with transaction.atomic():
            orphans = list(
                Attachment.objects.select_for_update(skip_locked=True)
                .filter(message__isnull=True, created_at__lt=cutoff)
                .order_by("created_at")[:batch]
            )
            Attachment.objects.filter(pk__in=[a.pk for a in orphans]).delete()
            keys = [key for a in orphans for key in (a.key, a.thumbnail_key) if key]
            transaction.on_commit(functools.partial(_delete_objects, keys))
        deleted += len(orphans)
        if len(orphans) < batch:
            return deleted


def _delete_objects(keys: list[str]) -> None:
    for key in keys:
        default_storage.delete(key)
