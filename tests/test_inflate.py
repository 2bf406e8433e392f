"""builtin-inflate: the silhouette, the frame, the colours and the failures, on drawn shapes."""

from __future__ import annotations

import io
from functools import cache

import numpy as np
import pytest
import trimesh
from PIL import Image
from pydantic import ValidationError

from adapters.base import InputError, Item, Result
from adapters.builtin.inflate import InflateAdapter
from adapters.builtin.inflate.pipeline import InflateParams, inflate_mesh
from adapters.builtin.subject import foreground_mask
from geometry.render import render, silhouette
from tests.pictures import grey_disk
from tests.shapes import SHAPES, picture


def _crop(mask: np.ndarray) -> np.ndarray:
    r, c = np.nonzero(mask)
    return mask[r.min() : r.max() + 1, c.min() : c.max() + 1]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def _front(mesh: trimesh.Trimesh, mask: np.ndarray) -> np.ndarray:
    """The mesh seen from +Z, drawn at the size of the picture's silhouette."""
    crop = _crop(mask)
    return silhouette(mesh, crop.shape[1], crop.shape[0], view="front")


def _png(rgba: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, format="PNG")
    return buf.getvalue()


@cache
def _inflated(shape: str, background: str) -> trimesh.Trimesh:
    """Default-params mesh of a drawn shape, made once per module (tests only read it)."""
    return inflate_mesh(picture(SHAPES[shape](), background))


def _item(job_id: int, rgba: np.ndarray, **params: object) -> Item:
    return Item(job_id=job_id, task="mesh", params=dict(params), images=[_png(rgba)])


# ------------------------------------------------------------------ shape and frame


