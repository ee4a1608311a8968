"""int8 against fp32, out of fold: each fold's model of the cross-validation job exported and
quantised the way the export stage does it, then both files run on the fold's test photos (known
exercises and other ones), which that model never trained on.

Pooled over the folds every photo is scored once, by a model that did not see it: with about 20
known photos a fold, one changed prediction moves a fold's macro-F1 by points, while the pooled
loss is measured on all of them at once. For a pose model the ``keypoints`` output is compared
too: how far int8 moves each landmark from where fp32 puts it, in pixels of the model input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig
from torch import nn

from fitlens.bench.exported import ExportedModel, export_variants
from fitlens.bench.quality import RecipeQuality
from fitlens.contract import InputSpec, Resize
from fitlens.data.datamodule import spec_of
from fitlens.data.images import preprocess
from fitlens.data.splits import SPLITS, Sample, read_split_csv
from fitlens.export.metadata import INPUT_NAME, KEYPOINTS_NAME, PROBABILITIES_NAME
from fitlens.export.onnx import BATCH, ExportError, session_for
from fitlens.export.pipeline import PARITY_PHOTOS
from fitlens.metrics import scores
from fitlens.models.checkpoint import build_net, lightning_state_to_net_state, safe_load

#: How a fold's note about the fp32 file's parity begins.
PARITY_NOTE = "fp32 parity:"


@dataclass(frozen=True)
class Int8Settings:
    #: The export stage's settings (conf/export.yaml), so the files are the ones it would write.
    opset: int = 18
    parity_tol: float = 1e-4
    #: Folds exported and quantised per row, the first n (None: all); pose rows separately,
    #: since their export costs several times a CNN's.
    folds: int | None = None
    pose_folds: int | None = None
    #: Calibration photos per fold, evenly spread over the training photos so known and other
    #: photos keep their proportion (None: every training photo, as the export stage does).
    calibration: int | None = None

    def fold_ids(self, quality: RecipeQuality) -> range:
        limit = self.pose_folds if quality.recipe.pose else self.folds
        return range(quality.folds if limit is None else min(limit, quality.folds))


def fold_splits(split_csv: Path, spec: InputSpec) -> dict[str, list[Sample]]:
    """A fold's split.csv as ``{split: samples}``, the reject class's photos included."""
    samples, split_of = read_split_csv(split_csv, spec.output_classes)
    return {name: [s for s in samples if split_of[s.group] == name] for name in SPLITS}


def trained_net(model_cfg: DictConfig, spec: InputSpec, checkpoint: Path) -> nn.Module:
    """The network of a fold's Lightning checkpoint, rebuilt as the export stage rebuilds it."""
    net, _ = build_net(model_cfg, spec)
    net.load_state_dict(lightning_state_to_net_state(safe_load(checkpoint), str(checkpoint)))
    return net.eval()


def calibration_photos(train: Sequence[Sample], limit: int | None) -> list[Path]:
    """``limit`` of the training photos, evenly spread over them (all if fewer or None)."""
    if limit is None or len(train) <= limit:
        return [s.path for s in train]
    return [train[i].path for i in np.linspace(0, len(train) - 1, limit).round().astype(int)]


def _outputs(models: Sequence[Path], photos: Sequence[Path],
             resize: Resize) -> list[dict[str, np.ndarray]]:
    """Every output of each ONNX file on ``photos`` (preprocessed once, :data:`BATCH` at a
    time, as the app does)."""
    sessions = [session_for(m) for m in models]
    names = [[o.name for o in s.get_outputs()] for s in sessions]
    chunks: list[dict[str, list[np.ndarray]]] = [{n: [] for n in ns} for ns in names]
    for start in range(0, len(photos), BATCH):
        x = np.concatenate([preprocess(p, resize) for p in photos[start:start + BATCH]])
        for session, ns, out in zip(sessions, names, chunks, strict=True):
            for name, value in zip(ns, session.run(None, {INPUT_NAME: x}), strict=True):
                out[name].append(value)
    return [{n: np.concatenate(v) for n, v in out.items()} for out in chunks]


@dataclass(frozen=True)
class FoldInt8:
    fold: int
    num_known: int
    #: Output index of each test photo (``num_known`` = another exercise).
    labels: np.ndarray
    exported: ExportedModel | None = None
    fp32: np.ndarray | None = None
    int8: np.ndarray | None = None
    #: Pose models: ``[photos, 33]`` pixel distance int8 - fp32, and fp32's "visible" mask.
    keypoint_error: np.ndarray | None = None
    visible: np.ndarray | None = None
    #: What kept a number out, or what the export stage would say about the files.
    notes: tuple[str, ...] = ()

    @property
    def measured(self) -> bool:
        return self.fp32 is not None and self.int8 is not None

    def to_dict(self) -> dict[str, Any]:
        known = int((self.labels < self.num_known).sum())
        out: dict[str, Any] = {"fold": self.fold, "known_images": known,
                               "other_images": len(self.labels) - known,
                               "notes": list(self.notes),
                               "export": self.exported.to_dict() if self.exported else None}
        if self.measured:
            out.update(compare(self.labels, self.fp32, self.int8, self.num_known,
                               self.keypoint_error, self.visible))
        return out


