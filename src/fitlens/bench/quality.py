"""Model quality per backbone: group k-fold cross-validation through the real training job.

Each fold is ``fitlens.train.run`` with the project's cross-validation preset
(``experiment=cv5``: groups = exercise variants, so no variant is on both sides; every non-test
group trains; the last epoch is tested), then the export stage's own steps on that checkpoint:
ONNX export with parity, int8 quantisation calibrated on the fold's training images, and
macro-F1 of both files on the fold's test images.

The "not sure" threshold is the export stage's :func:`choose_threshold`, fed the fp32 model's
predictions on the fold's held-out test images: cv5 leaves no validation split, and these are
the images the model has not trained on. The threshold only decides how many photos of *other*
exercises pass it; it plays no part in the macro-F1, which is argmax over the six classes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from fitlens.bench.configs import compose_config
from fitlens.bench.exported import ExportedModel, export_variants
from fitlens.contract import InputSpec
from fitlens.data.splits import SPLITS, Sample, read_split_csv
from fitlens.export.onnx import ExportError, image_probabilities, session_for
from fitlens.export.quantize import scores
from fitlens.export.threshold import (
    ThresholdError,
    choose_threshold,
    other_acceptance,
)
from fitlens.models.backbones import PretrainedWeightsUnavailable
from fitlens.models.checkpoint import build_net, lightning_state_to_net_state, safe_load
from fitlens.models.classifier import ExerciseNet
from fitlens.train import run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QualitySettings:
    folds: int = 5
    #: Run only the first n folds (``--quick``); None runs all ``folds``.
    run_folds: int | None = None
    #: A conf/experiment preset trained on top of cv5 (the training recipe); None = cv5 alone.
    recipe: str | None = "linear_probe"
    #: None = the recipe's own trainer.max_epochs.
    epochs: int | None = None
    #: The export stage's settings (conf/export.yaml), so thresholds and files match its own.
    target_precision: float = 0.95
    opset: int = 18
    parity_tol: float = 1e-4

    @property
    def experiment(self) -> str:
        """The value of the ``experiment`` override: cv5, plus the recipe if there is one."""
        return f"[cv5,{self.recipe}]" if self.recipe else "cv5"

    @property
    def fold_ids(self) -> range:
        return range(self.folds if self.run_folds is None else min(self.run_folds, self.folds))


def macro_f1(predicted: Sequence[int], labels: Sequence[int]) -> float:
    """The export stage's macro-F1 (:func:`fitlens.export.quantize.scores`) of class indices."""
    predicted, labels = np.asarray(predicted, dtype=int), np.asarray(labels, dtype=int)
    width = int(max(predicted.max(initial=0), labels.max(initial=0))) + 1
    return scores(np.eye(width)[predicted], labels).f1_macro


@dataclass(frozen=True)
class FoldResult:
    fold: int
    #: ``test/f1_macro`` and ``test/acc`` of the training job (PyTorch, best checkpoint).
    f1_macro: float
    accuracy: float
    train_seconds: float
    #: True classes of the fold's test images, and the exported files' top-1 on them.
    labels: tuple[int, ...] = ()
    fp32_predicted: tuple[int, ...] = ()
    int8_predicted: tuple[int, ...] = ()
    #: The fold's best Lightning checkpoint (the latency section rebuilds the net from it).
    checkpoint: str | None = None
    #: The fold's split.csv (the linear probe scores the same folds).
    split_csv: str | None = None
    threshold: float | None = None
    other_images: int = 0
    other_accepted: int = 0
    exported: ExportedModel | None = None
    #: Why a later step has no number (threshold not reachable, export refused).
    notes: tuple[str, ...] = ()

    @property
    def onnx_fp32_f1(self) -> float | None:
        return macro_f1(self.fp32_predicted, self.labels) if self.fp32_predicted else None

    @property
    def onnx_int8_f1(self) -> float | None:
        return macro_f1(self.int8_predicted, self.labels) if self.int8_predicted else None

    @property
    def int8_f1_drop(self) -> float | None:
        if self.onnx_fp32_f1 is None or self.onnx_int8_f1 is None:
            return None
        return self.onnx_fp32_f1 - self.onnx_int8_f1

    def to_dict(self) -> dict[str, Any]:
        return {
            "fold": self.fold, "f1_macro": self.f1_macro, "accuracy": self.accuracy,
            "train_seconds": self.train_seconds, "test_images": len(self.labels),
            "labels": list(self.labels), "fp32_predicted": list(self.fp32_predicted),
            "int8_predicted": list(self.int8_predicted),
            "onnx_fp32_f1_macro": self.onnx_fp32_f1, "onnx_int8_f1_macro": self.onnx_int8_f1,
            "int8_f1_drop": self.int8_f1_drop, "threshold": self.threshold,
            "other_images": self.other_images, "other_accepted": self.other_accepted,
            "export": self.exported.to_dict() if self.exported else None,
            "notes": list(self.notes)}


