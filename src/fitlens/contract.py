"""The data contract shared by training, export, predict and the app, and its decision rule.

What a caller must feed the model is defined here once: an RGB photo (EXIF orientation applied,
alpha over white), reduced by a whole factor when it is very large (:class:`Resize.max_side`),
then brought to ``size x size`` with PIL's antialiased bilinear filter, either stretched or
letterboxed (aspect kept, centred, the rest filled with :attr:`Resize.fill`), scaled to float
0..1 and laid out CHW. Normalisation (mean/std) belongs to the backbone and lives *inside* the
network, so no consumer of an exported model has to know it.

What a consumer does with the output is defined here too (:func:`decide`): the probabilities
cover the known classes, then the reject class if the model has one; a photo is answered with
an exercise only if the arg-max output is a known class whose probability reaches the threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

#: The resize of schema-1 models (stretch), as their metadata spells it.
RESIZE_RULE = "PIL.Image.resize(size x size, BILINEAR), antialiased, no crop, aspect not kept"
RESIZE_MODES = ("stretch", "letterbox")
#: Photos whose long side is larger are first reduced by a whole factor (box filter): a phone's
#: 50 MP photo never needs more than this for a 384 px input, and the app must not hold it whole.
DEFAULT_MAX_SIDE = 2048
DECISION_RULE = ("accept iff the arg-max output is a known class and its probability >= "
                 "threshold; arg-max output = reject class: not one of the known exercises; "
                 "otherwise: not sure")


@dataclass(frozen=True)
class Resize:
    """How a decoded photo becomes the square model input."""

    size: int
    mode: str = "stretch"
    #: Letterbox padding, 8-bit RGB.
    fill: tuple[int, int, int] = (0, 0, 0)
    #: None: no reduce step (schema-1 models).
    max_side: int | None = DEFAULT_MAX_SIDE

    def __post_init__(self) -> None:
        object.__setattr__(self, "fill", tuple(int(v) for v in self.fill))
        if self.mode not in RESIZE_MODES:
            raise ValueError(f"data.resize={self.mode!r}: expected one of {list(RESIZE_MODES)}")
        if len(self.fill) != 3 or not all(0 <= v <= 255 for v in self.fill):
            raise ValueError(f"data.fill={list(self.fill)}: expected three integers in 0..255")
        if self.max_side is not None and self.max_side < self.size:
            raise ValueError(f"max_side={self.max_side}: expected >= the input size {self.size}")

    def reduce_factor(self, width: int, height: int) -> int:
        """The whole factor a ``width x height`` photo is first reduced by (1: not at all)."""
        if self.max_side is None:
            return 1
        longest = max(width, height)
        return -(-longest // self.max_side)

    def placement(self, width: int, height: int) -> tuple[int, int, int, int]:
        """``(left, top, w, h)``: where a ``width x height`` image lands in the input square.

        Letterbox scales the long side to ``size`` and rounds the short side half up in whole
        numbers (no float rounding to differ between Python and Dart); stretch fills the square.
        """
        if self.mode == "stretch":
            return 0, 0, self.size, self.size
        longest = max(width, height)
        w = max(1, (width * self.size + longest // 2) // longest)
        h = max(1, (height * self.size + longest // 2) // longest)
        return (self.size - w) // 2, (self.size - h) // 2, w, h


@dataclass(frozen=True)
class InputSpec:
    """Everything about a model's input and output that a consumer needs."""

    #: The known classes, in output order.
    classes: tuple[str, ...]
    size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    layout: str = "NCHW"
    color: str = "RGB"
    scale: str = "0..1"
    resize_mode: str = "stretch"
    fill: tuple[int, int, int] = (0, 0, 0)
    max_side: int | None = DEFAULT_MAX_SIDE
    #: The output after the known classes that means "none of them" (None: no such output).
    reject_class: str | None = None

    def __post_init__(self) -> None:
        classes = tuple(self.classes)
        object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        object.__setattr__(self, "fill", tuple(int(v) for v in self.fill))
        if len(classes) < 2:
            raise ValueError(f"data.classes={list(classes)}: expected at least two class names")
        if len(set(classes)) != len(classes):
            raise ValueError(f"data.classes={list(classes)}: class names must be unique")
        if self.reject_class is not None and self.reject_class in classes:
            raise ValueError(f"data.reject_class={self.reject_class!r}: must differ from every "
                             f"name in data.classes={list(classes)}")
        if self.size < 8:
            raise ValueError(f"data.image_size={self.size}: expected an integer >= 8")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(
                f"mean={self.mean}, std={self.std}: expected three values each, std > 0"
            )
        Resize(self.size, self.resize_mode, self.fill, self.max_side)  # validates those

    @property
    def resize(self) -> Resize:
        return Resize(self.size, self.resize_mode, self.fill, self.max_side)

    @property
    def num_classes(self) -> int:
        """Known classes (the reject output, if any, is not one of them)."""
        return len(self.classes)

    @property
    def output_classes(self) -> tuple[str, ...]:
        """What the probabilities cover, in order: the known classes, then the reject class."""
        return self.classes + ((self.reject_class,) if self.reject_class else ())

    @property
    def num_outputs(self) -> int:
        return len(self.output_classes)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, 3, self.size, self.size)

    def to_dict(self) -> dict[str, Any]:
        return {"classes": list(self.classes), "size": self.size, "mean": list(self.mean),
                "std": list(self.std), "layout": self.layout, "color": self.color,
                "scale": self.scale, "resize_mode": self.resize_mode, "fill": list(self.fill),
                "max_side": self.max_side, "reject_class": self.reject_class,
                "shape": list(self.input_shape)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        known = {k: d[k] for k in ("classes", "size", "mean", "std", "layout", "color", "scale",
                                    "resize_mode", "fill", "max_side", "reject_class") if k in d}
        if "resize_mode" not in d:  # written before letterbox existed: stretch, no reduce step
            known["max_side"] = None
        return cls(**known)


def make_spec(classes: Sequence[str], size: int, mean: Sequence[float], std: Sequence[float],
              resize_mode: str = "stretch", fill: Sequence[int] = (0, 0, 0),
              reject_class: str | None = None) -> InputSpec:
    """Build the spec from config values (Hydra hands over ListConfigs)."""
    return InputSpec(classes=tuple(str(c) for c in classes), size=int(size), mean=tuple(mean),
                     std=tuple(std), resize_mode=str(resize_mode),
                     fill=tuple(int(v) for v in fill),
                     reject_class=None if reject_class is None else str(reject_class))


class Answer(str, Enum):
    """The three things the app (and predict) can say about a photo."""

    EXERCISE = "exercise"
    NOT_SURE = "not_sure"
    UNKNOWN = "not_one_i_know"


@dataclass(frozen=True)
class Decision:
    answer: Answer
    #: The arg-max output's index and probability (the reject output when ``UNKNOWN``).
    index: int
    probability: float


def decide(probs: Sequence[float], threshold: float, num_known: int) -> Decision:
    """:data:`DECISION_RULE` for one photo's probabilities (known classes first).

    Ties go to the lower index, as ``numpy.argmax`` and the app's loop do.
    """
    probs = np.asarray(probs, dtype=np.float64)
    top = int(np.argmax(probs))
    if top >= num_known:
        answer = Answer.UNKNOWN
    elif probs[top] >= threshold:
        answer = Answer.EXERCISE
    else:
        answer = Answer.NOT_SURE
    return Decision(answer, top, float(probs[top]))


def accepted(probs: np.ndarray, threshold: float, num_known: int) -> np.ndarray:
    """:func:`decide` over ``[N, outputs]``: which rows are answered with an exercise."""
    probs = np.asarray(probs, dtype=np.float64)
    if len(probs) == 0:
        return np.zeros(0, dtype=bool)
    top = probs.argmax(axis=1)
    return (top < num_known) & (probs.max(axis=1) >= threshold)
