"""The scores every stage reports, computed one way: training, cross-validation, export, evaluate.

Known-class scores (``acc``, ``f1_macro``, ``acc_<class>``) are over photos of the known classes,
with the best *known* class as the prediction, so switching a reject class on or off does not
change what they measure. Reject scores (``reject_auroc``, ``known_accepted``,
``other_accepted``) are over known and other photos together, with
:func:`fitlens.contract.accepted` as the rule at a given threshold; ``accepted_precision`` is the
share of right answers among the known photos answered (how many photos of other exercises a set
holds is an accident of the set, so they count in ``other_accepted`` instead).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

from fitlens.contract import accepted


def f1_macro(predicted: np.ndarray, labels: np.ndarray) -> float:
    """Macro-F1 over the classes that occur in labels or predictions (as torchmetrics does), so
    a class missing from a small split is not a 0 in the mean."""
    f1s = []
    for c in np.union1d(labels, predicted):
        tp = np.sum((predicted == c) & (labels == c))
        fp = np.sum((predicted == c) & (labels != c))
        fn = np.sum((predicted != c) & (labels == c))
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else float("nan")


def unknown_score(probs: np.ndarray, num_known: int) -> np.ndarray:
    """How strongly a photo reads as none of the known classes: the reject output's probability,
    or, for a model without one, 1 - the best known probability."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape[1] > num_known:
        return probs[:, num_known]
    return 1.0 - probs.max(axis=1)


def confusion(probs: np.ndarray, labels: np.ndarray, width: int) -> np.ndarray:
    """``[true, predicted]`` counts over every output (arg-max over all outputs)."""
    matrix = np.zeros((width, width), dtype=np.int64)
    if len(labels):
        np.add.at(matrix, (np.asarray(labels), np.asarray(probs).argmax(axis=1)), 1)
    return matrix


def scores(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str],
           threshold: float = 0.0) -> dict[str, float]:
    """All scores of ``[N, outputs]`` probabilities against labels (known class index, or
    ``len(classes)`` for a photo of another exercise). Scores that need photos the set lacks
    (other photos for AUROC, say) are left out rather than reported as 0."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    k = len(classes)
    known = labels < k
    out: dict[str, float] = {}
    if known.any():
        predicted = probs[known, :k].argmax(axis=1)
        truth = labels[known]
        out["acc"] = float(np.mean(predicted == truth))
        out["f1_macro"] = f1_macro(predicted, truth)
        for i, name in enumerate(classes):
            mask = truth == i
            if mask.any():
                out[f"acc_{name}"] = float(np.mean(predicted[mask] == i))
    other = ~known
    if len(labels):
        taken = accepted(probs, threshold, k)
        right = taken & (probs[:, :k].argmax(axis=1) == labels)  # never true for others
        if known.any():
            out["known_accepted"] = float(taken[known].mean())
        if other.any():
            out["other_accepted"] = float(taken[other].mean())
        if (taken & known).any():  # as the threshold's precision: answers to known photos
            out["accepted_precision"] = float(right.sum() / (taken & known).sum())
    if known.any() and other.any():
        out["reject_auroc"] = float(roc_auc_score(other, unknown_score(probs, k)))
    return out
