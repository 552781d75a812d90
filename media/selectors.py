"""Reads of media: who may fetch an attachment (the one gate) and its download URLs."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.db.models import Exists, OuterRef, Q

from conversations.models import Membership
from media.models import Attachment
from media.services import AttachmentNotFound


def access_attachment(*, user_id: int, attachment_id: Any) -> Attachment:
    """An attachment its uploader, or a member who can see its message, may fetch.

    Everyone else, every unknown id, and the files of a deleted message get the same
    not-found. One query.
    """
    try:
        pk = int(attachment_id)
    except (TypeError, ValueError):
        raise AttachmentNotFound() from None
    member_sees_it = Membership.objects.filter(
        conversation_id=OuterRef("message__conversation_id"),
        user_id=user_id,
        left_at__isnull=True,
        joined_seq__lt=OuterRef("message__seq"),
    )
    attachment = (
        Attachment.objects.filter(pk=pk)
        .filter(Q(uploader_id=user_id) | Q(Exists(member_sees_it)))
        .exclude(status=Attachment.Status.PENDING)
        .exclude(message__deleted_at__isnull=False)  # deleted for everyone: its files too
        .exclude(message__hidden_at__isnull=False)  # hidden by a moderator: likewise
        .first()
    )
    if attachment is None:
        raise AttachmentNotFound()
    return attachment


def download_headers(attachment: Attachment) -> tuple[str, str]:
    """The content type and disposition to serve with: risky types only as a plain download."""
    if attachment.inline_safe:
        return attachment.content_type, "inline"
    return "application/octet-stream", "attachment"


def presigned_url(attachment: Attachment, *, variant: str) -> str:
    """A short-lived URL of the original or its thumbnail (S3), with safe response headers."""
    if variant == "thumbnail":
        key, content_type, disposition = attachment.thumbnail_key, "image/jpeg", "inline"
    else:
        key = attachment.key
        content_type, disposition = download_headers(attachment)
    filename = attachment.filename.encode("ascii", "replace").decode()
    store: Any = default_storage  # S3Storage.url takes extra arguments
    url: str = store.url(
        key,
        parameters={
            "ResponseContentType": content_type,
            "ResponseContentDisposition": f'{disposition}; filename="{filename}"',
        },
        expire=settings.MEDIA_URL_EXPIRY_SECONDS,
    )
    return url