def compare(labels: np.ndarray, fp32: np.ndarray, int8: np.ndarray, num_known: int,
            keypoint_error: np.ndarray | None = None,
            visible: np.ndarray | None = None) -> dict[str, Any]:
    """fp32 against int8 probabilities of the same photos, in :mod:`fitlens.metrics`' terms."""
    classes = [str(i) for i in range(num_known)]
    a, b = scores(fp32, labels, classes), scores(int8, labels, classes)
    out: dict[str, Any] = {
        "images": len(labels), "fp32_f1_macro": a.get("f1_macro"),
        "int8_f1_macro": b.get("f1_macro"),
        "int8_f1_drop": (a["f1_macro"] - b["f1_macro"]) if "f1_macro" in a else None,
        "fp32_reject_auroc": a.get("reject_auroc"), "int8_reject_auroc": b.get("reject_auroc"),
        "top1_agreement": float(np.mean(fp32.argmax(1) == int8.argmax(1)))}
    if keypoint_error is not None and visible is not None:
        seen = keypoint_error[visible]
        out.update({"keypoints_max_px": float(keypoint_error.max()),
                    "keypoints_mean_px": float(keypoint_error.mean()),
                    "keypoints_visible_max_px": float(seen.max()) if seen.size else None,
                    "keypoints_visible_mean_px": float(seen.mean()) if seen.size else None})
    return out


def fold_int8(quality: RecipeQuality, fold: int, settings: Int8Settings) -> FoldInt8:
    """Export and quantise fold ``fold``'s model, then run both files on its test photos."""
    cfg = quality.cfg
    spec = spec_of(cfg.data)
    splits = fold_splits(quality.fold_dir(fold) / "split.csv", spec)
    test = splits["test"]
    labels = np.array([s.label for s in test])
    net = trained_net(cfg.model, spec, quality.fold_checkpoint(fold))
    try:
        exported = export_variants(
            net, quality.fold_dir(fold) / "onnx", quality.recipe.name, resize=spec.resize,
            opset=settings.opset, parity_tol=settings.parity_tol,
            parity_samples=test[:PARITY_PHOTOS],
            calibration=calibration_photos(splits["train"], settings.calibration))
    except ExportError as exc:
        return FoldInt8(fold, spec.num_classes, labels, notes=(f"export refused: {exc}",))
    notes = () if exported.parity_ok else (
        f"{PARITY_NOTE} max |dprobability| {exported.parity_max_abs_diff:.2g} over "
        f"export.parity_tol={exported.parity_tol:g}; the export stage would refuse this file",)
    if exported.int8 is None:
        return FoldInt8(fold, spec.num_classes, labels, exported,
                        notes=(*notes, str(exported.int8_error)))
    fp32, int8 = _outputs([exported.fp32, exported.int8], [s.path for s in test], spec.resize)
    error = visible = None
    if KEYPOINTS_NAME in fp32:
        error = np.linalg.norm(int8[KEYPOINTS_NAME][..., :2] - fp32[KEYPOINTS_NAME][..., :2],
                               axis=-1)
        visible = fp32[KEYPOINTS_NAME][..., 2] >= float(cfg.model.net.min_visibility)
    return FoldInt8(fold, spec.num_classes, labels, exported, fp32[PROBABILITIES_NAME],
                    int8[PROBABILITIES_NAME], error, visible, notes)


@dataclass(frozen=True)
class RecipeInt8:
    name: str
    folds: tuple[FoldInt8, ...]

    def pooled(self) -> dict[str, Any] | None:
        """The comparison over every measured fold's test photos at once."""
        done = [f for f in self.folds if f.measured]
        if not done:
            return None
        pose = all(f.keypoint_error is not None for f in done)
        return {"folds": [f.fold for f in done], **compare(
            np.concatenate([f.labels for f in done]), np.concatenate([f.fp32 for f in done]),
            np.concatenate([f.int8 for f in done]), done[0].num_known,
            np.concatenate([f.keypoint_error for f in done]) if pose else None,
            np.concatenate([f.visible for f in done]) if pose else None)}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "pooled": self.pooled(),
                "per_fold": [f.to_dict() for f in self.folds]}
