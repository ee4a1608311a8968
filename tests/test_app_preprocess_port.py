"""The app's resize and alpha compositing, ported line by line from
flutter_app/lib/src/preprocess.dart to numpy, against Pillow itself.

No Dart SDK runs here, so this is the proof that the algorithm the Dart code implements is
Pillow's: if this port matches Pillow exactly, the Dart code (same expressions, same order, IEEE
doubles and 64-bit ints) does too. Keep the two in step when either changes.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fitlens.data.images import fit_to_input, load_rgb, to_chw_float
from fitlens.export.fixtures import load_tensor, read_index

FIXTURES = Path(__file__).resolve().parents[1] / "flutter_app" / "test" / "fixtures"

# --- the port (names as in preprocess.dart) ---------------------------------------------------

PRECISION_BITS = 32 - 8 - 2
HALF = 1 << (PRECISION_BITS - 1)


def composite_over_white(value: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """compositeOverWhite: Pillow's AlphaComposite.c over an opaque white background."""
    value, alpha = value.astype(np.int64), alpha.astype(np.int64)
    precision_bits = 7
    blend = 255 * (255 - alpha)
    out_alpha255 = alpha * 255 + blend
    coef1 = alpha * 255 * 255 * (1 << precision_bits) // out_alpha255
    coef2 = 255 * (1 << precision_bits) - coef1
    tmp = value * coef1 + 255 * coef2 + (0x80 << precision_bits)
    return (((tmp >> 8) + tmp) >> 8) >> precision_bits


def _triangle(x: float) -> float:
    ax = -x if x < 0.0 else x
    return 1.0 - ax if ax < 1.0 else 0.0


def precompute_coefficients(in_size: int, out_size: int) -> tuple[int, np.ndarray, np.ndarray]:
    """_precomputeCoefficients: (kernelSize, bounds [out, 2], fixed-point weights [out, k])."""
    filter_support = 1.0
    scale = in_size / out_size
    filter_scale = 1.0 if scale < 1.0 else scale
    support = filter_support * filter_scale
    kernel_size = math.ceil(support) * 2 + 1
    bounds = np.zeros((out_size, 2), np.int64)
    weights = np.zeros((out_size, kernel_size), np.int64)
    k = [0.0] * kernel_size
    ss = 1.0 / filter_scale
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = int(center - support + 0.5)  # Dart toInt() truncates toward zero, like int()
        xmin = max(xmin, 0)
        xmax = int(center + support + 0.5)
        xmax = min(xmax, in_size)
        xmax -= xmin
        ww = 0.0
        for x in range(xmax):
            w = _triangle(((x + xmin) - center + 0.5) * ss)
            k[x] = w
            ww += w
        for x in range(xmax):
            v = k[x] / ww if ww != 0.0 else k[x]
            weights[xx, x] = (int(-0.5 + v * (1 << PRECISION_BITS)) if v < 0
                              else int(0.5 + v * (1 << PRECISION_BITS)))
        bounds[xx] = (xmin, xmax)
    return kernel_size, bounds, weights


def _clip8(acc: np.ndarray) -> np.ndarray:
    return np.clip(acc >> PRECISION_BITS, 0, 255).astype(np.uint8)


def resample_horizontal(src: np.ndarray, out_width: int) -> np.ndarray:
    """_resampleHorizontal on an [h, w, 3] uint8 array (all rows at once)."""
    _, bounds, weights = precompute_coefficients(src.shape[1], out_width)
    out = np.empty((src.shape[0], out_width, 3), np.uint8)
    for xx in range(out_width):
        xmin, count = bounds[xx]
        acc = np.full((src.shape[0], 3), HALF, np.int64)
        for x in range(count):
            acc += src[:, xmin + x, :].astype(np.int64) * weights[xx, x]
        out[:, xx, :] = _clip8(acc)
    return out


def resample_vertical(src: np.ndarray, out_height: int) -> np.ndarray:
    """_resampleVertical on an [h, w, 3] uint8 array (all columns at once)."""
    _, bounds, weights = precompute_coefficients(src.shape[0], out_height)
    out = np.empty((out_height, src.shape[1], 3), np.uint8)
    for yy in range(out_height):
        ymin, count = bounds[yy]
        acc = np.full((src.shape[1], 3), HALF, np.int64)
        for y in range(count):
            acc += src[ymin + y, :, :].astype(np.int64) * weights[yy, y]
        out[yy] = _clip8(acc)
    return out


