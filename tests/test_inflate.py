"""builtin-inflate: the silhouette, the frame and the failures, on drawn shapes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from adapters.base import InputError, Item, Result
from adapters.builtin_inflate import InflateAdapter, InflateParams, foreground_mask, inflate_mesh
from runner.preview import silhouette
from tests.shapes import SHAPES, picture


def _crop(mask: np.ndarray) -> np.ndarray:
    r, c = np.nonzero(mask)
    return mask[r.min() : r.max() + 1, c.min() : c.max() + 1]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def _front(mesh, mask: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    crop = _crop(mask)
    return silhouette(mesh, crop.shape[1], crop.shape[0], view="front")


def _png(rgba: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("background", ["transparent", "white", "teal"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_front_silhouette_matches_the_picture_and_mesh_is_watertight(
    shape: str, background: str
) -> None:
    mask = SHAPES[shape]()
    mesh = inflate_mesh(picture(mask, background))
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
    assert _iou(_front(mesh, mask), _crop(mask)) >= 0.95


@pytest.mark.parametrize("shape", ["l_shape", "figure"])
def test_asymmetric_shape_is_not_mirrored(shape: str) -> None:
    mask = SHAPES[shape]()
    front = _front(inflate_mesh(picture(mask, "transparent")), mask)
    assert _iou(front, _crop(mask)) > _iou(front, _crop(mask)[:, ::-1]) + 0.2
    assert _iou(front, _crop(mask)) > _iou(front, _crop(mask)[::-1, :]) + 0.2


def test_frame_is_centred_with_longest_side_one_and_aspect_kept() -> None:
    mask = SHAPES["l_shape"]()
    mesh = inflate_mesh(picture(mask, "transparent"))
    lo, hi = mesh.bounds
    assert np.allclose((lo + hi) / 2, 0, atol=1e-6)
    assert (hi - lo).max() == pytest.approx(1.0, abs=1e-6)
    crop = _crop(mask)
    assert (hi - lo)[0] / (hi - lo)[1] == pytest.approx(crop.shape[1] / crop.shape[0], rel=0.03)
    assert (hi - lo)[2] < (hi - lo)[1]  # depth comes from the silhouette, not the frame


def test_picture_left_is_minus_x_and_picture_top_is_plus_y() -> None:
    """Left half red, right half blue; top rows green: the colours land where they should."""
    mask = SHAPES["disk"]()
    rgba = picture(mask, "transparent")
    cols = np.arange(mask.shape[1])
    rgba[:, cols < 100, :3] = (220, 30, 30)
    rgba[:, cols >= 100, :3] = (30, 30, 220)
    rgba[:60, :, :3] = (30, 200, 30)
    rgba[~mask] = 0
    mesh = inflate_mesh(rgba)
    v, c = mesh.vertices, mesh.visual.vertex_colors[:, :3].astype(int)
    below = v[:, 1] < 0.2  # under the green band
    assert (c[below & (v[:, 0] < -0.2)][:, 0] > 150).mean() > 0.95  # left: red
    assert (c[below & (v[:, 0] > 0.2)][:, 2] > 150).mean() > 0.95  # right: blue
    assert (c[v[:, 1] > 0.4][:, 1] > 150).mean() > 0.95  # top: green


def test_ring_keeps_its_hole() -> None:
    mesh = inflate_mesh(picture(SHAPES["ring"](), "white"))
    assert mesh.euler_number == 0  # a torus: genus 1


def test_off_white_detail_on_white_background_is_not_punched_through() -> None:
    mask = SHAPES["disk"]()
    rgba = picture(mask, "white")
    rgba[90:110, 90:110, :3] = (248, 244, 236)  # a highlight close to the background colour
    assert foreground_mask(rgba)[95:105, 95:105].all()
    assert inflate_mesh(rgba).euler_number == 2


def test_mask_comes_from_alpha_when_the_picture_is_transparent() -> None:
    mask = SHAPES["star"]()
    rgba = picture(mask, "transparent", colour=(0, 0, 0))  # black subject: colour is no help
    assert _iou(foreground_mask(rgba), mask) > 0.99


def test_fully_transparent_picture_is_an_input_error() -> None:
    with pytest.raises(InputError, match="fully transparent"):
        foreground_mask(np.zeros((64, 64, 4), np.uint8))


def test_all_background_picture_is_an_input_error() -> None:
    with pytest.raises(InputError, match="no foreground"):
        foreground_mask(np.full((64, 64, 4), 255, np.uint8))


def test_busy_border_is_an_input_error_that_suggests_transparency() -> None:
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 255, (64, 64, 4), dtype=np.uint8)
    noisy[..., 3] = 255
    with pytest.raises(InputError, match="transparent background"):
        foreground_mask(noisy)


def test_one_bad_item_does_not_spoil_the_batch() -> None:
    good = _png(picture(SHAPES["disk"](), "transparent"))
    bad = _png(np.zeros((32, 32, 4), np.uint8))
    adapter = InflateAdapter("builtin-inflate")
    adapter.load("cpu")
    items = [
        Item(job_id=i, task="mesh", params={}, images=[d]) for i, d in enumerate([good, bad, good])
    ]
    out = adapter.run_batch(items)
    assert isinstance(out[0], Result) and isinstance(out[2], Result)
    assert isinstance(out[1], InputError)


def test_job_without_a_picture_is_an_input_error() -> None:
    (out,) = InflateAdapter("builtin-inflate").run_batch(
        [Item(job_id=1, task="mesh", params={}, prompt="a cat")]
    )
    assert isinstance(out, InputError) and "needs an image" in str(out)


def test_params_reject_unknown_names_and_out_of_range_values() -> None:
    with pytest.raises(ValidationError):
        InflateParams.model_validate({"resolutoin": 64})
    with pytest.raises(ValidationError):
        InflateParams.model_validate({"resolution": 4096})
    assert InflateParams.model_validate({"depth": 2}).depth == 2.0


def test_depth_param_makes_the_mesh_thicker() -> None:
    rgba = picture(SHAPES["disk"](), "transparent")
    thin = inflate_mesh(rgba, depth=0.5).extents[2]
    thick = inflate_mesh(rgba, depth=1.5).extents[2]
    assert thick > 2 * thin
