"""The models the benchmark compares: each a name and the overrides of the real train config that
users type to train it.

A CNN row is ``model=<backbone>`` trained with the quality section's recipe (``--recipe``,
default ``linear_probe``); a pose row is ``experiment=pose`` (BlazePose + the CNN on the person
crop, letterboxed 384 px input, head fitted by L-BFGS) with ``model/backbone=<backbone>``. Names
are the export stage's (:func:`fitlens.export.pipeline.model_name`), so a row of the report and
the file ``fitness_<name>.onnx`` the app would ship are called the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

CROSS_VALIDATION = "cv5"
POSE_PRESET = "pose"
POSE_PREFIX = "pose_"


@dataclass(frozen=True)
class Recipe:
    name: str
    #: The CNN: the whole model for a CNN row, the crop's feature extractor for a pose row.
    backbone: str
    pose: bool
    #: conf/experiment presets in the order they are combined; cv5 among them.
    presets: tuple[str, ...]
    #: Further overrides: the model choice and, for ``--quick``, tiny sizes.
    overrides: tuple[str, ...] = ()

    def train_overrides(self, cross_validate: bool) -> list[str]:
        """The overrides of conf/train.yaml: the cross-validation job, or (``False``) one plain
        job of the same model, for files whose weights do not matter (latency)."""
        presets = [p for p in self.presets if cross_validate or p != CROSS_VALIDATION]
        chosen = [f"experiment=[{','.join(presets)}]"] if presets else []
        return [*chosen, *self.overrides]

    @property
    def command(self) -> str:
        """What a user types to train this row's cross-validation job (the benchmark adds its
        data paths, ``cv.folds`` and ``logger=csv``)."""
        return " ".join(["python train.py", f"'experiment=[{','.join(self.presets)}]'",
                         *self.overrides])


def cnn_recipe(backbone: str, recipe: str | None, quick: bool = False) -> Recipe:
    """``model=<backbone>`` trained with cv5 plus ``recipe`` (None: cv5 alone, fine-tuning).
    ``quick``: 32 px photos."""
    presets = (CROSS_VALIDATION, recipe) if recipe else (CROSS_VALIDATION,)
    sizes = ("data.image_size=32",) if quick else ()
    return Recipe(backbone, backbone, False, presets, (f"model={backbone}", *sizes))


def pose_recipe(backbone: str, quick: bool = False) -> Recipe:
    """``experiment=pose`` with ``model/backbone=<backbone>``. ``quick``: 64 px input, a 32 px
    crop and a random-init CNN; BlazePose is the real file (it runs at 256 px whatever the
    input)."""
    sizes = (("data.image_size=64", "model.net.crop_size=32", "model.backbone.pretrained=false")
             if quick else ())
    return Recipe(f"{POSE_PREFIX}{backbone}", backbone, True, (POSE_PRESET, CROSS_VALIDATION),
                  (f"model/backbone={backbone}", *sizes))


def recipes(backbones: Sequence[str], pose_backbones: Sequence[str], recipe: str | None,
            quick: bool = False) -> tuple[Recipe, ...]:
    """The CNN rows, then the pose rows."""
    return (*(cnn_recipe(b, recipe, quick) for b in backbones),
            *(pose_recipe(b, quick) for b in pose_backbones))
