"""Cross-validate, then refit, in one job (``python train.py experiment=cv5``).

With 98 photos, one 20-photo test split decides by noise. Here every photo is predicted exactly
once by a model that never saw its exercise variant (k group folds: the out-of-fold, "OOF",
predictions), the scores and the "not sure" threshold come from those predictions, and the model
that ships is a refit of the same recipe on all photos, as scikit-learn's ``cross_validate`` plus
refit would do. In MLflow: one parent run, a child per fold and one for the refit; only the
refit is registered, carrying the ``oof/*`` metrics, the OOF predictions (``oof_predictions.csv``,
which the export chooses its threshold on) and the OOF confusion matrix.
"""

from __future__ import annotations

import copy
import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, open_dict

from fitlens.contract import InputSpec
from fitlens.export.threshold import ThresholdChoice, ThresholdSettings, choose_threshold
from fitlens.metrics import confusion, f1_macro, scores

log = logging.getLogger(__name__)

OOF_FILE = "oof_predictions.csv"
#: Bootstrap resamples of exercise variants for the interval of the OOF macro-F1.
BOOTSTRAP = 2000
INTERVAL = 0.90


@dataclass
class OutOfFold:
    """Every photo's prediction by the fold model that held it out."""

    files: list[str]
    classes: list[str]
    groups: list[str]
    folds: list[int]
    probs: np.ndarray
    labels: np.ndarray

    def extend(self, files: Sequence[str], classes: Sequence[str], groups: Sequence[str],
               fold: int, probs: np.ndarray, labels: np.ndarray) -> None:
        self.files += list(files)
        self.classes += list(classes)
        self.groups += list(groups)
        self.folds += [fold] * len(files)
        self.probs = np.concatenate([self.probs, probs]) if len(self.probs) else probs
        self.labels = np.concatenate([self.labels, labels])

    @classmethod
    def empty(cls) -> OutOfFold:
        return cls([], [], [], [], np.zeros((0, 0)), np.zeros(0, dtype=np.int64))


def group_interval(oof: OutOfFold, num_known: int, seed: int, resamples: int = BOOTSTRAP,
                   level: float = INTERVAL) -> tuple[float, float]:
    """A bootstrap interval of the known-class macro-F1 that resamples exercise *variants*
    (the two photos of a variant are not independent evidence)."""
    known = oof.labels < num_known
    groups = np.array(oof.groups)[known]
    predicted = oof.probs[known, :num_known].argmax(axis=1)
    labels = oof.labels[known]
    unique = np.unique(groups)
    rows = [np.flatnonzero(groups == g) for g in unique]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        take = np.concatenate([rows[i] for i in rng.integers(0, len(rows), len(rows))])
        values.append(f1_macro(predicted[take], labels[take]))
    low, high = np.quantile(values, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(low), float(high)


def oof_metrics(oof: OutOfFold, spec: InputSpec, seed: int) -> dict[str, float]:
    """``oof/*``: the scores of :mod:`fitlens.metrics` over every photo, the variant-bootstrap
    interval of macro-F1, and each fold's macro-F1."""
    metrics = {f"oof/{k}": v for k, v in scores(oof.probs, oof.labels, spec.classes).items()}
    low, high = group_interval(oof, spec.num_classes, seed)
    metrics.update({"oof/f1_macro_low": low, "oof/f1_macro_high": high})
    folds = np.array(oof.folds)
    for fold in sorted(set(oof.folds)):
        fold_scores = scores(oof.probs[folds == fold], oof.labels[folds == fold], spec.classes)
        if "f1_macro" in fold_scores:
            metrics[f"oof/fold{fold}_f1_macro"] = fold_scores["f1_macro"]
    return metrics


def oof_threshold(oof: OutOfFold, spec: InputSpec,
                  settings: ThresholdSettings) -> ThresholdChoice:
    return choose_threshold(oof.probs, oof.labels, spec.num_classes, settings,
                            f"out-of-fold predictions of {len(oof.labels)} photos")


def write_oof_csv(oof: OutOfFold, output_classes: Sequence[str], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "class", "group", "fold", "predicted", *output_classes])
        for i, file in enumerate(oof.files):
            writer.writerow([file, oof.classes[i], oof.groups[i], oof.folds[i],
                             output_classes[int(oof.probs[i].argmax())],
                             *(f"{p:.6f}" for p in oof.probs[i])])
    return path


def read_oof_csv(path: str | Path,
                 output_classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(probabilities [N, outputs], labels [N])`` from an ``oof_predictions.csv``."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in ("class", *output_classes) if c not in header]
        if missing:
            raise ValueError(f"{path}: columns {missing} missing; expected the out-of-fold "
                             f"predictions of a model with outputs {list(output_classes)}")
        probs, labels = [], []
        for line, row in enumerate(reader, start=2):
            if row["class"] not in output_classes:
                raise ValueError(f"{path}, line {line}: class {row['class']!r} is not one of "
                                 f"{list(output_classes)}")
            labels.append(list(output_classes).index(row["class"]))
            probs.append([float(row[c]) for c in output_classes])
    if not labels:
        raise ValueError(f"{path}: no predictions")
    return np.array(probs, dtype=np.float64), np.array(labels, dtype=np.int64)


def fold_config(cfg: DictConfig, fold: int | None) -> DictConfig:
    """The job config of one fold (``fold``) or of the refit (``None``): its own folder, no
    registration; the refit trains on every photo."""
    job = copy.deepcopy(cfg)
    with open_dict(job):
        folds = int(cfg.cv.folds)
        job.cv.folds = None
        job.paths.output_dir = str(Path(cfg.paths.output_dir) /
                                   ("refit" if fold is None else f"fold{fold}"))
        if fold is None:
            job.data.folds = None
            job.data.val_fraction = 0.0
            job.data.test_fraction = 0.0
            job.test = False
        else:
            job.data.folds = folds
            job.data.fold = fold
            job.test = True
    return job


def confusion_matrix(oof: OutOfFold, spec: InputSpec) -> np.ndarray:
    return confusion(oof.probs, oof.labels, spec.num_outputs)
