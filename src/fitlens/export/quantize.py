"""A static int8 (QDQ) variant of the exported model, shipped only if it scores like fp32.

Static QDQ keeps the file a plain ONNX graph (QuantizeLinear/DequantizeLinear around the fp32
ops) that any ONNX Runtime runs, including the app's; per-channel weight scales keep conv layers
with very different filter ranges accurate. Activation ranges are calibrated on training images
through the app's preprocessing, the same pixels the model will see on the phone.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from fitlens.contract import Resize
from fitlens.data.images import preprocess
from fitlens.export.metadata import APP_MAX_IR_VERSION, INPUT_NAME
from fitlens.export.onnx import ExportError, check_loadable
from fitlens.metrics import f1_macro


class QuantizationRefused(ExportError):
    """The int8 model scores worse than fp32 by more than ``export.max_drop``."""


@dataclass(frozen=True)
class Scores:
    accuracy: float
    f1_macro: float


@dataclass(frozen=True)
class QuantizeReport:
    path: Path
    fp32_bytes: int
    int8_bytes: int
    fp32: Scores
    int8: Scores
    test_images: int
    calibration_images: int
    max_drop: float
    #: The split ``test_images`` come from: test, else val, else train (a refit has no other).
    checked_split: str = "test"

    @property
    def drop(self) -> float:
        """The larger of the accuracy and macro-F1 drops (fractions: 0.01 = one point)."""
        return max(self.fp32.accuracy - self.int8.accuracy, self.fp32.f1_macro - self.int8.f1_macro)


class ImageCalibrationReader(CalibrationDataReader):
    """Feeds images one at a time (batch 1, as the app runs) through the app's preprocessing."""

    def __init__(self, images: Sequence[Path], resize: Resize) -> None:
        self.images = list(images)
        self.resize = resize
        self._items: Iterator[dict[str, np.ndarray]] = self._feed()

    def _feed(self) -> Iterator[dict[str, np.ndarray]]:
        for path in self.images:
            yield {INPUT_NAME: preprocess(path, self.resize)}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)

    def rewind(self) -> None:
        self._items = self._feed()


def scores(probs: np.ndarray, labels: np.ndarray, num_known: int | None = None) -> Scores:
    """Accuracy and macro-F1 over the photos of known classes (the best known class predicted),
    as :func:`fitlens.metrics.scores` defines them; ``num_known=None``: every output is known."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    k = probs.shape[1] if num_known is None else num_known
    known = labels < k
    predicted = probs[known, :k].argmax(axis=1)
    return Scores(accuracy=float(np.mean(predicted == labels[known])),
                  f1_macro=f1_macro(predicted, labels[known]))


def check_drop(fp32: Scores, int8: Scores, max_drop: float, source: str) -> None:
    """Raise :class:`QuantizationRefused` if int8 loses more than ``max_drop`` on either score."""
    drops = {"accuracy": fp32.accuracy - int8.accuracy, "macro-F1": fp32.f1_macro - int8.f1_macro}
    worst = max(drops, key=lambda k: drops[k])
    if drops[worst] > max_drop:
        raise QuantizationRefused(
            f"{source}: int8 {worst} drops by {drops[worst] * 100:.1f} points on the test split "
            f"(accuracy {fp32.accuracy:.3f} -> {int8.accuracy:.3f}, macro-F1 "
            f"{fp32.f1_macro:.3f} -> {int8.f1_macro:.3f}); export.max_drop={max_drop:g} allows "
            f"{max_drop * 100:.1f}. Not shipping it: export without export.quantize, or raise "
            "export.max_drop if that loss is acceptable")


def backbone_nodes(model: onnx.ModelProto) -> list[str] | None:
    """The nodes of the CNN backbone (``net.features``), as the exporter's module path records
    them: the only part that is quantised. The pose model's landmarks move by 10-30 px in int8
    (its regression heads need fp32), and the crop, pose features and head are a sliver of the
    compute. None (quantise everything) for a graph without that record."""
    names = [n.name for n in model.graph.node
             if any(p.key == "namespace" and "net.features" in p.value for p in n.metadata_props)]
    return names or None


def quantize_int8(fp32_path: str | Path, dest: str | Path, calibration: Sequence[Path],
                  resize: Resize) -> Path:
    """Write a static QDQ int8 copy of ``fp32_path`` to ``dest`` (atomically), calibrated on
    ``calibration`` images."""
    fp32_path, dest = Path(fp32_path), Path(dest)
    if not calibration:
        raise ValueError(f"{fp32_path}: int8 calibration needs training images; the training "
                         "split is empty")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=dest.parent) as work:
        prepared, quantized = Path(work) / "prepared.onnx", Path(work) / "int8.onnx"
        # Shape inference and graph fusion first (BN into conv etc.), so the quantizer sees the
        # graph ONNX Runtime will run and places Q/DQ where kernels can fuse them.
        # ONNX's own shape inference only: onnxruntime's symbolic one cannot follow the pose
        # model's RoiAlign and Resize (TypeError), and ONNX's is enough for placing Q/DQ.
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(quantized), ImageCalibrationReader(calibration, resize),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        nodes_to_quantize=backbone_nodes(onnx.load(str(prepared))))
        model = onnx.load(str(quantized))
        model.ir_version = min(model.ir_version, APP_MAX_IR_VERSION)
        # quant_pre_process stamps every domain its runtime knows (ai.onnx.ml 5, training, ...);
        # the app's older runtime need not know those versions, and no node uses them.
        used = {node.domain for node in model.graph.node} | {"", "ai.onnx"}
        kept = [o for o in model.opset_import if o.domain in used]
        del model.opset_import[:]
        model.opset_import.extend(kept)
        onnx.save_model(model, str(quantized), save_as_external_data=False)
        check_loadable(quantized, resize.size,
                       [o.name for o in onnx.load(str(fp32_path),
                                                  load_external_data=False).graph.output])
        os.chmod(quantized, 0o644)
        os.replace(quantized, dest)
    return dest
