"""The WebSocket contract: frame parsing, error codes, close codes. See docs/protocol.md."""

from __future__ import annotations

from typing import Any

import orjson

from chat_project.errors import ApplicationError

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 256 * 1024


class ProtocolError(ApplicationError):
    """A frame we cannot act on; answered with an ``error`` frame, the socket stays open."""


class MalformedFrame(ProtocolError):
    code = "malformed"
    default_detail = "Frames are JSON objects with a string 'type'."


class FrameTooLarge(ProtocolError):
    code = "frame_too_large"
    default_detail = f"Frames are at most {MAX_FRAME_BYTES} bytes."


class UnknownType(ProtocolError):
    code = "unknown_type"
    default_detail = "Unknown frame type."


def parse_frame(text: str | None, data: bytes | None) -> dict[str, Any]:
    """Decode one client frame: a JSON object with a string ``type``."""
    raw = text if text is not None else data
    if raw is None:
        raise MalformedFrame()
    if len(raw) > MAX_FRAME_BYTES:
        raise FrameTooLarge()
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
