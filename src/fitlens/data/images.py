"""Safe image loading and the app's exact preprocessing.

Phone photos arrive rotated (EXIF), in odd modes (palette, alpha, CMYK, 16-bit) and sometimes
broken. Everything that reads an image goes through :func:`load_rgb`, so training, predict and the
golden fixtures for the app see the same pixels.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fitlens.contract import Resize

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
#: Decompression-bomb guard: a 50 MP phone photo passes, a crafted 1 GP image does not.
DEFAULT_MAX_PIXELS = 64_000_000
#: Transparent pixels are composited over white, as a photo on a white page would look.
ALPHA_BACKGROUND = (255, 255, 255)


class ImageLoadError(ValueError):
    """An image file that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit grey: PIL's convert("RGB") clips instead of scaling, so scale by the real range.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(np.rint(arr / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if img.mode == "F":
        arr = np.clip(np.rint(np.asarray(img, dtype=np.float64) * 255.0), 0, 255)
        return Image.fromarray(arr.astype(np.uint8), mode="L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_rgb(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``path`` fully, apply its EXIF orientation and return an 8-bit RGB image.

    Raises :class:`ImageLoadError` for anything that is not a usable image.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageLoadError(path, f"cannot be read ({exc.strerror or exc})") from exc
    if size == 0:
        raise ImageLoadError(path, "empty file (0 bytes); expected a JPEG, PNG or WebP image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageLoadError(
                        path, f"{w}x{h} = {w * h} pixels is over the limit of {max_pixels} "
                        "(decompression-bomb guard); downscale the image first")
                img.load()
                img = ImageOps.exif_transpose(img)
                return _to_rgb(img)
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(path, f"too large to decode safely ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageLoadError(path, "not an image PIL can identify; expected JPEG, PNG or WebP") \
            from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(path, f"corrupt or truncated image ({exc})") from exc


def fit_to_input(img: Image.Image, resize: Resize | int) -> Image.Image:
    """The contract's geometry: reduce a very large photo by a whole factor (box filter), then
    stretch or letterbox it to ``size x size`` with PIL's antialiased bilinear filter.

    An ``int`` is a schema-1 model's input size: stretch, no reduce step.
    """
    if isinstance(resize, int):
        resize = Resize(resize, max_side=None)
    factor = resize.reduce_factor(*img.size)
    if factor > 1:
        img = img.reduce(factor)
    if resize.mode == "stretch":
        return img.resize((resize.size, resize.size), Image.BILINEAR)
    left, top, w, h = resize.placement(*img.size)
    canvas = Image.new("RGB", (resize.size, resize.size), resize.fill)
    canvas.paste(img.resize((w, h), Image.BILINEAR), (left, top))
    return canvas


def to_chw_float(img: Image.Image) -> np.ndarray:
    """RGB uint8 HWC -> float32 CHW in 0..1 (no normalisation: that is inside the model)."""
    arr = np.asarray(img, dtype=np.uint8)
    return np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)


def preprocess(path: str | Path, resize: Resize | int,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """File -> the model input ``[1, 3, size, size]`` float32, exactly as the app computes it."""
    return to_chw_float(fit_to_input(load_rgb(path, max_pixels), resize))[None]
