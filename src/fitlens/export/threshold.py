"""The operating point: the probability below which the app says "not sure".

A photo is answered with an exercise only under :func:`fitlens.contract.accepted` (the arg-max
output is a known class and its probability reaches the threshold). Lowering the threshold
answers more photos (coverage) and gets more of them wrong (precision), and lets more photos of
other exercises through. The threshold is chosen on photos the model did not train on (out-of-
fold predictions, or the validation split), and with a few dozen such photos a measured precision
of 1.0 means little: the choice requires the *lower* Wilson bound of precision (on the known
photos answered) to reach the target, over at least ``min_accepted`` of them, with at most
``max_other_accepted`` of the other-exercise photos answered. When no threshold meets all that,
the best honest point is shipped and the choice says so, with its numbers, rather than failing
the export.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import onnxruntime as ort

from fitlens.contract import Resize
from fitlens.data.images import IMAGE_SUFFIXES
from fitlens.export.onnx import image_probabilities


class ThresholdError(ValueError):
    """The photos given cannot choose a threshold (none, or malformed probabilities)."""


def wilson_lower(successes: int, trials: int, confidence: float) -> float:
    """One-sided lower confidence bound of a proportion (Wilson score interval)."""
    if trials == 0:
        return 0.0
    z = NormalDist().inv_cdf(confidence)
    p = successes / trials
    centre = p + z * z / (2 * trials)
    margin = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return max(0.0, (centre - margin) / (1 + z * z / trials))


@dataclass(frozen=True)
class ThresholdSettings:
    """``threshold.*`` (conf/threshold/): what the chosen threshold must achieve."""

    target_precision: float = 0.9
    #: One-sided level of the Wilson lower bound the target applies to.
    confidence: float = 0.95
    #: Known photos that must be answered at the threshold: a precision of 4 answers is noise.
    min_accepted: int = 10
    #: Largest fraction of other-exercise photos answered; None: no cap.
    max_other_accepted: float | None = 0.05

    def __post_init__(self) -> None:
        if not 0 < self.target_precision <= 1:
            raise ValueError(f"threshold.target_precision={self.target_precision}: expected a "
                             "fraction in (0, 1]")
        if not 0.5 <= self.confidence < 1:
            raise ValueError(f"threshold.confidence={self.confidence}: expected a level in "
                             "[0.5, 1)")
        if self.min_accepted < 1:
            raise ValueError(f"threshold.min_accepted={self.min_accepted}: expected an integer "
                             ">= 1")
        if self.max_other_accepted is not None and not 0 <= self.max_other_accepted <= 1:
            raise ValueError(f"threshold.max_other_accepted={self.max_other_accepted}: expected "
                             "null or a fraction in [0, 1]")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> ThresholdSettings:
        cap = cfg.get("max_other_accepted")
        return cls(target_precision=float(cfg["target_precision"]),
                   confidence=float(cfg["confidence"]), min_accepted=int(cfg["min_accepted"]),
                   max_other_accepted=None if cap is None else float(cap))


@dataclass(frozen=True)
class OperatingPoint:
    """What a threshold does on a set of photos (known ones and, maybe, other exercises)."""

    threshold: float
    known: int
    #: Known photos answered with an exercise, and how many of those answers are right.
    known_accepted: int
    correct: int
    other: int
    other_accepted: int
    confidence: float

    @property
    def precision(self) -> float:
        """Right answers among the answers to photos of known exercises. Photos of other
        exercises are kept out of it: how many of them a set holds is an accident of the set
        (600 against 98 here), so they are bounded on their own (``other_accepted_fraction``)."""
        return self.correct / self.known_accepted if self.known_accepted else float("nan")

    @property
    def precision_lower(self) -> float:
        return wilson_lower(self.correct, self.known_accepted, self.confidence)

    @property
    def coverage(self) -> float:
        """Known photos answered with an exercise."""
        return self.known_accepted / self.known if self.known else float("nan")

    @property
    def other_accepted_fraction(self) -> float | None:
        return self.other_accepted / self.other if self.other else None

    def to_dict(self) -> dict[str, float | int | None]:
        return {"threshold": self.threshold, "precision": self.precision,
                "precision_lower": self.precision_lower, "confidence": self.confidence,
                "coverage": self.coverage, "known": self.known,
                "known_accepted": self.known_accepted, "correct": self.correct,
                "other": self.other, "other_accepted": self.other_accepted,
                "other_accepted_fraction": self.other_accepted_fraction}

    def describe(self) -> str:
        other = ("" if self.other_accepted_fraction is None else
                 f", other exercises answered {self.other_accepted}/{self.other} "
                 f"({self.other_accepted_fraction:.1%})")
        return (f"precision {self.precision:.3f} (lower bound {self.precision_lower:.3f} at "
                f"{self.confidence:.0%}), coverage {self.coverage:.1%} "
                f"({self.known_accepted}/{self.known} known photos answered){other}")


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float
    #: The chosen point on the photos it was chosen on.
    point: OperatingPoint
    settings: ThresholdSettings
    #: Whether the point meets the target, the minimum and the cap; if not, ``note`` says why.
    met: bool
    #: Which photos it was chosen on ("out-of-fold predictions", "validation split").
    source: str
    note: str = ""


def _checked(probs: np.ndarray, labels: np.ndarray, num_known: int,
             source: str) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if probs.ndim != 2 or len(probs) != len(labels) or len(probs) == 0 \
            or probs.shape[1] < num_known or labels.min(initial=0) < 0 \
            or labels.max(initial=0) > num_known:
        raise ThresholdError(
            f"{source}: need [N, >= {num_known}] probabilities and N labels in 0..{num_known} "
            f"({num_known} = another exercise) for N >= 1 photos; got {probs.shape} and "
            f"{labels.shape}")
    return probs, labels


def operating_point(probs: np.ndarray, labels: np.ndarray, num_known: int, threshold: float,
                    confidence: float = 0.95, source: str = "photos") -> OperatingPoint:
    """Evaluate ``threshold`` under the contract's rule; labels ``num_known`` = other exercise."""
    probs, labels = _checked(probs, labels, num_known, source)
    known = labels < num_known
    top = probs.argmax(axis=1)
    taken = (top < num_known) & (probs.max(axis=1) >= threshold)
    return OperatingPoint(threshold=float(threshold), known=int(known.sum()),
                          known_accepted=int((taken & known).sum()),
                          correct=int((taken & (top == labels)).sum()),
                          other=int((~known).sum()), other_accepted=int((taken & ~known).sum()),
                          confidence=confidence)


