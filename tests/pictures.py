"""Pictures and job files drawn by the tests themselves."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from config import load_settings

# The configured picture pixel limit (defaults.yaml), for storage checks a test calls.
MAX_PIXELS = load_settings(env={}).limits.max_picture_pixels


def disk_png(size: int = 96, *, background: tuple[int, ...] | None = None) -> bytes:
    """A red disk; transparent background unless ``background`` (RGB) is given."""
    mode = "RGBA" if background is None else "RGB"
    img = Image.new(mode, (size, size), (0, 0, 0, 0) if background is None else background)
    ImageDraw.Draw(img).ellipse(
        [size * 0.2, size * 0.15, size * 0.8, size * 0.85], fill=(200, 40, 40)
    )
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def grey_disk(size: int = 96, *, disk: float, background: float, dtype: type) -> np.ndarray:
    """A bright disk on a dark ground, as one band of ``dtype`` (e.g. np.uint16)."""
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size * 0.3) ** 2
    return np.where(inside, disk, background).astype(dtype)


def blank_png(size: int = 64, *, transparent: bool) -> bytes:
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0) if transparent else (255, 255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A PNG whose header claims ``width x height`` pixels but carries almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def eps() -> bytes:
    """A real (tiny) Encapsulated PostScript file: a program Ghostscript would run."""
    return (
        b"%!PS-Adobe-3.0 EPSF-3.0\n"
        b"%%BoundingBox: 0 0 32 32\n"
        b"%%EndComments\n"
        b"newpath 4 4 moveto 28 28 lineto 4 28 lineto closepath fill\n"
        b"showpage\n"
        b"%%EOF\n"
    )


def write_job(folder: Path, name: str, doc: Any, **pictures: bytes) -> Path:
    """Write pictures (file name -> bytes) and a job file into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for fname, data in pictures.items():
        (folder / fname.replace("__", ".")).write_bytes(data)
    path = folder / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path