@dataclass
class BackboneQuality:
    backbone: str
    folds: list[FoldResult] = field(default_factory=list)
    #: Why no fold ran (e.g. no pretrained weights on this machine).
    skipped: str | None = None
    #: trainer.max_epochs of the folds' jobs (recipe, or --epochs).
    epochs: int | None = None

    def _values(self, name: str) -> list[float]:
        values = [getattr(f, name) for f in self.folds]
        return [v for v in values if v is not None]

    def mean(self, name: str) -> float | None:
        values = self._values(name)
        return float(np.mean(values)) if values else None

    def std(self, name: str) -> float | None:
        values = self._values(name)
        return float(np.std(values, ddof=1)) if len(values) > 1 else None

    def pooled(self) -> dict[str, float] | None:
        """Out-of-fold scores over every test image of every fold: each image once, each
        scored by the model that did not train on it. With ~20 images a fold, one flipped
        prediction moves a fold's macro-F1 by points; pooled, the int8 loss is measured on all
        images at once, and top-1 agreement shows how many predictions int8 changed at all."""
        folds = [f for f in self.folds if f.fp32_predicted and f.int8_predicted]
        if not folds:
            return None
        labels = [y for f in folds for y in f.labels]
        fp32 = [p for f in folds for p in f.fp32_predicted]
        int8 = [p for f in folds for p in f.int8_predicted]
        return {"images": len(labels), "fp32_f1_macro": macro_f1(fp32, labels),
                "int8_f1_macro": macro_f1(int8, labels),
                "int8_f1_drop": macro_f1(fp32, labels) - macro_f1(int8, labels),
                "top1_agreement": float(np.mean(np.array(fp32) == np.array(int8)))}

    @property
    def other_accepted_fraction(self) -> float | None:
        images = sum(f.other_images for f in self.folds)
        return sum(f.other_accepted for f in self.folds) / images if images else None

    def to_dict(self) -> dict[str, Any]:
        return {"backbone": self.backbone, "skipped": self.skipped,
                "folds_run": len(self.folds), "epochs": self.epochs,
                "f1_macro_mean": self.mean("f1_macro"), "f1_macro_std": self.std("f1_macro"),
                "accuracy_mean": self.mean("accuracy"),
                "int8_f1_drop_mean": self.mean("int8_f1_drop"),
                "int8_f1_drop_max": max(self._values("int8_f1_drop"), default=None),
                "pooled": self.pooled(),
                "threshold_mean": self.mean("threshold"),
                "other_accepted_fraction": self.other_accepted_fraction,
                "per_fold": [f.to_dict() for f in self.folds]}


def _splits(split_csv: Path, classes: Sequence[str]) -> dict[str, list[Sample]]:
    samples, split_of = read_split_csv(split_csv, classes)
    return {name: [s for s in samples if split_of[s.group] == name] for name in SPLITS}


def _probabilities(path: Path, samples: Sequence[Sample], size: int) -> np.ndarray:
    return image_probabilities(session_for(path), [s.path for s in samples], size)[0]


