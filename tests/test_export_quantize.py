"""The int8 variant: static QDQ, per channel, calibrated on training images, and its gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from torchmetrics.functional.classification import multiclass_f1_score

from fitlens.export.metadata import APP_MAX_IR_VERSION, APP_MAX_OPSET
from fitlens.export.onnx import file_opset, image_probabilities, session_for
from fitlens.export.quantize import (
    ImageCalibrationReader,
    QuantizationRefused,
    Scores,
    check_drop,
    quantize_int8,
    scores,
)
from tests.test_export_onnx import TinyModel, tiny_model, tiny_onnx


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    return tiny_model(tmp_path_factory)


@pytest.fixture(scope="module")
def fp32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_onnx(tmp_path_factory)


@pytest.fixture(scope="module")
def int8(tiny: TinyModel, fp32: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("int8") / "fitness_resnet18_int8.onnx"
    return quantize_int8(fp32, dest, [s.path for s in tiny.samples["train"]], tiny.spec.resize)


def _test_scores(model: Path, tiny: TinyModel) -> Scores:
    test = tiny.samples["test"]
    probs, _ = image_probabilities(session_for(model), [s.path for s in test], tiny.spec.resize)
    return scores(probs, np.array([s.label for s in test]))


def test_scores_by_hand() -> None:
    probs = np.eye(3)[[0, 0, 1, 2, 2]]
    labels = np.array([0, 1, 1, 2, 0])
    # Per class F1: 0 -> 2*1/(2+1+1) = .5, 1 -> 2/(2+0+1) = 2/3, 2 -> 2/(2+1+0) = 2/3.
    s = scores(probs, labels)
    assert s.accuracy == pytest.approx(3 / 5)
    assert s.f1_macro == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)


@settings(max_examples=50, deadline=None)
@given(st.integers(6, 30).flatmap(lambda n: st.tuples(
    arrays(np.float32, (n, 4), elements=st.floats(0, 1, width=32)),
    st.permutations(list(range(4)) + [i % 4 for i in range(n - 4)]))))
def test_macro_f1_agrees_with_torchmetrics(data: tuple[np.ndarray, list[int]]) -> None:
    probs, labels = data  # every class occurs in the labels, so both averages agree
    expected = multiclass_f1_score(torch.from_numpy(probs), torch.tensor(labels), 4,
                                   average="macro")
    assert scores(probs, np.array(labels)).f1_macro == pytest.approx(float(expected), abs=1e-6)


def test_drop_gate() -> None:
    fp32 = Scores(accuracy=0.90, f1_macro=0.88)
    check_drop(fp32, Scores(accuracy=0.895, f1_macro=0.875), 0.01, "m_int8.onnx")
    check_drop(fp32, Scores(accuracy=0.95, f1_macro=0.90), 0.0, "m_int8.onnx")
    with pytest.raises(QuantizationRefused,
                       match=r"m_int8.onnx: int8 macro-F1 drops by 3.0 points.*"
                             r"export.max_drop=0.01 allows 1.0"):
        check_drop(fp32, Scores(accuracy=0.90, f1_macro=0.85), 0.01, "m_int8.onnx")


def test_int8_is_static_qdq_per_channel_and_loads_in_the_app(tiny: TinyModel, fp32: Path,
                                                             int8: Path) -> None:
    model = onnx.load(str(int8))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert not ops & {"QLinearConv", "DynamicQuantizeLinear"}, "QDQ format, static ranges"
    initializers = {t.name: t for t in model.graph.initializer}
    weight_scales = [initializers[n.input[1]] for n in model.graph.node
                     if n.op_type == "DequantizeLinear" and n.input[0] in initializers
                     and initializers[n.input[0]].data_type == onnx.TensorProto.INT8]
    assert weight_scales and any(len(s.dims) == 1 and s.dims[0] > 1 for s in weight_scales), \
        "per-channel: one scale per output channel"
    assert model.ir_version <= APP_MAX_IR_VERSION and file_opset(int8) <= APP_MAX_OPSET
    assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"}
    ort.InferenceSession(int8.read_bytes(), providers=["CPUExecutionProvider"])
    assert int8.stat().st_size < fp32.stat().st_size / 3
    fp32_scores, int8_scores = _test_scores(fp32, tiny), _test_scores(int8, tiny)
    check_drop(fp32_scores, int8_scores, 0.01, int8.name)


def test_bad_calibration_is_caught_by_the_gate(tiny: TinyModel, fp32: Path,
                                               tmp_path: Path) -> None:
    # Calibrated on black frames, activation ranges are far too narrow for real photos.
    black = tmp_path / "black.png"
    Image.new("RGB", (32, 32)).save(black)
    bad = quantize_int8(fp32, tmp_path / "bad_int8.onnx", [black] * 4, tiny.spec.resize)
    with pytest.raises(QuantizationRefused, match=r"int8 (accuracy|macro-F1) drops by"):
        check_drop(_test_scores(fp32, tiny), _test_scores(bad, tiny), 0.01, bad.name)


def test_calibration_needs_images(fp32: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="training split is empty"):
        quantize_int8(fp32, tmp_path / "q.onnx", [], 32)
    assert list(tmp_path.iterdir()) == []


def test_calibration_reader_feeds_single_preprocessed_images(tiny: TinyModel) -> None:
    paths = [s.path for s in tiny.samples["train"][:3]]
    reader = ImageCalibrationReader(paths, tiny.spec.resize)
    first = [reader.get_next() for _ in range(4)]
    assert first[3] is None
    assert all(set(b) == {"input"} and b["input"].shape == (1, 3, 32, 32)
               and b["input"].dtype == np.float32 for b in first[:3])
    reader.rewind()
    np.testing.assert_array_equal(reader.get_next()["input"], first[0]["input"])
