"""Files for media tests, made on the spot."""

from __future__ import annotations

import io
import struct
import subprocess
import zlib
from pathlib import Path

from PIL import Image

GPS_IFD = 0x8825


def jpeg_with_gps(width: int = 1200, height: int = 800) -> bytes:
    """A photo carrying EXIF with a GPS position, as phones write them."""
    image = Image.new("RGB", (width, height), (30, 140, 90))
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[GPS_IFD] = {1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 36.0)}
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif, quality=85)
    return out.getvalue()


def png(width: int = 64, height: int = 64) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (width, height), (200, 50, 50, 255)).save(out, "PNG")
    return out.getvalue()


def pdf() -> bytes:
    return (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
        b"2 0 obj<</Type/Pages/Count 0/Kids[]>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
    )


def exif_of(data: bytes) -> dict[int, object]:
    with Image.open(io.BytesIO(data)) as image:
        return dict(image.getexif())


def png_bomb(side: int = 20_000) -> bytes:
    """A PNG of a few dozen KB that decodes to ``side`` x ``side`` pixels of one colour.

    Written chunk by chunk, so making it never holds the decoded image (a decompression bomb).
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes((side + 7) // 8)  # filter byte, then one bit per pixel, all black
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def truncated_jpeg() -> bytes:
    """A photo cut in the middle of its scan data, as an interrupted upload leaves it."""
    data = jpeg_with_gps()
    return data[: len(data) // 2]


HTML = b"<!doctype html><html><body><script>fetch('/api/v1/conversations/')</script></body></html>\n"
SVG_WITH_SCRIPT = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    b"<script>alert(document.cookie)</script><rect width='10' height='10'/></svg>\n"
)


def ffmpeg(out: Path, *args: str) -> bytes:
    """A file made by Debian's ffmpeg from one of its test sources (lavfi)."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args, str(out)], check=True, timeout=60)
    return out.read_bytes()


XMP_WITH_GPS = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="52,31.2N"'
    b' exif:GPSLongitude="13,24.6E"/></rdf:RDF></x:xmpmeta>'
)


def photo_with_position(fmt: str, width: int = 800, height: int = 600) -> bytes:
    """An image in ``fmt`` whose EXIF (and XMP, where the format has it) gives a GPS position."""
    image = Image.new("RGB", (width, height), (90, 30, 140))
    exif = Image.Exif()
    exif[GPS_IFD] = {1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 36.0)}
    out = io.BytesIO()
    extra = {"xmp": XMP_WITH_GPS} if fmt in ("JPEG", "WEBP") else {}
    image.save(out, fmt, exif=exif, **extra)
    return out.getvalue()
