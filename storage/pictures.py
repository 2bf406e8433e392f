"""Opening user pictures safely: raster formats only, size limits first, decode second.

Pillow is asked for the header before any pixel is decoded, so a decompression bomb
(a tiny PNG that claims 20000 x 20000 pixels) is refused without allocating it. It is
only ever offered the raster formats of ``RASTER_FORMATS``: whatever the file's name
says, a PostScript file is not opened at all (Pillow would run Ghostscript on it).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from storage.errors import InputError

# The pixel limit of ``decode_rgba`` when its caller names none: the adapters' decode of
# a picture that ingest already held to the configured ``limits.max_picture_pixels``.
# Every other check here takes the configured limit from its caller.
DEFAULT_MAX_PIXELS = 40_000_000  # e.g. 8000 x 5000
DEFAULT_MAX_SIDE = 16_384

# The formats photos, renders and textures come in: glTF's own (PNG, JPEG, and WEBP by
# EXT_texture_webp), the usual OBJ/MTL textures (TGA, BMP, TIFF), GIF, and MPO, which is
# what a phone's JPEG opens as. Each is decoded by Pillow's own code in this process.
# Left out: EPS (Pillow hands it to Ghostscript, a PostScript interpreter) and the long
# tail Pillow also reads (PSD, DDS, ICO, FITS, ...): no user needs them here, and each
# is one more parser a stranger's bytes would reach.
RASTER_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "BMP", "TIFF", "GIF", "TGA")
# Pillow openers that start another program to decode.
_RUNS_A_PROGRAM = ("EPS",)
_LISTED = ", ".join(RASTER_FORMATS)


@dataclass(frozen=True)
class PictureInfo:
    format: str
    width: int
    height: int
    mode: str


def _registry() -> tuple[tuple[str, ...], dict[str, Callable[[bytes], bool | str]]]:
    """The allow-listed openers Pillow has, and every signature test it knows (to name a
    format we refuse).

    Then, as defence in depth, the openers that run a program are dropped from Pillow's
    registry for the whole process: trimesh opens mesh textures with a plain
    ``Image.open`` that cannot be limited to ``formats=``, and any other library that
    ever does the same now cannot turn a stranger's file into a Ghostscript run either.
    ``Image.init()`` first, so that no later lazy ``init()`` registers them again.
    """
    Image.init()
    signatures = {fmt: accept for fmt, (_, accept) in Image.OPEN.items() if accept is not None}
    for fmt in _RUNS_A_PROGRAM:
        Image.OPEN.pop(fmt, None)
        if fmt in Image.ID:
            Image.ID.remove(fmt)
    # MPO has no opener of its own: JPEG's returns an MPO image when there is one.
    return tuple(f for f in RASTER_FORMATS if f in Image.OPEN), signatures


_OPENERS, _SIGNATURES = _registry()


def not_raster(found: str, name: str) -> InputError:
    """The error for a picture in a format outside ``RASTER_FORMATS``."""
    return InputError(f"{name} is {found}, not one of the raster formats {_LISTED}")


def _format_of(data: bytes) -> str | None:
    """The format Pillow's signature tests say ``data`` is in, opening nothing."""
    prefix = data[:16]
    for fmt, accept in _SIGNATURES.items():
        try:
            said = accept(prefix)
        except Exception:  # noqa: BLE001 - a signature test that trips is a "no"
            continue
        if said and not isinstance(said, str):  # a str is Pillow's "maybe, but ..."
            return fmt
    return None


def _open(data: bytes, name: str) -> Image.Image:
    """Pillow's lazy image (header read, no pixels) for an allow-listed raster picture."""
    try:
        return Image.open(io.BytesIO(data), formats=_OPENERS)
    except UnidentifiedImageError:
        found = _format_of(data)
        if found in RASTER_FORMATS:
            raise InputError(
                f"{name} starts like a {found} file, but its header is damaged"
            ) from None
        if found is not None:
            raise not_raster(found, name) from None
        raise InputError(
            f"{name} is not a picture in one of the raster formats {_LISTED}"
        ) from None


