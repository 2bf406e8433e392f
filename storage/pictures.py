"""Opening user pictures safely: size limits first, decode second.

Pillow is asked for the header before any pixel is decoded, so a decompression bomb
(a tiny PNG that claims 20000 x 20000 pixels) is refused without allocating it.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from storage.errors import InputError

DEFAULT_MAX_PIXELS = 40_000_000  # e.g. 8000 x 5000
DEFAULT_MAX_SIDE = 16_384


@dataclass(frozen=True)
class PictureInfo:
    format: str
    width: int
    height: int
    mode: str


def probe(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "picture"
) -> PictureInfo:
    """Check that ``data`` is a picture of acceptable size, reading only its header."""
    if not data:
        raise InputError(f"{name} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InputError(f"{name} is not a picture Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        claimed = str(exc).split(" exceeds")[0]  # "Image size (400000000 pixels)"
        raise InputError(
            f"{name} is too large to decode safely: {claimed}; the limit is {max_pixels:,} pixels"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any header failure is the input's fault
        raise InputError(f"{name} could not be opened: {exc}") from None
    w, h = img.size
    if w <= 0 or h <= 0:
        raise InputError(f"{name} has no pixels ({w} x {h})")
    if w * h > max_pixels or max(w, h) > DEFAULT_MAX_SIDE:
        raise InputError(
            f"{name} is {w} x {h} = {w * h:,} pixels; the limit is {max_pixels:,} pixels"
            f" and {DEFAULT_MAX_SIDE} per side"
        )
    return PictureInfo(format=img.format or "?", width=w, height=h, mode=img.mode)


def decode_rgba(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "picture"
) -> np.ndarray:
    """Decode to an (H, W, 4) uint8 RGBA array, refusing bombs and truncated files."""
    probe(data, max_pixels=max_pixels, name=name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            img.load()
            # Phone JPEGs store pixels sideways plus an EXIF turn; "up" must be the
            # picture's up, since it becomes +Y of the mesh.
            rgba = ImageOps.exif_transpose(img).convert("RGBA")
    except OSError as exc:  # truncated or corrupt pixel data
        raise InputError(f"{name} is damaged or truncated: {exc}") from None
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{name} could not be decoded: {exc}") from None
    return np.asarray(rgba, dtype=np.uint8)