@pytest.mark.parametrize("background", ["transparent", "white", "teal"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_front_silhouette_matches_the_picture_and_mesh_is_watertight(
    shape: str, background: str
) -> None:
    mask = SHAPES[shape]()
    mesh = _inflated(shape, background)
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
    assert mesh.nondegenerate_faces().all()
    assert _iou(_front(mesh, mask), _crop(mask)) >= 0.95


@pytest.mark.parametrize("shape", ["l_shape", "figure"])
def test_asymmetric_shape_is_not_mirrored(shape: str) -> None:
    """Seen from +Z, picture-left is on the left (-X) and picture-top at the top (+Y)."""
    mask = SHAPES[shape]()
    front = _front(_inflated(shape, "transparent"), mask)
    assert _iou(front, _crop(mask)) > _iou(front, _crop(mask)[:, ::-1]) + 0.2
    assert _iou(front, _crop(mask)) > _iou(front, _crop(mask)[::-1, :]) + 0.2


def test_frame_is_centred_with_longest_side_one_and_aspect_kept() -> None:
    mask = SHAPES["l_shape"]()
    lo, hi = _inflated("l_shape", "transparent").bounds
    assert np.allclose((lo + hi) / 2, 0, atol=1e-6)
    assert (hi - lo).max() == pytest.approx(1.0, abs=1e-6)
    crop = _crop(mask)
    assert (hi - lo)[0] / (hi - lo)[1] == pytest.approx(crop.shape[1] / crop.shape[0], rel=0.03)
    assert (hi - lo)[2] < (hi - lo)[1]  # depth comes from the silhouette, not the frame


def test_wide_picture_is_not_squeezed_to_a_square() -> None:
    mask = np.zeros((60, 200), bool)
    mask[15:45, 20:180] = True  # a 160 x 30 bar
    lo, hi = inflate_mesh(picture(mask, "white")).bounds
    assert (hi - lo)[0] == pytest.approx(1.0, abs=1e-6)
    assert (hi - lo)[1] == pytest.approx(30 / 160, rel=0.05)


def test_thin_limb_comes_out_round_not_flat_or_fat() -> None:
    mask = np.zeros((80, 220), bool)
    mask[30:50, 10:210] = True  # 20 px thick
    lo, hi = inflate_mesh(picture(mask, "transparent")).bounds
    thickness, width = (hi - lo)[2], (hi - lo)[1]
    assert 0.8 < thickness / width < 1.2


def test_depth_param_makes_the_mesh_thicker() -> None:
    rgba = picture(SHAPES["disk"](), "transparent")
    thin = inflate_mesh(rgba, depth=0.5).extents[2]
    thick = inflate_mesh(rgba, depth=1.5).extents[2]
    assert thick > 2 * thin


def test_ring_keeps_its_hole() -> None:
    mesh = _inflated("ring", "white")
    assert mesh.euler_number == 0  # a torus: genus 1
    front = _front(mesh, SHAPES["ring"]())  # the ring spans 25-175 px, its hole 75-125
    assert not front[60:90, 60:90].any() and front[5:20, 60:90].all()


# ------------------------------------------------------------------ colours


def _quartered_disk() -> np.ndarray:
    """Left half red, right half blue, a green band on top, transparent around."""
    mask = SHAPES["disk"]()
    rgba = picture(mask, "transparent")
    cols = np.arange(mask.shape[1])
    rgba[:, cols < 100, :3] = (220, 30, 30)
    rgba[:, cols >= 100, :3] = (30, 30, 220)
    rgba[:60, :, :3] = (30, 200, 30)
    rgba[~mask] = 0
    return rgba


def test_picture_left_is_minus_x_and_picture_top_is_plus_y() -> None:
    mesh = inflate_mesh(_quartered_disk())
    v, c = mesh.vertices, mesh.visual.vertex_colors[:, :3].astype(int)
    below = v[:, 1] < 0.2  # under the green band
    assert (c[below & (v[:, 0] < -0.2)][:, 0] > 150).mean() > 0.95  # left: red
    assert (c[below & (v[:, 0] > 0.2)][:, 2] > 150).mean() > 0.95  # right: blue
    assert (c[v[:, 1] > 0.4][:, 1] > 150).mean() > 0.95  # top: green


def test_front_faces_plus_z_so_the_front_view_shows_the_picture_unmirrored() -> None:
    rgb = render(inflate_mesh(_quartered_disk()), size=128, view="front").astype(int)
    left, right, top = rgb[80, 40], rgb[80, 88], rgb[22, 64]
    assert left[0] > left[2] + 60 and right[2] > right[0] + 60 and top[1] > top[0] + 60


def test_background_colour_does_not_bleed_into_the_rim() -> None:
    mask = SHAPES["figure"]()
    mesh = inflate_mesh(picture(mask, "white", colour=(200, 60, 40)))
    colours = mesh.visual.vertex_colors[:, :3].astype(int)
    assert np.abs(colours - (200, 60, 40)).max() <= 2


# ------------------------------------------------------------------ mask


def test_mask_comes_from_alpha_when_the_picture_is_transparent() -> None:
    mask = SHAPES["star"]()
    rgba = picture(mask, "transparent", colour=(0, 0, 0))  # black subject: colour is no help
    assert _iou(foreground_mask(rgba), mask) > 0.99


@pytest.mark.parametrize("background", ["white", "teal"])
def test_mask_comes_from_the_border_colour_when_the_picture_is_opaque(background: str) -> None:
    mask = SHAPES["figure"]()
    assert _iou(foreground_mask(picture(mask, background)), mask) > 0.99


def test_off_white_detail_on_white_background_is_not_punched_through() -> None:
    mask = SHAPES["disk"]()
    rgba = picture(mask, "white")
    rgba[90:110, 90:110, :3] = (248, 244, 236)  # a highlight close to the background colour
    assert foreground_mask(rgba)[95:105, 95:105].all()
    assert inflate_mesh(rgba).euler_number == 2


def test_specks_are_dropped_and_pinholes_filled() -> None:
    mask = SHAPES["disk"]()
    rgba = picture(mask, "transparent")
    rgba[5:7, 5:7] = (200, 60, 40, 255)  # dust in a corner
    rgba[100, 100, 3] = 0  # one transparent pixel inside
    found = foreground_mask(rgba)
    assert not found[5:7, 5:7].any() and found[100, 100]


# ------------------------------------------------------------------ input errors


def test_fully_transparent_picture_is_an_input_error() -> None:
    with pytest.raises(InputError, match="fully transparent"):
        foreground_mask(np.zeros((64, 64, 4), np.uint8))


def test_all_background_picture_is_an_input_error() -> None:
    with pytest.raises(InputError, match="no foreground"):
        foreground_mask(np.full((64, 64, 4), 255, np.uint8))


def test_subject_filling_the_whole_frame_is_an_input_error() -> None:
    rgba = np.full((256, 256, 4), 255, np.uint8)
    rgba[1:-1, 1:-1, :3] = (200, 60, 40)  # only a one-pixel white frame is left
    with pytest.raises(InputError, match="fills the whole picture"):
        foreground_mask(rgba)


def test_tiny_foreground_is_an_input_error() -> None:
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[30:33, 30:33] = (200, 60, 40, 255)  # 9 pixels
    with pytest.raises(InputError, match="too small"):
        foreground_mask(rgba)


def test_busy_border_is_an_input_error_that_suggests_transparency() -> None:
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 255, (64, 64, 4), dtype=np.uint8)
    noisy[..., 3] = 255
    with pytest.raises(InputError, match="transparent background"):
        foreground_mask(noisy)


def test_job_without_a_picture_is_an_input_error() -> None:
    (out,) = InflateAdapter("builtin-inflate").run_batch(
        [Item(job_id=1, task="mesh", params={}, prompt="a cat")]
    )
    assert isinstance(out, InputError) and "needs an image" in str(out)


# ------------------------------------------------------------------ adapter and params


def test_one_bad_item_does_not_spoil_the_batch() -> None:
    disk = picture(SHAPES["disk"](), "transparent")
    adapter = InflateAdapter("builtin-inflate")
    adapter.load("cpu")
    items = [
        _item(0, disk),
        _item(1, np.zeros((32, 32, 4), np.uint8)),
        Item(job_id=2, task="mesh", params={}, images=[b"not a picture"], image_names=["x.png"]),
        _item(3, disk, resolution=64),
    ]
    out = adapter.run_batch(items)
    assert isinstance(out[0], Result) and isinstance(out[3], Result)
    assert isinstance(out[1], InputError) and "transparent" in str(out[1])
    assert isinstance(out[2], InputError) and "x.png" in str(out[2])
    assert out[0].mesh.is_watertight and len(out[3].mesh.faces) < len(out[0].mesh.faces)


def test_sixteen_bit_greyscale_photo_makes_a_mesh() -> None:
    # Its black (1500 of 65535) is the border colour; clipped to 8 bits it was white, as
    # white as the disk, and the picture had "no foreground".
    disk = grey_disk(disk=50_000, background=1_500, dtype=np.uint16)
    buf = io.BytesIO()
    Image.fromarray(disk).save(buf, format="PNG")
    assert Image.open(buf).mode == "I;16"
    item = Item(job_id=1, task="mesh", params={}, images=[buf.getvalue()], image_names=["d.png"])
    (res,) = InflateAdapter("builtin-inflate").run_batch([item])
    assert isinstance(res, Result), res
    assert res.mesh.is_watertight
    assert res.info["mask_px"] == pytest.approx((disk > 1_500).sum(), rel=0.05)


def test_result_info_reports_the_mask_the_grid_and_the_time() -> None:
    mask = SHAPES["disk"]()
    (res,) = InflateAdapter("builtin-inflate").run_batch([_item(0, picture(mask, "white"))])
    assert isinstance(res, Result)
    assert res.info["mask_px"] == pytest.approx(mask.sum(), rel=0.01)
    assert max(res.info["grid"][:2]) == InflateParams().resolution + 4  # 2 cells of padding
    assert res.info["faces"] == len(res.mesh.faces)
    assert res.info["seconds"]["total"] > 0


def test_params_reject_unknown_names_and_out_of_range_values() -> None:
    with pytest.raises(ValidationError):
        InflateParams.model_validate({"resolutoin": 64})
    for bad in ({"resolution": 4096}, {"resolution": 8}, {"depth": 0}, {"smooth": -1}):
        with pytest.raises(ValidationError):
            InflateParams.model_validate(bad)
    assert InflateParams.model_validate({"depth": 2}).depth == 2.0


def test_bad_params_fail_only_their_own_item() -> None:
    disk = picture(SHAPES["disk"](), "transparent")
    out = InflateAdapter("builtin-inflate").run_batch([_item(0, disk, depth=99), _item(1, disk)])
    assert isinstance(out[0], ValidationError) and isinstance(out[1], Result)
