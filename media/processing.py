"""Work on a downloaded file: image checks and derivatives, video posters, audio durations.

Runs on the Celery worker, never in a request. Every function takes a local path and either
returns what it learned or raises :class:`Unprocessable`; bad input never crashes a worker.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from PIL import Image, ImageOps, UnidentifiedImageError


class Unprocessable(Exception):
    """The file is not what it claims (or is hostile): keep it only as a plain file."""


@dataclass
class ImageResult:
    width: int
    height: int
    clean: bytes | None  # the image re-encoded without metadata, when it carried any
    thumbnail: bytes


@dataclass
class MediaResult:
    duration: float | None = None
    width: int | None = None
    height: int | None = None
    poster: bytes | None = None
    has_video: bool = True


def _thumbnail(image: Image.Image) -> bytes:
    thumb = image.convert("RGB") if image.mode not in ("RGB", "L") else image.copy()
    thumb.thumbnail((settings.MEDIA_THUMBNAIL_SIZE, settings.MEDIA_THUMBNAIL_SIZE))
    out = io.BytesIO()
    thumb.save(out, "JPEG", quality=80, optimize=True)
    return out.getvalue()


@contextmanager
def _pixel_limit(limit: int) -> Iterator[None]:
    """Pillow's bomb limit is a global: set ours for one image, leave it as it was after."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = limit
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def process_image(path: Path) -> ImageResult:
    """Verify an image, strip its metadata (EXIF, GPS) and make a thumbnail.

    Decompression bombs (more pixels than MEDIA_MAX_IMAGE_PIXELS), truncated and corrupt
    files raise :class:`Unprocessable`.
    """
    try:
        with _pixel_limit(settings.MEDIA_MAX_IMAGE_PIXELS), warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as probe:
                probe.verify()  # structure and checksums, without decoding
            with Image.open(path) as image:
                image.load()  # decodes every pixel: truncated data fails here
                fmt = image.format or "PNG"
                has_metadata = bool(image.getexif()) or any(
                    key in image.info for key in ("exif", "xmp", "icc_profile", "comment", "photoshop")
                )
                upright = ImageOps.exif_transpose(image) or image
                clean = None
                if has_metadata and not getattr(image, "is_animated", False):
                    out = io.BytesIO()
                    params = {"quality": 90} if fmt == "JPEG" else {}
                    # A fresh image object carries no EXIF, XMP or comments into the new file.
                    upright.save(out, fmt, **params)
                    clean = out.getvalue()
                return ImageResult(upright.width, upright.height, clean, _thumbnail(upright))
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise Unprocessable(f"not a usable image: {type(exc).__name__}") from exc
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        raise Unprocessable(f"corrupt image: {exc}") from exc


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise Unprocessable(f"{name} is not installed")
    return path


def ffmpeg_available() -> bool:
    return shutil.which("ffprobe") is not None and shutil.which("ffmpeg") is not None


def _run(args: list[str]) -> subprocess.CompletedProcess[bytes]:
    """Run ffprobe or ffmpeg on a file we wrote; a file that keeps them busy too long is unprocessable."""
    try:
        return subprocess.run(  # noqa: S603  (fixed arguments, a path we created)
            args, capture_output=True, timeout=settings.MEDIA_FFMPEG_TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired as exc:  # run() has killed the process
        raise Unprocessable(f"{Path(args[0]).name} took longer than {exc.timeout} s") from exc


def process_video_or_audio(path: Path, *, want_poster: bool) -> MediaResult:
    """Duration (and for video: size and a poster frame) from ffprobe/ffmpeg, or mutagen for audio."""
    if not ffmpeg_available():
        return MediaResult(duration=_mutagen_duration(path), has_video=want_poster)
    probe = _run([_tool("ffprobe"), "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)])
    if probe.returncode != 0:
        raise Unprocessable("ffprobe could not read the file")
    info = json.loads(probe.stdout or b"{}")
    streams = info.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    duration = info.get("format", {}).get("duration")
    result = MediaResult(
        duration=float(duration) if duration not in (None, "N/A") else None,
        has_video=video is not None,
        width=int(video["width"]) if video and video.get("width") else None,
        height=int(video["height"]) if video and video.get("height") else None,
    )
    if want_poster and video is not None:
        result.poster = _poster(path)
    return result


def _scale() -> str:
    size = settings.MEDIA_THUMBNAIL_SIZE
    return f"scale='min({size},iw)':-2"


def _poster(path: Path) -> bytes | None:
    with tempfile.TemporaryDirectory() as tmp:
        frame = Path(tmp) / "poster.jpg"
        try:
            done = _run(
                [_tool("ffmpeg"), "-v", "error", "-y", "-i", str(path), "-frames:v", "1", "-vf", _scale(), str(frame)]
            )
        except Unprocessable:
            return None  # a video without a poster is still a video
        if done.returncode != 0 or not frame.exists():
            return None
        return frame.read_bytes()


def _mutagen_duration(path: Path) -> float | None:
    import mutagen

    try:
        parsed = mutagen.File(path)
    except Exception:  # mutagen raises many kinds of errors on bad input
        return None
    if parsed is None or parsed.info is None:
        return None
    length = getattr(parsed.info, "length", None)
    return float(length) if length else None
