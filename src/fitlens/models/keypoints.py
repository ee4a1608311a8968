"""From BlazePose's 33 body landmarks to what a classifier can use: pose features that do not
care which way the person faces, and the box around the person.

A mirrored photo of a squat is still a squat, and a gym-goer films from whichever side is free:
every feature here is unchanged when the photo is flipped left-right (x negated, left and right
landmarks swapped), so the head never has to learn both directions from a hundred photos.
Positions are relative to the hip centre and measured in torso lengths, so the person's size and
place in the photo do not matter either. Everything is plain tensor arithmetic: it exports to
ONNX as part of the model.
"""

from __future__ import annotations

import torch

from fitlens.models.pose import LEFT_RIGHT_PAIRS, NUM_LANDMARKS

#: BlazePose landmark indices (fitlens.models.pose.LANDMARK_NAMES).
NOSE = 0
LEFT_SHOULDER, RIGHT_SHOULDER = 11, 12
LEFT_ELBOW, RIGHT_ELBOW = 13, 14
LEFT_WRIST, RIGHT_WRIST = 15, 16
LEFT_HIP, RIGHT_HIP = 23, 24
LEFT_KNEE, RIGHT_KNEE = 25, 26
LEFT_ANKLE, RIGHT_ANKLE = 27, 28
LEFT_FOOT, RIGHT_FOOT = 31, 32

#: (left, right) pairs of the body landmarks the features use: ears, shoulders, elbows, wrists,
#: hips, knees, ankles, heels, foot tips.
BODY_PAIRS = ((7, 8), (11, 12), (13, 14), (15, 16), (23, 24), (25, 26), (27, 28), (29, 30),
              (31, 32))
#: Joint angles (a, joint, b) on the left side; the right side is the mirror image.
LEFT_ANGLES = ((LEFT_SHOULDER, LEFT_ELBOW, LEFT_WRIST), (LEFT_HIP, LEFT_SHOULDER, LEFT_ELBOW),
               (LEFT_SHOULDER, LEFT_HIP, LEFT_KNEE), (LEFT_HIP, LEFT_KNEE, LEFT_ANKLE),
               (LEFT_KNEE, LEFT_ANKLE, LEFT_FOOT))
#: Limb segments (from, to) on the left side: upper arm, forearm, thigh, shin.
LEFT_SEGMENTS = ((LEFT_SHOULDER, LEFT_ELBOW), (LEFT_ELBOW, LEFT_WRIST), (LEFT_HIP, LEFT_KNEE),
                 (LEFT_KNEE, LEFT_ANKLE))
#: Lines of the skeleton, for pictures.
SKELETON = ((11, 12), (11, 13), (13, 15), (12, 14), (14, 16), (11, 23), (12, 24), (23, 24),
            (23, 25), (25, 27), (27, 29), (29, 31), (27, 31), (24, 26), (26, 28), (28, 30),
            (30, 32), (28, 32), (0, 11), (0, 12))


def _mirror_index() -> list[int]:
    index = list(range(NUM_LANDMARKS))
    for left, right in LEFT_RIGHT_PAIRS:
        index[left], index[right] = right, left
    return index


#: Landmark i of a left-right flipped photo is landmark MIRROR[i] of the original.
MIRROR = tuple(_mirror_index())


def _right(left: int) -> int:
    return MIRROR[left]


def mirror(xy: torch.Tensor, visibility: torch.Tensor, width: float) -> tuple[torch.Tensor,
                                                                                torch.Tensor]:
    """The landmarks of the left-right flipped photo (``width`` pixels wide)."""
    index = torch.tensor(MIRROR)
    flipped = xy[:, index].clone()
    flipped[..., 0] = width - flipped[..., 0]
    return flipped, visibility[:, index]


def _cos_angle(a: torch.Tensor, joint: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    u, v = a - joint, b - joint
    return (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1)).clamp(min=1e-6)


