"""Export one trained (or random) network the way the export stage does, timed: the fp32 file
(export + onnx.checker + parity on real photos) and its static int8 (QDQ) copy.

The files feed the latency and int8 sections; the seconds are the "export cost" section. Parity
is measured, not enforced: a file whose probabilities differ from PyTorch's by more than
``export.parity_tol`` is kept and marked, since the export stage would refuse it and the report
must say so, while its size, speed and int8 loss are still worth knowing. A file whose top class
differs from PyTorch's on any photo is refused, as by the export stage.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from fitlens.contract import Resize
from fitlens.data.splits import Sample
from fitlens.export.metadata import INPUT_NAME
from fitlens.export.onnx import export_onnx
from fitlens.export.quantize import quantize_int8
from fitlens.models.pose import INPUT_SIZE, BlazePose

#: The name of BlazePose alone in the report and its files.
BLAZEPOSE = "blazepose"


@dataclass(frozen=True)
class ExportedModel:
    name: str
    fp32: Path
    #: None when quantisation failed (``int8_error`` says how).
    int8: Path | None
    #: export_onnx: torch.onnx export, onnx.checker, load from bytes, parity vs PyTorch.
    export_seconds: float
    #: quantize_int8: pre-processing, MinMax calibration, QDQ rewrite, checker.
    quantize_seconds: float | None
    parity_images: int
    parity_max_abs_diff: float | None
    #: The export stage's ``export.parity_tol``, which ``parity_max_abs_diff`` must not exceed.
    parity_tol: float | None
    calibration_images: int
    int8_error: str | None = None

    @property
    def parity_ok(self) -> bool | None:
        """Whether the export stage would accept the fp32 file (None: not a contract model)."""
        if self.parity_max_abs_diff is None or self.parity_tol is None:
            return None
        return self.parity_max_abs_diff <= self.parity_tol

    @property
    def fp32_bytes(self) -> int:
        return self.fp32.stat().st_size

    @property
    def int8_bytes(self) -> int | None:
        return None if self.int8 is None else self.int8.stat().st_size

    def to_dict(self) -> dict[str, Any]:
        int8_bytes = self.int8_bytes
        return {"name": self.name, "fp32_file": str(self.fp32),
                "int8_file": None if self.int8 is None else str(self.int8),
                "fp32_bytes": self.fp32_bytes, "int8_bytes": int8_bytes,
                "size_ratio": None if int8_bytes is None else self.fp32_bytes / int8_bytes,
                "int8_bytes_by_type": None if self.int8 is None else initializer_bytes(self.int8),
                "export_seconds": self.export_seconds, "quantize_seconds": self.quantize_seconds,
                "parity_images": self.parity_images,
                "parity_max_abs_diff": self.parity_max_abs_diff, "parity_tol": self.parity_tol,
                "parity_ok": self.parity_ok, "calibration_images": self.calibration_images,
                "int8_error": self.int8_error}


def _quantized(fp32: Path, int8: Path, calibration: Sequence[Path],
               resize: Resize) -> tuple[Path | None, float | None, str | None]:
    """``(int8 file, seconds, None)``, or ``(None, None, why)`` if quantize_int8 failed."""
    start = time.perf_counter()
    try:
        quantize_int8(fp32, int8, calibration, resize)
    # quantize_int8 runs ONNX Runtime's graph tools, which fail on graphs they do not handle
    # with assorted exception types (a TypeError from symbolic shape inference, say); one
    # model's int8 failing must not end an hour's run, and the report shows what failed.
    except Exception as exc:
        return None, None, f"quantize_int8 failed: {type(exc).__name__}: {exc}"
    return int8, time.perf_counter() - start, None


def export_variants(net: nn.Module, folder: Path, name: str, *, resize: Resize, opset: int,
                    parity_tol: float, parity_samples: Sequence[Sample],
                    calibration: Sequence[Path]) -> ExportedModel:
    """``<folder>/<name>.onnx`` and ``<name>_int8.onnx`` with the export stage's own functions
    and settings (opset, int8 calibrated on training photos); parity against ``parity_tol`` is
    recorded, not enforced (see the module's docstring). Raises the export stage's
    :class:`~fitlens.export.onnx.ExportError` for a file it could never ship."""
    fp32, int8 = folder / f"{name}.onnx", folder / f"{name}_int8.onnx"
    start = time.perf_counter()
    parity = export_onnx(net, fp32, resize=resize, opset=opset, parity_samples=parity_samples,
                         tolerance=math.inf)
    export_seconds = time.perf_counter() - start
    int8_path, quantize_seconds, error = _quantized(fp32, int8, calibration, resize)
    return ExportedModel(name=name, fp32=fp32, int8=int8_path, export_seconds=export_seconds,
                         quantize_seconds=quantize_seconds, parity_images=parity.images,
                         parity_max_abs_diff=parity.max_abs_diff, parity_tol=parity_tol,
                         calibration_images=len(calibration), int8_error=error)


def export_blazepose(pose: BlazePose, folder: Path, *, opset: int,
                     calibration: Sequence[Path]) -> ExportedModel:
    """BlazePose alone (256 px letterbox in, landmarks and presence out) as fp32 and int8 ONNX,
    for the latency of the pose graph's first half. Not a contract model (no class outputs), so
    no parity check: its numbers are speed and size only."""
    fp32, int8 = folder / f"{BLAZEPOSE}.onnx", folder / f"{BLAZEPOSE}_int8.onnx"
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with torch.no_grad():
        program = torch.onnx.export(
            pose.eval(), (torch.rand(2, 3, INPUT_SIZE, INPUT_SIZE),), dynamo=True,
            opset_version=opset, external_data=False, input_names=[INPUT_NAME],
            output_names=["landmarks", "presence"],
            dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    program.save(str(fp32))
    export_seconds = time.perf_counter() - start
    int8_path, quantize_seconds, error = _quantized(fp32, int8, calibration,
                                                    Resize(INPUT_SIZE, "letterbox"))
    return ExportedModel(name=BLAZEPOSE, fp32=fp32, int8=int8_path,
                         export_seconds=export_seconds, quantize_seconds=quantize_seconds,
                         parity_images=0, parity_max_abs_diff=None, parity_tol=None,
                         calibration_images=len(calibration), int8_error=error)


def initializer_bytes(path: Path) -> dict[str, int]:
    """Bytes of the file's stored tensors by element type: why int8 is not exactly 4x smaller
    (int32 biases, fp32 scales, per-channel zero points)."""
    model = onnx.load(str(path))
    out: dict[str, int] = {}
    for tensor in model.graph.initializer:
        name = onnx.TensorProto.DataType.Name(tensor.data_type).lower()
        count = 1
        for dim in tensor.dims:
            count *= dim
        nbytes = count * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        out[name] = out.get(name, 0) + nbytes
    return out
