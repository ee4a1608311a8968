"""A pose model's skeleton and crop box drawn on the photo it saw.

The model gives both in model-input pixels; they are mapped back to the photo through the
contract's geometry: the whole-factor reduce of a large photo, then the letterbox or stretch
placement (:class:`fitlens.contract.Resize`). Used by ``predict.py --save`` pictures and by the
misclassified-photos grid a training run logs; no torch or onnxruntime needed.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from fitlens.contract import Resize
from fitlens.models.keypoints import SKELETON

#: Landmarks seen with less visibility than this are not drawn.
MIN_VISIBILITY = 0.5
SKELETON_COLOUR = (0, 230, 255)
BOX_COLOUR = (255, 0, 200)


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


def draw_pose(photo: Image.Image, keypoints: np.ndarray | None, person_box: np.ndarray | None,
              resize: Resize, size: tuple[int, int]) -> None:
    """Draw a pose model's skeleton (``keypoints`` ``[33, 3]``: x, y, visibility) and crop box
    (``[4]``), both in model-input pixels, onto ``photo``: the ``size`` photo the model saw,
    possibly shown smaller."""
    scale = photo.width / size[0]
    line = max(2, round(max(photo.size) / 200))
    draw = ImageDraw.Draw(photo)
    if person_box is not None:
        corners = input_to_photo(np.reshape(person_box, (2, 2)), resize, *size) * scale
        draw.rectangle([tuple(corners[0]), tuple(corners[1])], outline=BOX_COLOUR, width=line)
    if keypoints is None:
        return
    points = input_to_photo(keypoints[:, :2], resize, *size) * scale
    seen = keypoints[:, 2] >= MIN_VISIBILITY
    for a, b in SKELETON:
        if seen[a] and seen[b]:
            draw.line([tuple(points[a]), tuple(points[b])], fill=SKELETON_COLOUR, width=line)
    radius = line + 1
    for x, y in points[seen]:
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=SKELETON_COLOUR)
