"""Attachments: files users share, stored in an S3-compatible bucket (or var/media).

An attachment is uploaded first (multipart through us, or straight to the store with a
presigned request), then attached to one message. Until a worker has processed it (type
sniffed from the bytes, EXIF stripped, thumbnail or poster made) only its uploader can
fetch it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.conf import settings
from django.db import models
from django.db.models import Q


class Attachment(models.Model):
    class Kind(models.TextChoices):
        IMAGE = "image", "Image"
        VIDEO = "video", "Video"
        AUDIO = "audio", "Audio"
        FILE = "file", "File"

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for the upload"
        PROCESSING = "processing", "Processing"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    uploader = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="attachments")
    # Not enforced by the database: messages are partitioned (see conversations.models.Message).
    message = models.ForeignKey(
        "conversations.Message",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="attachments",
        db_constraint=False,
    )
    # The object's key in the store: random, so it cannot be guessed.
    key = models.CharField(max_length=255, unique=True)
    filename = models.CharField(max_length=255)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.FILE)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    content_type = models.CharField(max_length=100, default="application/octet-stream")
    size = models.BigIntegerField(default=0)
    declared_size = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    duration = models.FloatField(null=True, blank=True)
    thumbnail_key = models.CharField(max_length=255, blank=True)
    error = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes: ClassVar[list[Any]] = [
            # The orphan sweep: unattached uploads by age.
            models.Index(fields=["created_at"], condition=Q(message__isnull=True), name="attachment_orphans"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.filename} ({self.pk})"

    @property
    def inline_safe(self) -> bool:
        """Whether a browser may show it inline from our origin (never HTML, SVG or unknown types)."""
        return self.content_type in settings.MEDIA_INLINE_TYPES
