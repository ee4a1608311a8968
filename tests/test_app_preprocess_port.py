"""The app's preprocessing, ported line by line from flutter_app/lib/src/preprocess.dart to numpy,
against Pillow itself and against the committed fixture tensors.

No Dart SDK runs here, so this is the proof that the algorithm the Dart code implements is the
contract's (``fitlens.data.images.fit_to_input``): reduce (Pillow's ``Image.reduce``), stretch or
letterbox with Pillow's antialiased bilinear resize, alpha over white, /255. If this port matches
Pillow exactly, the Dart code (same expressions, same order, IEEE doubles, 64-bit ints) does too.
Keep the two in step when either changes.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fitlens.contract import Resize
from fitlens.data.images import fit_to_input, load_rgb, to_chw_float
from fitlens.export.fixtures import (
    JPEG_MAX_LEVEL_DIFF,
    fixture_resizes,
    load_levels,
    load_tensor,
    read_index,
)

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


def reduce_multiplier(count: int) -> int:
    """_reduceMultiplier: Reduce.c's division_UINT32(count, 8). Dart divides in double and stores
    into a Float32List; C divides in float. test_reduce_multiplier_* shows they agree."""
    return int(np.float32(4294967296.0 / (256 * count)))


def reduce_like_pillow(src: np.ndarray, factor: int) -> np.ndarray:
    """reduceLikePillow: Image.reduce(factor) on [h, w, 3] uint8 (Reduce.c: each output pixel is
    the box sum of its factor x factor block, cut short at the right and bottom edges, plus half
    the block's pixel count, times the block's multiplier, >> 24)."""
    if factor == 1:
        return src
    h, w, _ = src.shape
    out_h, out_w = -(-h // factor), -(-w // factor)
    out = np.empty((out_h, out_w, 3), np.uint8)
    for oy in range(out_h):
        y0, y1 = oy * factor, min(oy * factor + factor, h)
        rows = src[y0:y1].astype(np.int64)
        for ox in range(out_w):
            x0, x1 = ox * factor, min(ox * factor + factor, w)
            count = (y1 - y0) * (x1 - x0)
            sums = rows[:, x0:x1].sum(axis=(0, 1)) + count // 2
            out[oy, ox] = (sums * reduce_multiplier(count)) >> 24
    return out


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


def reduce_factor(width: int, height: int, max_side: int | None) -> int:
    """InputGeometry.reduceFactor: ceil(long side / maxSide), 1 without a reduce step."""
    if max_side is None:
        return 1
    return -(-max(width, height) // max_side)


def placement(width: int, height: int, size: int, mode: str) -> tuple[int, int, int, int]:
    """InputGeometry.placement: (left, top, w, h) of the photo in the size x size input."""
    if mode == "stretch":
        return 0, 0, size, size
    longest = max(width, height)
    w = max(1, (width * size + longest // 2) // longest)
    h = max(1, (height * size + longest // 2) // longest)
    return (size - w) // 2, (size - h) // 2, w, h


def fit_like_dart(rgb: np.ndarray, size: int, mode: str, fill: tuple[int, int, int],
                  max_side: int | None) -> np.ndarray:
    """fitToInput: reduce, then stretch or letterbox onto a size x size canvas of fill."""
    rgb = reduce_like_pillow(rgb, reduce_factor(rgb.shape[1], rgb.shape[0], max_side))
    left, top, w, h = placement(rgb.shape[1], rgb.shape[0], size, mode)
    canvas = np.empty((size, size, 3), np.uint8)
    canvas[:] = fill
    canvas[top:top + h, left:left + w] = resize_bilinear_like_pillow(rgb, w, h)
    return canvas


def to_chw_float_like_dart(rgb: np.ndarray) -> np.ndarray:
    """toChwFloat: v / 255.0 in double precision, stored into a Float32List."""
    return (rgb.transpose(2, 0, 1).astype(np.float64) / 255.0).astype(np.float32)


def _resize(spec: Resize) -> dict:
    return {"size": spec.size, "mode": spec.mode, "fill": spec.fill, "max_side": spec.max_side}


# --- resize -------------------------------------------------------------------------------------

#: (input w, h) -> (output w, h): up, down, both, non-square, identity, tiny, phone-sized, and
#: shapes where Pillow 13 runs the vertical pass first (height shrinks > 2x the width's shrink).
SIZES = [
    ((180, 240), (224, 224)),
    ((2, 6), (3, 2)),
    ((2048, 1536), (224, 224)),
    ((160, 120), (224, 224)),
    ((360, 241), (224, 150)),
    ((500, 100), (224, 45)),
    ((37, 53), (156, 224)),
    ((224, 224), (224, 224)),
    ((300, 200), (64, 48)),
    ((7, 5), (224, 224)),
    ((224, 300), (224, 224)),
]


@pytest.mark.parametrize(("src_size", "dst_size"), SIZES)
def test_resize_port_equals_pillow(src_size: tuple[int, int], dst_size: tuple[int, int]) -> None:
    rng = np.random.default_rng(src_size[0] * 1000 + src_size[1])
    pixels = rng.integers(0, 256, (src_size[1], src_size[0], 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(pixels).resize(dst_size, Image.BILINEAR))
    assert np.array_equal(resize_bilinear_like_pillow(pixels, *dst_size), expected)


def test_resize_port_equals_pillow_on_random_shapes() -> None:
    # Any pair of sizes, 1 px sides included: the pass order rule must hold everywhere.
    rng = np.random.default_rng(7)
    for _ in range(60):
        (w, h), (ow, oh) = rng.integers(1, 90, (2, 2))
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        expected = np.asarray(Image.fromarray(pixels).resize((int(ow), int(oh)), Image.BILINEAR))
        assert np.array_equal(resize_bilinear_like_pillow(pixels, ow, oh), expected), (w, h, ow, oh)


def test_smooth_image_resize_port_equals_pillow() -> None:
    # Gradients exercise the rounding paths that random noise averages away.
    y, x = np.mgrid[0:333, 0:517]
    pixels = np.stack([x * 255 // 516, y * 255 // 332, (x + y) % 256], -1).astype(np.uint8)
    expected = np.asarray(Image.fromarray(pixels).resize((224, 224), Image.BILINEAR))
    assert np.array_equal(resize_bilinear_like_pillow(pixels, 224, 224), expected)


# --- reduce ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [1, 2, 3, 4, 5, 6, 7, 9, 13, 24])
def test_reduce_port_equals_pillow_for_every_factor(factor: int) -> None:
    # Pillow has special code for 2x2 .. 5x5 and a general one above: each must be the same
    # box average. Sizes that do and do not divide by the factor, and a strip thinner than it.
    rng = np.random.default_rng(factor)
    for w, h in [(factor * 7, factor * 5), (factor * 7 + 1, factor * 4 + factor - 1),
                 (max(1, factor - 1), factor * 3 + 2), (61, 47)]:
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        expected = np.asarray(Image.fromarray(pixels).reduce(factor))
        assert np.array_equal(reduce_like_pillow(pixels, factor), expected), (factor, w, h)


def test_reduce_port_equals_pillow_on_random_shapes_and_extremes() -> None:
    rng = np.random.default_rng(11)
    for _ in range(40):
        w, h = (int(v) for v in rng.integers(1, 120, 2))
        factor = int(rng.integers(2, 12))
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        expected = np.asarray(Image.fromarray(pixels).reduce(factor))
        assert np.array_equal(reduce_like_pillow(pixels, factor), expected), (w, h, factor)
    # All-white and all-black blocks: the rounding at both ends of the range.
    for value in (0, 255):
        flat = np.full((37, 53, 3), value, np.uint8)
        assert np.array_equal(reduce_like_pillow(flat, 6),
                              np.asarray(Image.fromarray(flat).reduce(6)))


def test_reduce_multiplier_float_division_equals_dart_double_then_float32() -> None:
    # Reduce.c divides 2**32 by 256 * count in float (24-bit mantissa); Dart has no float32
    # division, so it divides in double and rounds to float32. Equal for every block size up to
    # a factor of 362 (count 131072): far past what a 64 MP photo and max_side >= 8 give.
    counts = np.arange(1, 1 << 17, dtype=np.int64)
    in_float = (np.float32(4294967296.0) / (256 * counts).astype(np.float32)).astype(np.int64)
    double_then_float = (4294967296.0 / (256 * counts)).astype(np.float32).astype(np.int64)
    assert np.array_equal(in_float, double_then_float)
    # And the uint32 product in C cannot wrap for a full-white block.
    assert int(((255 * counts + counts // 2) * in_float).max()) < 1 << 32


# --- fit_to_input: reduce + stretch / letterbox ------------------------------------------------


@pytest.mark.parametrize("mode", ["stretch", "letterbox"])
@pytest.mark.parametrize(("w", "h", "size", "max_side"), [
    (640, 480, 64, 100), (480, 640, 64, 100), (301, 77, 32, 100), (77, 301, 32, 100),
    (150, 150, 64, 64), (50, 200, 16, 16), (1, 40, 8, 8), (40, 1, 8, 9), (35, 35, 48, 48),
])
def test_fit_port_equals_fit_to_input(mode: str, w: int, h: int, size: int,
                                      max_side: int) -> None:
    rng = np.random.default_rng(w * 31 + h)
    pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    resize = Resize(size, mode, fill=(114, 20, 240), max_side=max_side)
    expected = np.asarray(fit_to_input(Image.fromarray(pixels), resize))
    assert np.array_equal(fit_like_dart(pixels, **_resize(resize)), expected)


def test_letterbox_placement_equals_the_contract_on_every_shape() -> None:
    for size in (8, 224, 256, 384):
        for w, h in itertools.product([1, 2, 3, 7, 100, 223, 224, 225, 299, 4000], repeat=2):
            assert placement(w, h, size, "letterbox") == Resize(size, "letterbox").placement(w, h)
            assert placement(w, h, size, "stretch") == Resize(size, "stretch").placement(w, h)


def test_reduce_factor_equals_the_contract() -> None:
    for w, h, max_side in itertools.product([1, 299, 300, 301, 2048, 2049, 8160], [1, 6120],
                                            [224, 300, 2048, None]):
        if max_side is None or max_side >= 224:
            resize = Resize(224, max_side=max_side)
            assert reduce_factor(w, h, max_side) == resize.reduce_factor(w, h)


# --- decoding details --------------------------------------------------------------------------


def test_composite_port_equals_pillow_for_every_value_and_alpha() -> None:
    value, alpha = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    rgba = np.stack([value, value, value, alpha], -1).astype(np.uint8)
    white = Image.new("RGBA", (256, 256), (255, 255, 255, 255))
    expected = np.asarray(Image.alpha_composite(white, Image.fromarray(rgba, "RGBA")))[..., 0]
    assert np.array_equal(composite_over_white(value, alpha), expected)


def test_to_chw_float_rounding_equals_numpy_float32_division() -> None:
    rgb = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    assert np.array_equal(to_chw_float_like_dart(rgb), to_chw_float(Image.fromarray(rgb)))


def test_jpeg_tolerance_covers_package_image_colour_conversion() -> None:
    # package:image converts YCbCr with 8-bit fixed-point constants and truncation (its
    # _jpeg_image.dart); libjpeg-turbo (Pillow) with 16-bit ones and rounding (jdcolor.c). With
    # each decoder's IDCT off by one level on Y, Cb or Cr, the RGB results stay within
    # JPEG_MAX_LEVEL_DIFF: checked on every Cb, Cr and every 15th Y (the full Y range gives the
    # same 3/3/4; 22 s, too slow for every run).
    scale, half = 16, 1 << 15

    def fix(x: float) -> int:
        return int(x * (1 << scale) + 0.5)

    cb, cr = (c.astype(np.int64) for c in np.meshgrid(np.arange(256), np.arange(256),
                                                     indexing="ij"))
    worst = np.zeros(3, np.int64)
    for y_value in range(0, 256, 15):
        y = np.full_like(cb, y_value)
        libjpeg = np.stack([y + ((fix(1.402) * (cr - 128) + half) >> scale),
                            y + ((-fix(0.34414) * (cb - 128) + half
                                  - fix(0.71414) * (cr - 128)) >> scale),
                            y + ((fix(1.772) * (cb - 128) + half) >> scale)]).clip(0, 255)
        for dy, db, dr in itertools.product((-1, 0, 1), repeat=3):
            yy = (y + dy).clip(0, 255) << 8
            b, r = (cb + db).clip(0, 255) - 128, (cr + dr).clip(0, 255) - 128
            dart = np.stack([(yy + 359 * r) >> 8, (yy - 88 * b - 183 * r) >> 8,
                             (yy + 454 * b) >> 8]).clip(0, 255)
            worst = np.maximum(worst, np.abs(dart - libjpeg).max(axis=(1, 2)))
    assert worst.max() <= JPEG_MAX_LEVEL_DIFF, worst


# --- the committed fixtures ----------------------------------------------------------------------


@pytest.mark.parametrize("entry", read_index(FIXTURES)["fixtures"], ids=lambda e: e["file"])
def test_port_reproduces_committed_fixture_tensors(entry: dict) -> None:
    # From the decoded (oriented, composited) pixels, the port lands on the committed tensors of
    # both resize modes bit for bit: what is left for the app to match is only the decoder.
    index = read_index(FIXTURES)
    rgb = np.asarray(load_rgb(FIXTURES / entry["file"]))
    for mode, resize in fixture_resizes(index["size"]).items():
        assert index["resize"][mode] == {"mode": resize.mode, "fill": list(resize.fill),
                                         "max_side": resize.max_side}
        fitted = fit_like_dart(rgb, **_resize(resize))
        assert np.array_equal(fitted.transpose(2, 0, 1)[None], load_levels(FIXTURES, entry, mode))
        tensor = to_chw_float_like_dart(fitted)[None]
        assert np.array_equal(tensor, load_tensor(FIXTURES, entry, mode)), (entry["file"], mode)
