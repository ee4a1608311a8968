"""The data contract shared by training, export, predict and the app.

What a caller must feed the model is defined here once: an RGB image resized to
``size x size`` with PIL's bilinear filter (antialiased, no crop), scaled to float 0..1 and laid
out CHW. Normalisation (mean/std) belongs to the backbone and lives *inside* the network, so no
consumer of an exported model has to know it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

RESIZE_RULE = "PIL.Image.resize(size x size, BILINEAR), antialiased, no crop, aspect not kept"


@dataclass(frozen=True)
class InputSpec:
    """Everything about a model's input and output that a consumer needs."""

    classes: tuple[str, ...]
    size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    layout: str = "NCHW"
    color: str = "RGB"
    scale: str = "0..1"
    resize: str = field(default=RESIZE_RULE)

    def __post_init__(self) -> None:
        classes = tuple(self.classes)
        object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(classes) < 2:
            raise ValueError(f"data.classes={list(classes)}: expected at least two class names")
        if len(set(classes)) != len(classes):
            raise ValueError(f"data.classes={list(classes)}: class names must be unique")
        if self.size < 8:
            raise ValueError(f"data.image_size={self.size}: expected an integer >= 8")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(
                f"mean={self.mean}, std={self.std}: expected three values each, std > 0"
            )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, 3, self.size, self.size)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["classes"] = list(self.classes)
        out["mean"] = list(self.mean)
        out["std"] = list(self.std)
        out["shape"] = list(self.input_shape)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        known = {k: d[k] for k in ("classes", "size", "mean", "std", "layout", "color", "scale",
                                    "resize") if k in d}
        return cls(**known)


def make_spec(classes: Sequence[str], size: int, mean: Sequence[float],
              std: Sequence[float]) -> InputSpec:
    """Build the spec from config values (Hydra hands over ListConfigs)."""
    return InputSpec(classes=tuple(str(c) for c in classes), size=int(size),
                     mean=tuple(mean), std=tuple(std))
