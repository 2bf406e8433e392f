"""storage.pictures: which pictures are opened at all, and how their pixels become RGBA."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

from storage.errors import InputError
from storage.pictures import decode_rgba, probe
from tests.pictures import MAX_PIXELS, eps, grey_disk

ALLOWED = "not one of the raster formats PNG, JPEG, MPO, WEBP, BMP, TIFF, GIF, TGA"


CENTRE, CORNER = (48, 48), (2, 2)


def _saved(img: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


# ---------------------------------------------------------------------------- formats


def test_postscript_named_png_is_refused_naming_what_it_is_and_what_is_allowed() -> None:
    with pytest.raises(InputError) as err:
        probe(eps(), max_pixels=MAX_PIXELS, name="picture 'x.png'")
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
        probe(ppm, max_pixels=MAX_PIXELS, name="a.png")


def test_phone_jpeg_that_opens_as_mpo_is_accepted() -> None:
    first, second = Image.new("RGB", (16, 16), (200, 0, 0)), Image.new("RGB", (16, 16))
    mpo = _saved(first, "MPO", save_all=True, append_images=[second])
    assert probe(mpo, max_pixels=MAX_PIXELS).format == "MPO"
    assert decode_rgba(mpo)[8, 8, 0] > 150


# ---------------------------------------------------------------------------- deep pictures


def _opened_as(data: bytes, mode: str) -> bytes:
    assert Image.open(io.BytesIO(data)).mode == mode  # the case under test, really
    return data


def test_sixteen_bit_greyscale_png_is_scaled_by_its_16_bit_range_not_clipped() -> None:
    # A black of 1500 / 65535 is black to the eye; clipped at 255 it would be white.
    disk = grey_disk(disk=50_000, background=1_500, dtype=np.uint16)
    png = _opened_as(_saved(Image.fromarray(disk), "PNG"), "I;16")
    assert png[24] == 16  # IHDR bit depth: saved as 16-bit, not narrowed to 8
    rgba = decode_rgba(png)
    assert tuple(rgba[CENTRE]) == (195, 195, 195, 255)  # 50000 / 257
    assert tuple(rgba[CORNER]) == (6, 6, 6, 255)  # 1500 / 257


def test_sixteen_bit_grey_made_transparent_by_trns_becomes_alpha() -> None:
    disk = grey_disk(disk=50_000, background=1_500, dtype=np.uint16)
    png = _opened_as(_saved(Image.fromarray(disk), "PNG", transparency=1_500), "I;16")
    rgba = decode_rgba(png)
    assert rgba[CORNER][3] == 0 and rgba[CENTRE][3] == 255


def test_32_bit_integers_that_fit_in_16_bits_are_scaled_like_16_bit() -> None:
    disk = grey_disk(disk=50_000, background=1_500, dtype=np.int32)
    tiff = _opened_as(_saved(Image.fromarray(disk), "TIFF"), "I")
    rgba = decode_rgba(tiff)
    assert rgba[CENTRE][0] == 195 and rgba[CORNER][0] == 6


def test_32_bit_integers_beyond_16_bits_are_scaled_by_the_range_they_span() -> None:
    disk = grey_disk(disk=4_000_000, background=100_000, dtype=np.int32)
    rgba = decode_rgba(_opened_as(_saved(Image.fromarray(disk), "TIFF"), "I"))
    assert rgba[CENTRE][0] == 255 and rgba[CORNER][0] == 0


def test_float_picture_in_0_to_1_is_scaled_to_0_to_255() -> None:
    disk = grey_disk(disk=0.8, background=0.02, dtype=np.float32)
    rgba = decode_rgba(_opened_as(_saved(Image.fromarray(disk), "TIFF"), "F"))
    assert rgba[CENTRE][0] == 204 and rgba[CORNER][0] == 5