def _pair(left: torch.Tensor, right: torch.Tensor) -> list[torch.Tensor]:
    """Mirror-invariant summary of a left/right pair of scalars (mirroring swaps them)."""
    return [left + right, (left - right).abs()]


def pose_features(xy: torch.Tensor, visibility: torch.Tensor) -> torch.Tensor:
    """``[N, 33, 2]`` landmark pixels and ``[N, 33]`` visibility (0..1) -> ``[N, F]`` features,
    unchanged by a left-right flip of the photo (see the module docstring)."""
    hip = (xy[:, LEFT_HIP] + xy[:, RIGHT_HIP]) / 2
    shoulder = (xy[:, LEFT_SHOULDER] + xy[:, RIGHT_SHOULDER]) / 2
    torso = (shoulder - hip).norm(dim=-1, keepdim=True).clamp(min=1.0)
    p = (xy - hip[:, None]) / torso[:, None]
    x, y = p[..., 0], p[..., 1]
    feats: list[torch.Tensor] = []
    for left, right in BODY_PAIRS:
        # Flipping negates x and swaps the pair: x_l - x_r and |x_l + x_r| stay, as do the
        # pair's y summaries and visibilities. The hips' sums are 0 by construction (the hip
        # centre is their mean): only their width and tilt say something.
        hips = (left, right) == (LEFT_HIP, RIGHT_HIP)
        feats.append(x[:, left] - x[:, right])
        if not hips:
            feats += [(x[:, left] + x[:, right]).abs(), y[:, left] + y[:, right]]
        feats.append((y[:, left] - y[:, right]).abs())
        feats += _pair(visibility[:, left], visibility[:, right])
    feats += [x[:, NOSE].abs(), y[:, NOSE], visibility[:, NOSE]]
    up = (shoulder - hip) / torso
    feats += [up[:, 0].abs(), up[:, 1]]
    for a, joint, b in LEFT_ANGLES:
        feats += _pair(_cos_angle(xy[:, a], xy[:, joint], xy[:, b]),
                       _cos_angle(xy[:, _right(a)], xy[:, _right(joint)], xy[:, _right(b)]))
    for start, end in LEFT_SEGMENTS:
        # How upright each limb is: the y share of its direction (x would need a facing side).
        left = xy[:, end] - xy[:, start]
        right = xy[:, _right(end)] - xy[:, _right(start)]
        feats += _pair(left[:, 1] / left.norm(dim=-1).clamp(min=1e-6),
                       right[:, 1] / right.norm(dim=-1).clamp(min=1e-6))
    return torch.stack(feats, dim=1)


NUM_POSE_FEATURES = (len(BODY_PAIRS) * 6 - 2 + 3 + 2 + len(LEFT_ANGLES) * 2
                     + len(LEFT_SEGMENTS) * 2)


def person_box(xy: torch.Tensor, visibility: torch.Tensor, found: torch.Tensor, size: float,
               margin: float, min_visibility: float = 0.5) -> torch.Tensor:
    """``[N, 4]`` square crop boxes ``(x0, y0, x1, y1)`` around the visible landmarks, each side
    widened by ``margin`` times the box's larger side; the whole ``size x size`` image where no
    person was ``found`` or no landmark is visible."""
    visible = visibility >= min_visibility
    big = torch.full_like(xy[..., 0], 1e9)
    x0 = torch.where(visible, xy[..., 0], big).amin(dim=1)
    y0 = torch.where(visible, xy[..., 1], big).amin(dim=1)
    x1 = torch.where(visible, xy[..., 0], -big).amax(dim=1)
    y1 = torch.where(visible, xy[..., 1], -big).amax(dim=1)
    side = torch.maximum(x1 - x0, y1 - y0) * (1 + 2 * margin)
    side = side.clamp(min=size / 8)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    box = torch.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], dim=1)
    whole = torch.tensor([0.0, 0.0, size, size], dtype=xy.dtype).expand_as(box)
    use = (found & visible.any(dim=1))[:, None]
    return torch.where(use, box, whole)
