"""The "not sure" threshold: chosen on the lower confidence bound of precision, with a minimum of
answered photos and a cap on answered photos of other exercises; honest when unmet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from fitlens.contract import Resize
from fitlens.export.onnx import session_for
from fitlens.export.threshold import (
    ThresholdError,
    ThresholdSettings,
    choose_threshold,
    folder_probabilities,
    operating_point,
    wilson_lower,
)
from tests.test_predict import colour_model

#: Plain precision: a bound at 50% confidence is the observed proportion.
PLAIN = dict(confidence=0.5, min_accepted=1, max_other_accepted=None)


def _probs(confidences: list[float], correct: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    """Two known classes; rows with the given top probability, label = top class iff correct."""
    conf = np.array(confidences)
    probs = np.stack([conf, 1 - conf], axis=1)
    labels = np.where(correct, 0, 1)
    return probs, labels


def test_wilson_lower_bound_matches_the_formula() -> None:
    # 10 of 10 at 95% one-sided (z = 1.6449): n / (n + z^2) = 0.787.
    assert wilson_lower(10, 10, 0.95) == pytest.approx(10 / (10 + 1.6449 ** 2), abs=1e-4)
    assert wilson_lower(5, 10, 0.5) == pytest.approx(0.5)
    assert wilson_lower(0, 0, 0.95) == 0.0
    # More evidence at the same proportion: a tighter bound.
    assert wilson_lower(90, 100, 0.95) > wilson_lower(9, 10, 0.95)


def test_picks_the_lowest_threshold_that_reaches_the_target() -> None:
    probs, labels = _probs([0.9, 0.8, 0.7, 0.6, 0.55], [True, True, False, True, False])
    # Answering down to 0.6 gives 3 of 4 right; down to 0.55, 3 of 5.
    choice = choose_threshold(probs, labels, 2, ThresholdSettings(0.75, **PLAIN), "val")
    assert choice.met and choice.threshold == 0.6
    assert (choice.point.precision, choice.point.coverage) == (0.75, 0.8)
    strict = choose_threshold(probs, labels, 2, ThresholdSettings(0.8, **PLAIN), "val")
    assert strict.threshold == 0.8 and strict.point.coverage == 0.4


def test_the_lower_bound_not_the_observed_precision_must_reach_the_target() -> None:
    # 4 of 4 right is precision 1.0, but its 95% lower bound is 0.60: not enough for 0.9.
    probs, labels = _probs([0.9, 0.85, 0.8, 0.75, 0.3], [True] * 4 + [False])
    choice = choose_threshold(probs, labels, 2, ThresholdSettings(0.9, 0.95, 1, None), "val")
    assert not choice.met
    assert choice.point.precision == 1.0 and choice.point.precision_lower < 0.9
    assert "no threshold reaches a precision lower bound of 0.9" in choice.note
    assert "shipping the best honest point" in choice.note


def test_a_minimum_of_answered_photos_is_required() -> None:
    # Only the single most confident photo is answered with precision 1.0.
    probs, labels = _probs([0.9, 0.8, 0.7, 0.6], [True, False, True, True])
    one = choose_threshold(probs, labels, 2, ThresholdSettings(0.9, 0.5, 1, None), "val")
    assert one.met and one.threshold == 0.9
    two = choose_threshold(probs, labels, 2, ThresholdSettings(0.9, 0.5, 2, None), "val")
    assert not two.met and two.point.known_accepted >= 2


def test_tied_confidences_are_accepted_or_refused_together() -> None:
    probs, labels = _probs([0.9, 0.7, 0.7, 0.7], [True, False, True, True])
    # At 0.7 all three tied photos come in (3 of 4 right): 0.7 cannot keep 0.9 precision.
    assert choose_threshold(probs, labels, 2, ThresholdSettings(0.9, **PLAIN), "v").threshold \
        == 0.9
    assert choose_threshold(probs, labels, 2, ThresholdSettings(0.75, **PLAIN), "v").threshold \
        == 0.7


def test_other_exercises_are_capped_and_a_winning_reject_output_is_never_answered() -> None:
    # Outputs: two known classes, then the reject class. Labels 2 = another exercise.
    probs = np.array([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.7, 0.1, 0.2],
                      [0.6, 0.2, 0.2], [0.1, 0.1, 0.8]])
    labels = np.array([0, 0, 2, 2, 2])
    loose = ThresholdSettings(0.5, 0.5, 1, None)
    capped = ThresholdSettings(0.5, 0.5, 1, 0.34)
    assert choose_threshold(probs, labels, 2, loose, "v").threshold == 0.6
    choice = choose_threshold(probs, labels, 2, capped, "v")
    assert choice.threshold == 0.7 and choice.point.other_accepted == 1
    point = operating_point(probs, labels, 2, 0.0)
    assert point.other_accepted == 2  # the 0.8 "none" row is never answered
    assert point.other_accepted_fraction == pytest.approx(2 / 3)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("target_precision", 1.5, "threshold.target_precision=1.5"),
    ("confidence", 1.0, "threshold.confidence=1.0"),
    ("min_accepted", 0, "threshold.min_accepted=0"),
    ("max_other_accepted", 2.0, "threshold.max_other_accepted=2.0"),
])
def test_settings_name_the_setting(field: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ThresholdSettings(**{field: value})


def test_no_photos_is_an_error() -> None:
    with pytest.raises(ThresholdError, match="val: need"):
        choose_threshold(np.zeros((0, 2)), np.zeros(0), 2, ThresholdSettings(), "val")


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.integers(1, 30), elements=st.floats(0.34, 1.0)),
       st.lists(st.booleans(), min_size=30, max_size=30), st.floats(0.3, 1.0))
def test_a_met_choice_is_the_lowest_threshold_whose_bound_reaches_the_target(
        conf: np.ndarray, right: list[bool], target: float) -> None:
    probs, labels = _probs(list(conf), right[:len(conf)])
    rule = ThresholdSettings(target, 0.8, 2, None)
    choice = choose_threshold(probs, labels, 2, rule, "val")
    if not choice.met:
        return
    assert choice.point.precision_lower >= target and choice.point.known_accepted >= 2
    for t in np.unique(probs.max(axis=1)):
        point = operating_point(probs, labels, 2, float(t), 0.8)
        if t < choice.threshold:
            assert point.precision_lower < target or point.known_accepted < 2


def test_folder_probabilities_cover_readable_images(tmp_path: Path) -> None:
    model = colour_model(tmp_path / "model", threshold=0.9)
    other = tmp_path / "other" / "nested"
    other.mkdir(parents=True)
    Image.new("RGB", (20, 20), (255, 0, 0)).save(other / "red.png")
    Image.new("RGB", (20, 20), (128, 128, 128)).save(other / "grey.jpg")
    (other / "broken.jpg").write_bytes(b"not an image")
    probs, unreadable = folder_probabilities(tmp_path / "other", session_for(model /
                                                                             "colour.onnx"),
                                             Resize(16))
    assert probs.shape == (2, 3) and unreadable == 1
    missing, _ = folder_probabilities(tmp_path / "nowhere", session_for(model / "colour.onnx"),
                                      Resize(16))
    assert missing.shape == (0, 3)
