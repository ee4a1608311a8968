"""The "not sure" threshold: the lowest one that keeps validation precision at the target."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from fitlens.export.onnx import session_for
from fitlens.export.threshold import (
    ThresholdError,
    choose_threshold,
    count_accepted,
    other_acceptance,
)
from tests.test_predict import colour_model


def _probs(confidences: list[float], correct: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    """Two-class rows with the given top probability; label = top class iff ``correct``."""
    conf = np.array(confidences)
    probs = np.stack([conf, 1 - conf], axis=1)
    labels = np.where(correct, 0, 1)
    return probs, labels


def test_picks_the_lowest_threshold_that_reaches_the_target() -> None:
    probs, labels = _probs([0.9, 0.8, 0.7, 0.6, 0.55], [True, True, False, True, False])
    # Accepting down to 0.6 gives 3 of 4 right; down to 0.55, 3 of 5.
    choice = choose_threshold(probs, labels, 0.75, "val")
    assert (choice.threshold, choice.precision, choice.coverage) == (0.6, 0.75, 0.8)
    strict = choose_threshold(probs, labels, 0.8, "val")
    assert (strict.threshold, strict.precision, strict.coverage) == (0.8, 1.0, 0.4)
    assert strict.val_images == 5 and strict.target_precision == 0.8


def test_tied_confidences_are_accepted_or_refused_together() -> None:
    probs, labels = _probs([0.9, 0.7, 0.7, 0.7], [True, False, True, True])
    # At 0.7 all three tied images come in (3 of 4 right): 0.7 cannot keep 0.9 precision.
    assert choose_threshold(probs, labels, 0.9, "val").threshold == 0.9
    assert choose_threshold(probs, labels, 0.75, "val").threshold == 0.7


def test_unreachable_target_fails_with_the_setting_to_change() -> None:
    probs, labels = _probs([0.9, 0.5], [False, True])
    with pytest.raises(ThresholdError, match="validation split.*export.target_precision"):
        choose_threshold(probs, labels, 0.95, "model.onnx on the validation split")


@pytest.mark.parametrize("target", [0.0, 1.5, -0.1])
def test_target_must_be_a_fraction(target: float) -> None:
    probs, labels = _probs([0.9], [True])
    with pytest.raises(ValueError, match=f"export.target_precision={target}"):
        choose_threshold(probs, labels, target, "val")


def test_no_validation_images_is_an_error() -> None:
    with pytest.raises(ValueError, match="N >= 1 validation images"):
        choose_threshold(np.zeros((0, 3)), np.zeros(0), 0.9, "val")


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 40).flatmap(lambda n: st.tuples(
    arrays(np.float64, (n, 3), elements=st.floats(0.01, 1.0)),
    arrays(np.int64, n, elements=st.integers(0, 2)))),
    st.sampled_from([0.5, 0.8, 0.95, 1.0]))
def test_threshold_is_the_lowest_that_keeps_precision(data: tuple[np.ndarray, np.ndarray],
                                                      target: float) -> None:
    raw, labels = data
    probs = raw / raw.sum(axis=1, keepdims=True)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels

    def precision_at(t: float) -> float:
        accepted = confidence >= t
        return correct[accepted].mean()

    try:
        choice = choose_threshold(probs, labels, target, "val")
    except ThresholdError:
        assert all(precision_at(t) < target for t in confidence)
        return
    assert choice.threshold in confidence
    assert choice.precision == pytest.approx(precision_at(choice.threshold))
    assert choice.precision >= target
    assert choice.coverage == pytest.approx(np.mean(confidence >= choice.threshold))
    assert all(precision_at(t) < target for t in confidence if t < choice.threshold)
    assert count_accepted(probs, choice.threshold) == round(choice.coverage * len(probs))


def _solid(path: Path, rgb: tuple[int, int, int]) -> Path:
    Image.new("RGB", (20, 12), rgb).save(path)
    return path


def test_other_folder_acceptance_is_counted(tmp_path: Path) -> None:
    model_dir = colour_model(tmp_path / "model")
    session = session_for(model_dir / "colour.onnx")
    other = tmp_path / "other"
    (other / "nested").mkdir(parents=True)
    _solid(other / "red.png", (255, 0, 0))                 # confidently "red"
    _solid(other / "nested" / "blue.jpg", (0, 0, 255))     # confidently "blue"
    _solid(other / "grey.png", (128, 128, 128))            # 1/3 each: not sure
    (other / "broken.jpg").write_bytes(b"not a jpeg")
    (other / "notes.txt").write_text("not an image, not counted")

    result = other_acceptance(other, 0.9, session, 16)

    assert (result.images, result.accepted, result.unreadable) == (3, 2, 1)
    assert result.accepted_fraction == pytest.approx(2 / 3) and result.note is None
    assert other_acceptance(other, 0.99999, session, 16).accepted == 0


def test_missing_other_folder_is_a_note_not_an_error(tmp_path: Path) -> None:
    session = session_for(colour_model(tmp_path / "model") / "colour.onnx")
    result = other_acceptance(tmp_path / "absent", 0.5, session, 16)
    assert (result.images, result.accepted, result.accepted_fraction) == (0, 0, None)
    assert "not found" in result.note and "export.other_dir" in result.note