def trained_net(model_cfg: DictConfig, checkpoint: str) -> tuple[ExerciseNet, InputSpec]:
    """The network of a Lightning checkpoint, rebuilt as the export stage rebuilds it."""
    net, spec = build_net(model_cfg)
    net.load_state_dict(lightning_state_to_net_state(safe_load(checkpoint), checkpoint))
    return net.eval(), spec


def _fold(cfg: DictConfig, backbone: str, fold: int, other_dir: Path | None,
          settings: QualitySettings) -> FoldResult:
    start = time.perf_counter()
    result = run(cfg)
    train_seconds = time.perf_counter() - start
    splits = _splits(Path(cfg.data.split_csv), list(cfg.data.classes))
    test = splits["test"]
    labels = np.array([s.label for s in test])
    fold_result = FoldResult(fold=fold, f1_macro=result.test_metrics["test/f1_macro"],
                             accuracy=result.test_metrics["test/acc"],
                             train_seconds=train_seconds, labels=tuple(labels.tolist()),
                             checkpoint=result.best_checkpoint,
                             split_csv=str(cfg.data.split_csv))
    if result.best_checkpoint is None:
        return replace(fold_result, notes=("no checkpoint saved, nothing to export",))
    net, spec = trained_net(cfg.model, result.best_checkpoint)
    try:
        exported = export_variants(
            net, Path(cfg.paths.output_dir) / "onnx", backbone, size=spec.size,
            opset=settings.opset, parity_tol=settings.parity_tol,
            parity_samples=test, calibration=[s.path for s in splits["train"]])
    except ExportError as exc:
        return replace(fold_result, notes=(f"export refused: {exc}",))
    fp32 = _probabilities(exported.fp32, test, spec.size)
    int8 = _probabilities(exported.int8, test, spec.size)
    fold_result = replace(fold_result, fp32_predicted=tuple(fp32.argmax(1).tolist()),
                          int8_predicted=tuple(int8.argmax(1).tolist()), exported=exported)
    try:
        choice = choose_threshold(fp32, labels, settings.target_precision,
                                  f"{backbone} fold {fold} held-out")
    except ThresholdError as exc:
        return replace(fold_result, notes=(str(exc),))
    if other_dir is None:
        return replace(fold_result, threshold=choice.threshold)
    other = other_acceptance(other_dir, choice.threshold, session_for(exported.fp32), spec.size)
    return replace(fold_result, threshold=choice.threshold, other_images=other.images,
                 other_accepted=other.accepted, notes=(other.note,) if other.note else ())


def _first_sentences(message: str) -> str:
    """The error's first line without a trailing "do one of:" that introduces the remedies."""
    line = message.splitlines()[0]
    return line.rsplit(". ", 1)[0] + "." if line.endswith(":") and ". " in line else line


def backbone_quality(conf_dir: Path, overrides: Sequence[str], backbone: str, workdir: Path,
                     other_dir: Path | None, settings: QualitySettings) -> BackboneQuality:
    """All folds of one backbone; skipped (with the reason) if its pretrained weights are not
    on this machine, since a random-init score would say nothing about the backbone."""
    quality = BackboneQuality(backbone)
    for fold in settings.fold_ids:
        epochs = [] if settings.epochs is None else [f"trainer.max_epochs={settings.epochs}"]
        cfg = compose_config(conf_dir, "train", [
            *overrides, f"experiment={settings.experiment}", f"model={backbone}", "logger=csv",
            f"data.folds={settings.folds}", f"data.fold={fold}", *epochs,
            "+trainer.enable_progress_bar=false",
        ], workdir / backbone / f"fold{fold}")
        quality.epochs = int(cfg.trainer.max_epochs)
        if fold == settings.fold_ids[0]:
            try:
                instantiate(cfg.model.backbone)
            except InstantiationException as exc:
                if not isinstance(exc.__cause__, PretrainedWeightsUnavailable):
                    raise
                quality.skipped = _first_sentences(str(exc.__cause__))
                return quality
        log.info("quality: %s fold %d/%d", backbone, fold + 1, settings.folds)
        quality.folds.append(_fold(cfg, backbone, fold, other_dir, settings))
    return quality