def resize_bilinear_like_pillow(src: np.ndarray, width: int, height: int) -> np.ndarray:
    """resizeBilinearLikePillow: Pillow 13's pass order; unchanged sides skipped."""
    shrink_y = src.shape[0] - height
    horizontal_first = not (shrink_y > 0 and shrink_y > (src.shape[1] - width) * 2)
    out = src
    if horizontal_first and width != src.shape[1]:
        out = resample_horizontal(out, width)
    if height != src.shape[0]:
        out = resample_vertical(out, height)
    if not horizontal_first and width != src.shape[1]:
        out = resample_horizontal(out, width)
    return out


def to_chw_float_like_dart(rgb: np.ndarray) -> np.ndarray:
    """toChwFloat: v / 255.0 in double precision, stored into a Float32List."""
    return (rgb.transpose(2, 0, 1).astype(np.float64) / 255.0).astype(np.float32)


# --- the checks ------------------------------------------------------------------------------

#: (input w, h) -> (output w, h): up, down, both, non-square, identity, tiny, phone-sized, and
#: shapes where Pillow 13 runs the vertical pass first (height shrinks > 2x the width's shrink).
SIZES = [
    ((180, 240), (224, 224)),
    ((2, 6), (3, 2)),
    ((3000, 4000), (224, 224)),
    ((160, 120), (224, 224)),
    ((360, 241), (224, 224)),
    ((500, 100), (224, 224)),
    ((37, 53), (224, 224)),
    ((1000, 750), (224, 224)),
    ((224, 224), (224, 224)),
    ((300, 200), (64, 48)),
    ((7, 5), (224, 224)),
    ((224, 300), (224, 224)),
    ((1600, 1200), (224, 224)),
]


@pytest.mark.parametrize(("src_size", "dst_size"), SIZES)
def test_resize_port_equals_pillow(src_size: tuple[int, int], dst_size: tuple[int, int]) -> None:
    rng = np.random.default_rng(src_size[0] * 1000 + src_size[1])
    pixels = rng.integers(0, 256, (src_size[1], src_size[0], 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(pixels).resize(dst_size, Image.BILINEAR))
    got = resize_bilinear_like_pillow(pixels, *dst_size)
    diff = np.abs(got.astype(int) - expected.astype(int))
    assert got.shape == expected.shape
    assert diff.max() <= 1  # the contract allows 1 level; the port is in fact exact
    assert diff.max() == 0


def test_port_equals_pillow_on_random_shapes() -> None:
    # Any pair of sizes, 1 px sides included: the pass order rule must hold everywhere.
    rng = np.random.default_rng(7)
    for _ in range(60):
        (w, h), (ow, oh) = rng.integers(1, 90, (2, 2))
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        expected = np.asarray(Image.fromarray(pixels).resize((int(ow), int(oh)), Image.BILINEAR))
        assert np.array_equal(resize_bilinear_like_pillow(pixels, ow, oh), expected), (w, h, ow, oh)


def test_smooth_image_port_equals_pillow() -> None:
    # Gradients exercise the rounding paths that random noise averages away.
    y, x = np.mgrid[0:333, 0:517]
    pixels = np.stack([x * 255 // 516, y * 255 // 332, (x + y) % 256], -1).astype(np.uint8)
    expected = np.asarray(Image.fromarray(pixels).resize((224, 224), Image.BILINEAR))
    assert np.array_equal(resize_bilinear_like_pillow(pixels, 224, 224), expected)


def test_composite_port_equals_pillow_for_every_value_and_alpha() -> None:
    value, alpha = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    rgba = np.stack([value, value, value, alpha], -1).astype(np.uint8)
    white = Image.new("RGBA", (256, 256), (255, 255, 255, 255))
    expected = np.asarray(Image.alpha_composite(white, Image.fromarray(rgba, "RGBA")))[..., 0]
    assert np.array_equal(composite_over_white(value, alpha), expected)


def test_to_chw_float_rounding_equals_numpy_float32_division() -> None:
    rgb = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    assert np.array_equal(to_chw_float_like_dart(rgb), to_chw_float(Image.fromarray(rgb)))


@pytest.mark.parametrize("entry", read_index(FIXTURES)["fixtures"], ids=lambda e: e["file"])
def test_port_reproduces_committed_fixture_tensors(entry: dict) -> None:
    # From the decoded (oriented, composited) pixels, the port lands on the committed tensor bit
    # for bit: what is left for the app to match is only the decoder.
    size = read_index(FIXTURES)["size"]
    rgb = np.asarray(load_rgb(FIXTURES / entry["file"]))
    tensor = to_chw_float_like_dart(resize_bilinear_like_pillow(rgb, size, size))[None]
    assert np.array_equal(tensor, load_tensor(FIXTURES, entry))
    reference = to_chw_float(fit_to_input(load_rgb(FIXTURES / entry["file"]), size))[None]
    assert np.array_equal(tensor, reference)