def probe(data: bytes, *, max_pixels: int, name: str = "picture") -> PictureInfo:
    """Check that ``data`` is a picture of acceptable size, reading only its header."""
    if not data:
        raise InputError(f"{name} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = _open(data, name)
    except InputError:
        raise
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


def cut_short(data: bytes) -> bool:
    """Whether ``data`` is, by its format's own end marker, a picture whose writer has
    not finished (PNG without its IEND chunk, JPEG without its end-of-image marker, GIF
    without its trailer). A cheap look at the last bytes, never a decode; formats without
    an end marker say False. Used only to wait a little longer for a fresh picture:
    some cameras append data after the JPEG end marker, so this must never reject."""
    if data.startswith(b"\x89PNG"):
        return b"IEND" not in data[-4096:]
    if data.startswith(b"\xff\xd8"):
        return not data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9")
    if data.startswith((b"GIF87a", b"GIF89a")):
        return not data.rstrip(b"\x00").endswith(b";")
    return False


def _decoded(data: bytes, name: str) -> Image.Image:
    """Every pixel of a picture ``probe`` passed, decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = _open(data, name)
            img.load()
    except InputError:
        raise
    except OSError as exc:  # truncated or corrupt pixel data
        raise InputError(f"{name} is damaged or truncated: {exc}") from None
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{name} could not be decoded: {exc}") from None
    return img


def check_picture(data: bytes, *, max_pixels: int, name: str = "picture") -> PictureInfo:
    """``probe``, then decode every pixel once: for a picture another library decodes
    later (a mesh's texture: trimesh drops one that fails, silently), so that a damaged
    one is refused here, with a reason."""
    info = probe(data, max_pixels=max_pixels, name=name)
    _decoded(data, name)
    return info


def decode_rgba(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "picture"
) -> np.ndarray:
    """Decode to an (H, W, 4) uint8 RGBA array, refusing bombs and truncated files."""
    probe(data, max_pixels=max_pixels, name=name)
    img = _decoded(data, name)
    try:
        # Phone JPEGs store pixels sideways plus an EXIF turn; "up" must be the
        # picture's up, since it becomes +Y of the mesh.
        rgba = eight_bit(ImageOps.exif_transpose(img)).convert("RGBA")
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{name} could not be decoded: {exc}") from None
    return np.asarray(rgba, dtype=np.uint8)


def eight_bit(img: Image.Image) -> Image.Image:
    """A 16- or 32-bit greyscale picture as 8-bit "L" (or "LA"), scaled by the range its
    data is in; any other picture unchanged.

    Pillow's own conversion to RGBA clips these at 255, so a 16-bit photo whose black
    is a few hundred comes out white all over, and then has no foreground. A 16-bit
    PNG's transparent grey (tRNS), which that conversion ignores too, becomes alpha.
    """
    if img.mode not in ("I", "F") and not img.mode.startswith("I;16"):
        return img
    values = np.asarray(img).astype(np.float32)
    lo, hi = _data_range(img.mode, values)
    values = np.nan_to_num(values, nan=lo, posinf=hi, neginf=lo)
    scaled = (values - lo) * (255 / max(hi - lo, 1e-12))
    grey = Image.fromarray(np.clip(np.round(scaled), 0, 255).astype(np.uint8))
    key = img.info.get("transparency")
    if not isinstance(key, int):
        return grey
    alpha = np.where(np.asarray(img) == key, 0, 255).astype(np.uint8)
    return Image.merge("LA", (grey, Image.fromarray(alpha)))


def _data_range(mode: str, values: np.ndarray) -> tuple[float, float]:
    """The values that become black and white. "I;16*": their 16-bit range. "I" (32-bit
    integers; older Pillow gave 16-bit PNGs this mode): the 16-bit range when its values
    fit in it, else the range they span. "F": 0..1 when its values lie there (floats are
    usually normalised), else the range they span."""
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if mode.startswith("I;16") or (mode == "I" and lo >= 0 and hi <= 65535):
        return 0.0, 65535.0
    if mode == "F" and lo >= 0 and hi <= 1:
        return 0.0, 1.0
    return lo, hi
