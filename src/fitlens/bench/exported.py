"""Export one trained (or random) network the way the export stage does, timed: the fp32 file
(export + onnx.checker + parity on real images) and its static int8 (QDQ) copy.

The files feed the latency and quality sections; the seconds are the "export cost" section.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from torch import nn

from fitlens.data.splits import Sample
from fitlens.export.onnx import export_onnx
from fitlens.export.quantize import quantize_int8


@dataclass(frozen=True)
class ExportedModel:
    backbone: str
    fp32: Path
    int8: Path
    #: export_onnx: torch.onnx export, onnx.checker, load from bytes, parity vs PyTorch.
    export_seconds: float
    #: quantize_int8: pre-processing, MinMax calibration, QDQ rewrite, checker.
    quantize_seconds: float
    parity_images: int
    parity_max_abs_diff: float

    @property
    def fp32_bytes(self) -> int:
        return self.fp32.stat().st_size

    @property
    def int8_bytes(self) -> int:
        return self.int8.stat().st_size

    def to_dict(self) -> dict[str, Any]:
        return {"backbone": self.backbone, "fp32_file": str(self.fp32),
                "int8_file": str(self.int8), "fp32_bytes": self.fp32_bytes,
                "int8_bytes": self.int8_bytes, "size_ratio": self.fp32_bytes / self.int8_bytes,
                "int8_bytes_by_type": initializer_bytes(self.int8),
                "export_seconds": self.export_seconds, "quantize_seconds": self.quantize_seconds,
                "parity_images": self.parity_images,
                "parity_max_abs_diff": self.parity_max_abs_diff}


def export_variants(net: nn.Module, folder: Path, backbone: str, *, size: int, opset: int,
                    parity_tol: float, parity_samples: Sequence[Sample],
                    calibration: Sequence[Path]) -> ExportedModel:
    """``<folder>/<backbone>.onnx`` and ``<backbone>_int8.onnx`` with the export stage's own
    functions and settings (opset, parity tolerance, int8 calibration on training images)."""
    fp32, int8 = folder / f"{backbone}.onnx", folder / f"{backbone}_int8.onnx"
    start = time.perf_counter()
    parity = export_onnx(net, fp32, size=size, opset=opset, parity_samples=parity_samples,
                         tolerance=parity_tol)
    exported = time.perf_counter()
    quantize_int8(fp32, int8, calibration, size)
    quantized = time.perf_counter()
    return ExportedModel(backbone=backbone, fp32=fp32, int8=int8,
                         export_seconds=exported - start, quantize_seconds=quantized - exported,
                         parity_images=parity.images, parity_max_abs_diff=parity.max_abs_diff)


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
