"""What a file is, decided from its bytes: never from the client's header or file name."""

from __future__ import annotations

from dataclasses import dataclass

import filetype

from media.models import Attachment

SNIFF_BYTES = 8192

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
VIDEO_TYPES = frozenset({"video/mp4", "video/webm", "video/quicktime", "video/x-matroska"})
AUDIO_TYPES = frozenset(
    {
        "audio/mpeg",
        "audio/ogg",
        "audio/mp4",
        "audio/x-m4a",
        "audio/x-wav",
        "audio/wav",
        "audio/webm",
        "audio/aac",
        "audio/x-flac",
    }
)
GENERIC = "application/octet-stream"


@dataclass(frozen=True)
class Sniffed:
    kind: str
    content_type: str


def sniff(head: bytes) -> Sniffed:
    """Classify a file by its first bytes (at least :data:`SNIFF_BYTES` when it has them).

    Anything that is not a known image, video or audio container is a plain file; its
    content type is kept only if the bytes name one, and it is always served as a download.
    """
    guess = filetype.guess(head) if head else None
    mime = guess.mime if guess is not None else GENERIC
    if mime in IMAGE_TYPES:
        return Sniffed(Attachment.Kind.IMAGE, mime)
    if mime in VIDEO_TYPES:
        return Sniffed(Attachment.Kind.VIDEO, mime)
    if mime in AUDIO_TYPES:
        return Sniffed(Attachment.Kind.AUDIO, mime)
    return Sniffed(Attachment.Kind.FILE, mime)
