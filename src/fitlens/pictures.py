"""A photo with the model's answer drawn on it, for a person checking predictions
(``scripts/predict.py --save DIR``).

Under the photo: the answer as the app gives it and the top classes with their probabilities.
For a pose model (its metadata names ``keypoints`` and ``person_box`` outputs), on the photo:
the skeleton (:data:`fitlens.models.keypoints.SKELETON`, joining landmarks seen with visibility
>= 0.5) and the box the model cropped the person with. Both come in model-input pixels and are
mapped back to the photo through the contract's geometry: the whole-factor reduce of a large
photo, then the letterbox or stretch placement (:class:`fitlens.contract.Resize`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fitlens.contract import Answer, Resize
from fitlens.data.images import load_rgb
from fitlens.models.keypoints import SKELETON
from fitlens.predict import Prediction, verdict

#: Saved pictures are for eyes: a 12 MP phone photo is shown at most this many pixels wide/high.
MAX_SIDE = 1024
MIN_VISIBILITY = 0.5
SKELETON_COLOUR = (0, 230, 255)
BOX_COLOUR = (255, 0, 200)
ANSWER_COLOURS = {Answer.EXERCISE: (0, 128, 0), Answer.NOT_SURE: (200, 110, 0),
                  Answer.UNKNOWN: (200, 0, 0)}
CAPTION_BACKGROUND = (255, 255, 255)


def input_to_photo(points: np.ndarray, resize: Resize, width: int, height: int) -> np.ndarray:
    """``[..., 2]`` model-input pixel coordinates -> pixel coordinates of the ``width x height``
    photo: undo the placement in the input square, then the reduce step (PIL's ``reduce``
    rounds the reduced size up, each reduced pixel covering ``factor`` photo pixels)."""
    factor = resize.reduce_factor(width, height)
    reduced_w, reduced_h = -(-width // factor), -(-height // factor)
    left, top, w, h = resize.placement(reduced_w, reduced_h)
    points = np.asarray(points, dtype=np.float64)
    x = (points[..., 0] - left) * (reduced_w / w) * factor
    y = (points[..., 1] - top) * (reduced_h / h) * factor
    return np.stack([x, y], axis=-1)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _caption(p: Prediction) -> list[str]:
    ranked = "  ".join(f"{c} {prob:.1%}" for c, prob in p.top)
    lines = [verdict(p), f"top: {ranked}"]
    if p.reject_probability is not None:
        lines[-1] += f"  (none of them {p.reject_probability:.1%})"
    return lines


def _draw_pose(draw: ImageDraw.ImageDraw, p: Prediction, resize: Resize, size: tuple[int, int],
               scale: float, width: int) -> None:
    points = input_to_photo(p.keypoints[:, :2], resize, *size) * scale
    seen = p.keypoints[:, 2] >= MIN_VISIBILITY
    for a, b in SKELETON:
        if seen[a] and seen[b]:
            draw.line([tuple(points[a]), tuple(points[b])], fill=SKELETON_COLOUR, width=width)
    radius = width + 1
    for x, y in points[seen]:
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=SKELETON_COLOUR)


def picture(p: Prediction, resize: Resize, max_side: int = MAX_SIDE) -> Image.Image:
    """The photo of ``p`` (EXIF-upright, at most ``max_side``) with its answer drawn on it."""
    photo = load_rgb(p.path)
    size = photo.size
    scale = min(1.0, max_side / max(size))
    if scale < 1.0:
        photo = photo.resize((max(1, round(size[0] * scale)), max(1, round(size[1] * scale))),
                             Image.BILINEAR)
    line = max(3, round(max(photo.size) / 200))
    draw = ImageDraw.Draw(photo)
    if p.person_box is not None:
        corners = input_to_photo(np.reshape(p.person_box, (2, 2)), resize, *size) * scale
        draw.rectangle([tuple(corners[0]), tuple(corners[1])], outline=BOX_COLOUR, width=line)
    if p.keypoints is not None:
        _draw_pose(draw, p, resize, size, scale, line)
    text = _caption(p)
    font_size = max(10, photo.width // 32)
    font = _font(font_size)
    while font_size > 8 and max(draw.textlength(t, font=font) for t in text) > photo.width - 8:
        font_size -= 1
        font = _font(font_size)
    band = (font_size + 6) * len(text) + 6
    canvas = Image.new("RGB", (photo.width, photo.height + band), CAPTION_BACKGROUND)
    canvas.paste(photo, (0, 0))
    caption = ImageDraw.Draw(canvas)
    for i, t in enumerate(text):
        colour = ANSWER_COLOURS[p.answer] if i == 0 else (0, 0, 0)
        caption.text((4, photo.height + 4 + i * (font_size + 6)), t, fill=colour, font=font)
    return canvas


def save_pictures(predictions: Sequence[Prediction], resize: Resize, folder: Path) -> list[Path]:
    """One JPEG per prediction in ``folder``, named after the photo (``_2``, ... for a name that
    appears twice in different folders)."""
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    taken: set[str] = set()
    for p in predictions:
        name, n = f"{p.path.stem}.jpg", 1
        while name in taken:
            n += 1
            name = f"{p.path.stem}_{n}.jpg"
        taken.add(name)
        path = folder / name
        # 4:4:4: chroma subsampling would smear the thin coloured lines.
        picture(p, resize).save(path, quality=90, subsampling=0)
        written.append(path)
    return written
