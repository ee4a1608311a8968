"""The evaluation pictures and tables a run leaves in its folder, with or without MLflow:
confusion matrices (``plots/confusion_<split>.png``), per-class scores
(``reports/per_class_<split>.csv``) and the misclassified test photos. Tracking logs these same
files (``plots/``, ``reports/``), so the run folder and the MLflow run show the same thing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from fitlens.data.splits import Sample
from fitlens.models.classifier import ExerciseClassifier
from fitlens.tracking.plots import confusion_png, misclassified_png, per_class_csv

log = logging.getLogger(__name__)

PLOTS_DIR = "plots"
REPORTS_DIR = "reports"
#: What each split's confusion matrix was measured with.
TITLES = {"val": "validation (last epoch)", "test": "test (best checkpoint)",
          "oof": "out-of-fold"}


def write_split_reports(matrices: dict[str, torch.Tensor], classes: Sequence[str],
                        folder: Path) -> list[Path]:
    """Confusion matrix and per-class CSV of each split in ``matrices`` (``[true, predicted]``)."""
    plots, reports = folder / PLOTS_DIR, folder / REPORTS_DIR
    plots.mkdir(parents=True, exist_ok=True)
    reports.mkdir(parents=True, exist_ok=True)
    written = []
    for split, matrix in matrices.items():
        written.append(confusion_png(matrix, classes, f"confusion: {TITLES.get(split, split)}",
                                     plots / f"confusion_{split}.png"))
        written.append(per_class_csv(matrix, classes, reports / f"per_class_{split}.csv"))
    return written


def write_run_reports(module: ExerciseClassifier, samples: dict[str, list[Sample]],
                      folder: Path) -> list[Path]:
    """The reports of a fitted and tested :class:`~fitlens.models.classifier.ExerciseClassifier`
    (its ``confusion`` per split and ``test_outputs``) into the run folder."""
    classes = module.spec.output_classes
    written = write_split_reports(module.confusion, classes, folder)
    outputs = module.test_outputs
    test = samples.get("test", [])
    # Fewer predictions than photos: a limited test (fast_dev_run, limit_test_batches).
    if outputs and len(outputs["labels"]) == len(test):
        # Predictions pair with files only if they arrive in file order (not under DDP).
        if outputs["labels"].tolist() == [s.label for s in test]:
            written.append(misclassified_png(test, outputs["probs"], classes,
                                             folder / PLOTS_DIR / "misclassified_test.png"))
        else:
            log.warning("test predictions are not in file order (distributed test?); no "
                        "misclassified grid")
    return written


def write_oof_reports(matrix: np.ndarray, classes: Sequence[str], folder: Path) -> list[Path]:
    """A cross-validation's out-of-fold confusion matrix and per-class CSV."""
    return write_split_reports({"oof": torch.from_numpy(matrix)}, classes, folder)
