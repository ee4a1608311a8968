"""The "not sure" threshold: below it the app shows its best guess as a guess, not an answer.

The model always picks one of its six classes, even for a photo of something else. A threshold on
the top probability trades coverage for precision: it is chosen on validation images (never the
test split, which reports the result) as the *lowest* value at which the predictions the app
would show are still right at least ``target_precision`` of the time, so the app says "not sure"
as rarely as that allows. How many photos of other exercises still pass it is reported, because
nothing in training pushes those below the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from fitlens.data.images import IMAGE_SUFFIXES
from fitlens.export.onnx import image_probabilities


class ThresholdError(ValueError):
    """No threshold reaches the target precision on the validation images."""


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float
    target_precision: float
    #: Precision and coverage of the top-1 predictions at or above the threshold, on validation.
    precision: float
    coverage: float
    val_images: int


@dataclass(frozen=True)
class OtherAcceptance:
    """How the threshold treats photos of exercises that are none of the classes."""

    folder: str
    images: int
    accepted: int
    unreadable: int
    note: str | None = None

    @property
    def accepted_fraction(self) -> float | None:
        return self.accepted / self.images if self.images else None


def choose_threshold(probs: np.ndarray, labels: np.ndarray, target_precision: float,
                     source: str) -> ThresholdChoice:
    """The lowest top-probability threshold whose accepted predictions reach the target.

    ``probs`` is ``[N, C]`` (rows sum to 1), ``labels`` the true class indices. Images with equal
    top probability are accepted or refused together, as the app's ``>=`` comparison does.
    """
    if not 0 < target_precision <= 1:
        raise ValueError(f"export.target_precision={target_precision}: expected a fraction in "
                         "(0, 1]")
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2 or len(probs) != len(labels) or len(probs) == 0:
        raise ValueError(f"{source}: need [N, C] probabilities and N labels for N >= 1 "
                         f"validation images; got {probs.shape} and {labels.shape}")
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    order = np.argsort(-confidence, kind="stable")
    confidence, correct = confidence[order], correct[order]
    accepted = np.arange(1, len(order) + 1)
    precision = np.cumsum(correct) / accepted
    # Only the last image of a run of equal confidences is a threshold the app can realise.
    last_of_tie = np.append(confidence[1:] != confidence[:-1], True)
    ok = np.flatnonzero(last_of_tie & (precision >= target_precision))
    if len(ok) == 0:
        best = int(np.argmax(np.where(last_of_tie, precision, -1.0)))
        raise ThresholdError(
            f"{source}: no top-probability threshold reaches precision {target_precision:g} on "
            f"the {len(order)} validation images (best {precision[best]:.3f}, accepting "
            f"{accepted[best]} at >= {confidence[best]:.3f}); lower export.target_precision or "
            "train a better model")
    i = int(ok[-1])
    return ThresholdChoice(threshold=float(confidence[i]), target_precision=target_precision,
                           precision=float(precision[i]), coverage=float(accepted[i] / len(order)),
                           val_images=len(order))


def count_accepted(probs: np.ndarray, threshold: float) -> int:
    """Images whose top probability would be shown as an answer (the app's ``>=``)."""
    probs = np.asarray(probs)
    return int(np.sum(probs.max(axis=1) >= threshold)) if len(probs) else 0


def other_acceptance(folder: str | Path, threshold: float, session: ort.InferenceSession,
                     size: int) -> OtherAcceptance:
    """Run the model on every image under ``folder`` and count those it would still accept.

    A missing or empty folder is not an error (the data is optional); the result says so.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return OtherAcceptance(str(folder), 0, 0, 0, note=(
            "folder not found; link ../shared/data/other there (bash scripts/setup.sh) or set "
            "export.other_dir to photos of exercises outside the classes"))
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    probs, skipped = image_probabilities(session, files, size, skip_unreadable=True)
    return OtherAcceptance(str(folder), len(probs), count_accepted(probs, threshold),
                           len(skipped), note=None if len(probs) else "no readable images")
