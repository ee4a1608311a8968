"""How far frozen ImageNet features go: a linear probe on the quality section's folds.

For each fold, a logistic regression (scikit-learn, balanced class weights) is fitted on the
backbone's pooled features of the fold's training photos and their mirror images, and scores the
fold's test photos (unmirrored, as the app sees them). No training job is involved, so this is
the yardstick for the recipes: a training job that scores below it has not fitted even a linear
head, and a probe that is low itself says the features, not the training, are the limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from fitlens.data.images import preprocess
from fitlens.data.splits import Sample, read_split_csv
from fitlens.metrics import f1_macro
from fitlens.models.backbones import Backbone
from fitlens.models.classifier import ExerciseNet

#: Inverse L2 strength on standardised features. On the shared photos any value in 0.01-1 moved
#: the mean by at most 0.04; a fixed value keeps the probe free of tuning on the test folds.
PROBE_C = 0.1


@dataclass(frozen=True)
class ProbeResult:
    f1_macro: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        values = np.array(self.f1_macro)
        return {"per_fold": list(self.f1_macro), "mean": float(values.mean()),
                "std": float(values.std(ddof=1)) if len(values) > 1 else None,
                "classifier": f"LogisticRegression(C={PROBE_C}, class_weight='balanced') on "
                              "standardised pooled features, training photos + mirror images"}


@torch.no_grad()
def pooled_features(backbone: Backbone, paths: Sequence[Path], size: int) -> np.ndarray:
    """``[N, 2, D]``: the pooled features of each photo and of its mirror image, normalised by
    the model itself (:meth:`ExerciseNet.embed`), as in training and export."""
    net = ExerciseNet(backbone, num_outputs=1).eval()
    rows = []
    for path in paths:
        x = torch.from_numpy(preprocess(path, size))
        rows.append(net.embed(torch.cat([x, x.flip(-1)])).numpy())
    return np.stack(rows)


def _known(split_csv: Path, classes: Sequence[str],
           reject_class: str | None) -> tuple[list[Sample], dict[str, str]]:
    """A fold's photos of the known classes: the probe scores the features on those, as the
    known-class macro-F1 of the training job does."""
    outputs = [*classes, *([reject_class] if reject_class else [])]
    samples, split_of = read_split_csv(split_csv, outputs)
    return [s for s in samples if s.label < len(classes)], split_of


def linear_probe(backbone: Backbone, split_csvs: Sequence[Path], classes: Sequence[str],
                 size: int, reject_class: str | None = None) -> ProbeResult:
    """Macro-F1 of the probe on each fold's test photos of the known classes (the split files
    may list ``reject_class`` photos too); features are computed once."""
    folds = [_known(path, classes, reject_class) for path in split_csvs]
    samples: list[Sample] = sorted({s for fold, _ in folds for s in fold}, key=lambda s: s.path)
    row = {s.path: i for i, s in enumerate(samples)}
    features = pooled_features(backbone, [s.path for s in samples], size)
    labels = np.array([s.label for s in samples])
    scores = []
    for fold_samples, split_of in folds:
        train = [row[s.path] for s in fold_samples if split_of[s.group] != "test"]
        test = [row[s.path] for s in fold_samples if split_of[s.group] == "test"]
        x_train = features[train].reshape(-1, features.shape[-1])
        y_train = np.repeat(labels[train], features.shape[1])
        scaler = StandardScaler().fit(x_train)
        probe = LogisticRegression(C=PROBE_C, class_weight="balanced", max_iter=5000)
        probe.fit(scaler.transform(x_train), y_train)
        predicted = probe.predict(scaler.transform(features[test, 0]))
        scores.append(f1_macro(predicted, labels[test]))
    return ProbeResult(tuple(scores))
