"""storage.pictures: which pictures are opened at all, and how their pixels become RGBA."""

from __future__ import annotations

import io

import pytest
from PIL import Image, UnidentifiedImageError

from storage.errors import InputError
from storage.pictures import decode_rgba, probe
from tests.pictures import eps

ALLOWED = "not one of the raster formats PNG, JPEG, MPO, WEBP, BMP, TIFF, GIF, TGA"


def _saved(img: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


# ---------------------------------------------------------------------------- formats


def test_postscript_named_png_is_refused_naming_what_it_is_and_what_is_allowed() -> None:
    with pytest.raises(InputError) as err:
        probe(eps(), name="picture 'x.png'")
    assert str(err.value) == f"picture 'x.png' is EPS, {ALLOWED}"


def test_postscript_is_refused_by_decode_before_ghostscript_is_tried() -> None:
    with pytest.raises(InputError) as err:
        decode_rgba(eps(), name="x.png")
    assert "x.png is EPS" in str(err.value) and "Ghostscript" not in str(err.value)


def test_pillow_in_this_process_no_longer_opens_postscript_at_all() -> None:
    # trimesh opens mesh textures with a plain Image.open, which cannot be given formats=.
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(eps()))


def test_picture_in_a_format_outside_the_list_is_refused_by_name() -> None:
    ppm = _saved(Image.new("RGB", (8, 8)), "PPM")
    with pytest.raises(InputError, match=f"^a.png is PPM, {ALLOWED}$"):
        probe(ppm, name="a.png")


def test_phone_jpeg_that_opens_as_mpo_is_accepted() -> None:
    first, second = Image.new("RGB", (16, 16), (200, 0, 0)), Image.new("RGB", (16, 16))
    mpo = _saved(first, "MPO", save_all=True, append_images=[second])
    assert probe(mpo).format == "MPO"
    assert decode_rgba(mpo)[8, 8, 0] > 150
