"""The WebSocket contract: frame parsing, error codes, close codes. See docs/protocol.md."""

from __future__ import annotations

from typing import Any

import orjson
from django.conf import settings

from chat_project.errors import ApplicationError, InvalidInput

PROTOCOL_VERSION = 1
MAX_SYNC_CURSORS = 10_000
MAX_PRESENCE_SUBSCRIPTIONS = 256


class ProtocolError(ApplicationError):
    """A frame we cannot act on; answered with an ``error`` frame, the socket stays open."""


class MalformedFrame(ProtocolError):
    code = "malformed"
    default_detail = "Frames are JSON objects with a string 'type'."


class FrameTooLarge(ProtocolError):
    code = "frame_too_large"
    default_detail = "The frame is larger than the server accepts."


class UnknownType(ProtocolError):
    code = "unknown_type"
    default_detail = "Unknown frame type."


class RateLimitedFrame(ProtocolError):
    code = "rate_limited"
    default_detail = "Slow down: too many messages."


def parse_frame(text: str | None, data: bytes | None) -> dict[str, Any]:
    """Decode one client frame: a JSON object with a string ``type``."""
    raw = text if text is not None else data
    if raw is None:
        raise MalformedFrame()
    if len(raw) > settings.WS_MAX_FRAME_BYTES:
        raise FrameTooLarge(f"Frames are at most {settings.WS_MAX_FRAME_BYTES} bytes.")
    try:
        frame = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise MalformedFrame("The frame is not valid JSON.") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise MalformedFrame()
    frame_id = frame.get("id")
    if frame_id is not None and not isinstance(frame_id, str | int):
        raise MalformedFrame("'id' must be a string or an integer.")
    return frame


def error_frame(error: ApplicationError, frame_id: Any = None) -> dict[str, Any]:
    """The one WebSocket error shape."""
    frame: dict[str, Any] = {"type": "error", "code": error.code, "detail": error.detail, "id": frame_id}
    if error.fields:
        frame["fields"] = error.fields
    return frame


def require(frame: dict[str, Any], *names: str) -> list[Any]:
    """The named fields of a frame, or an ``invalid`` error naming those missing."""
    missing = [name for name in names if frame.get(name) is None]
    if missing:
        raise InvalidInput(fields={name: ["This field is required."] for name in missing})
    return [frame[name] for name in names]


def check_cursors(value: Any) -> dict[int, int]:
    """A sync request's cursors: ``{"<conversation_id>": <version>}``."""
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_SYNC_CURSORS:
        raise InvalidInput(fields={"cursors": [f"An object of at most {MAX_SYNC_CURSORS} conversation cursors."]})
    cursors: dict[int, int] = {}
    for key, version in value.items():
        if not str(key).isdigit() or not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise InvalidInput(fields={"cursors": ['Each entry is "<conversation_id>": <version >= 0>.']})
        cursors[int(key)] = version
    return cursors