def choose_threshold(probs: np.ndarray, labels: np.ndarray, num_known: int,
                     settings: ThresholdSettings, source: str) -> ThresholdChoice:
    """The lowest threshold that meets the target (most photos answered), else the best honest
    one: within the other-exercise cap and the minimum if any threshold is, the highest lower
    bound of precision (ties: more coverage).

    Every distinct top probability is a candidate; photos with equal top probability are
    answered or not together, as the app's ``>=`` does.
    """
    target_precision, confidence = settings.target_precision, settings.confidence
    min_accepted, max_other_accepted = settings.min_accepted, settings.max_other_accepted
    probs, labels = _checked(probs, labels, num_known, source)
    candidates = np.unique(probs.max(axis=1)[probs.argmax(axis=1) < num_known])[::-1]
    points = [operating_point(probs, labels, num_known, float(t), confidence, source)
              for t in candidates]
    if not points:  # every photo's arg-max is the reject output: nothing can be answered
        points = [operating_point(probs, labels, num_known, 1.0, confidence, source)]

    def capped(p: OperatingPoint) -> bool:
        fraction = p.other_accepted_fraction
        return max_other_accepted is None or fraction is None or fraction <= max_other_accepted

    def meets(p: OperatingPoint) -> bool:
        return (p.known_accepted >= min_accepted and capped(p)
                and p.precision_lower >= target_precision)

    good = [p for p in points if meets(p)]
    if good:
        best = min(good, key=lambda p: p.threshold)
        return ThresholdChoice(best.threshold, best, settings, True, source)
    pool = ([p for p in points if capped(p) and p.known_accepted >= min_accepted]
            or [p for p in points if capped(p)] or points)
    best = max(pool, key=lambda p: (p.precision_lower, p.known_accepted))
    cap = ("" if max_other_accepted is None else
           f", at most {max_other_accepted:.0%} of other exercises answered")
    note = (f"no threshold reaches a precision lower bound of {target_precision:g} "
            f"({confidence:.0%} Wilson) with >= {min_accepted} known photos answered{cap} on "
            f"the {source}; shipping the best honest point instead")
    return ThresholdChoice(best.threshold, best, settings, False, source, note)


def folder_probabilities(folder: str | Path, session: ort.InferenceSession,
                         resize: Resize) -> tuple[np.ndarray, int]:
    """The model's probabilities on every image under ``folder`` (photos of other exercises),
    and how many files were unreadable; ``(0 x C, 0)`` if the folder is missing."""
    folder = Path(folder)
    files = (sorted(p for p in folder.rglob("*")
                    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
             if folder.is_dir() else [])
    probs, skipped = image_probabilities(session, files, resize, skip_unreadable=True)
    return probs, len(skipped)
