"""See the body, not the gym: BlazePose keypoints plus a CNN on the person crop, in one module.

ImageNet features of a whole gym photo describe the equipment and the room as much as the
exercise; with a hundred photos the head learns those. This network looks at the person:

1. BlazePose (frozen) on the whole input, resized to 256 x 256 inside the graph (the contract's
   letterbox keeps the body's proportions), gives 33 landmarks and a person-presence probability;
2. pose features that ignore which way the person faces (:mod:`fitlens.models.keypoints`);
3. the person box from the visible landmarks, widened by ``margin``, cropped from the input with
   RoiAlign at the backbone's resolution, and the CNN's features of that crop;
4. one linear head on both, after :class:`BlockStandardize`: each feature standardised with
   the training photos' statistics, and each block (1280 CNN features, 78 pose features)
   weighted to the same total, so the many CNN features do not drown the few pose ones.

No person found (presence below ``min_presence``): the crop is the whole image, the pose
features are zeros and a flag input says so, so the head falls back to the CNN on the whole
photo; trained with photos where that happens, the flag's weight lets it lean towards "none".

Everything is tensors in, tensors out: the exported ONNX graph holds the pose model, the crop
(ONNX RoiAlign) and the backbone, and a consumer only feeds the contract's input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from fitlens.models.backbones import Backbone
from fitlens.models.keypoints import NUM_POSE_FEATURES, person_box, pose_features
from fitlens.models.pose import INPUT_SIZE, BlazePose


class BlockStandardize(nn.Module):
    """Standardise features with fixed statistics, then weight each block of ``widths`` by
    ``sqrt(largest / width)``, so every block has the same expected squared norm.

    The statistics are fitted on training features (:meth:`fit`) by whoever trains the head;
    until then the layer passes features through (mean 0, std 1). A feature that barely varies
    in training (a landmark always visible: its visibility is ~1.0 on every photo) would be
    blown up by its tiny std, and with it rounding noise and any photo unlike the training
    ones; so no std is taken below :data:`STD_FLOOR` of its block's median.
    """

    STD_FLOOR = 0.05

    def __init__(self, widths: tuple[int, ...]) -> None:
        super().__init__()
        self.widths = tuple(widths)
        total = sum(widths)
        self.register_buffer("mean", torch.zeros(total))
        self.register_buffer("std", torch.ones(total))
        weight = torch.cat([torch.full((w,), (max(widths) / w) ** 0.5) for w in widths])
        self.register_buffer("weight", weight)

    @torch.no_grad()
    def fit(self, features: torch.Tensor) -> None:
        self.mean.copy_(features.mean(dim=0))
        std = features.std(dim=0, unbiased=False)
        floors = [torch.full((w,), float(block.median()) * self.STD_FLOOR)
                  for w, block in zip(self.widths, std.split(self.widths), strict=True)]
        # A constant feature (std 0 in a block of constants) is only centred.
        self.std.copy_(torch.maximum(std, torch.cat(floors)).where(std > 0, torch.ones_like(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std * self.weight


class PoseFusionNet(nn.Module):
    """Contract input (RGB 0..1, NCHW, square) -> logits; :meth:`explain` adds keypoints and the
    crop box for pictures and the exported graph."""

    #: The exported graph also outputs ``keypoints`` and ``person_box`` (fitlens.export).
    has_pose_outputs = True

    def __init__(self, backbone: Backbone, num_outputs: int, pose: BlazePose,
                 crop_size: int = 224, margin: float = 0.15, min_presence: float = 0.5,
                 min_visibility: float = 0.5, dropout: float = 0.0) -> None:
        super().__init__()
        if not 32 <= crop_size <= 1024:
            raise ValueError(f"model.net.crop_size={crop_size}: expected 32..1024 pixels")
        if not 0 <= margin <= 1:
            raise ValueError(f"model.net.margin={margin}: expected a fraction of the box, 0..1")
        self.register_buffer("mean", torch.tensor(backbone.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(backbone.std).view(1, 3, 1, 1))
        self.pose = pose
        self.features = backbone.features
        self.crop_size = crop_size
        self.margin = margin
        self.min_presence = min_presence
        self.min_visibility = min_visibility
        blocks = (backbone.num_features, NUM_POSE_FEATURES + 1)
        self.head = nn.Sequential(BlockStandardize(blocks), nn.Dropout(dropout),
                                  nn.Linear(sum(blocks), num_outputs))

    def _pose(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Landmark pixels ``[N, 33, 2]`` in the input's frame, visibility ``[N, 33]`` and
        whether a person was found ``[N]``."""
        small = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear",
                              align_corners=False)
        landmarks, presence = self.pose(small)
        xy = landmarks[..., :2] * (x.shape[-1] / INPUT_SIZE)
        return xy, torch.sigmoid(landmarks[..., 3]), presence >= self.min_presence

    def _look(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(head input, keypoints [N, 33, 3]: x, y in input pixels and visibility, person box
        [N, 4]: x0, y0, x1, y1 in input pixels)``."""
        xy, visibility, found = self._pose(x)
        box = person_box(xy, visibility, found, float(x.shape[-1]), self.margin,
                         self.min_visibility)
        index = torch.arange(x.shape[0], dtype=x.dtype, device=x.device)[:, None]
        crop = roi_align((x - self.mean) / self.std, torch.cat([index, box], dim=1),
                         output_size=(self.crop_size, self.crop_size), spatial_scale=1.0,
                         sampling_ratio=2, aligned=True)
        person = found[:, None].to(x.dtype)
        features = torch.cat([self.features(crop), pose_features(xy, visibility) * person,
                              1 - person], dim=1)
        return features, torch.cat([xy, visibility[..., None]], dim=-1), box

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """What the head sees: CNN features of the crop, pose features and the no-person flag."""
        return self._look(x)[0]

    def explain(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits, keypoints, person box)``: what the exported graph outputs."""
        features, keypoints, box = self._look(x)
        return self.head(features), keypoints, box

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))
