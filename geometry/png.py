"""Pictures encoded as PNG."""

from __future__ import annotations

import io

import numpy as np


def png_bytes(rgb: np.ndarray, *, compress_level: int = 1) -> bytes:
    """PNG of an (H, W, 3) uint8 array. zlib level 1 by default: previews are written once
    and read rarely; a texture that viewers download again and again may ask for more."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(
        buf, format="PNG", optimize=False, compress_level=compress_level
    )
    return buf.getvalue()
