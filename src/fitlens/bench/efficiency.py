"""How much of the CPU's fp32 peak inference reaches: FLOPs counted, divided by measured time.

Two yardsticks: the theoretical peak (:attr:`fitlens.bench.machine.Machine.peak_gflops`) and the
best matrix multiply measured in the same run, which shows what this machine, with this load
and these threads, can actually sustain. The GEMM runs in both libraries the models run on:
``torch.mm`` (MKL/oneDNN) and an ONNX Runtime MatMul (MLAS); their kernels differ per CPU, and
the yardstick is the better of the two.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import onnx
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fitlens.bench.latency import LatencyRow, ort_session
from fitlens.bench.timing import time_calls

#: int8 kernels do integer work; their speed is not a share of the fp32 peak.
FP32_RUNTIMES = ("torch eager", "ORT fp32")


def model_flops(net: nn.Module, size: int) -> int:
    """FLOPs of one image through ``net``: convolutions and matrix multiplies as PyTorch
    dispatches them, a multiply-add counting 2; element-wise work (BatchNorm, ReLU) is left out,
    as in the published GFLOP figures of these backbones."""
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        net.eval()(torch.zeros(1, 3, size, size))
    return int(counter.get_total_flops())


def _matmul_model(n: int) -> bytes:
    spec = [onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [n, n])
            for name in ("a", "b", "c")]
    graph = onnx.helper.make_graph([onnx.helper.make_node("MatMul", ["a", "b"], ["c"])],
                                   "gemm", spec[:2], spec[2:])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model.SerializeToString()


def gemm_sweep(sizes: Sequence[int], threads: int, repeats: int = 5) -> dict[str, dict[int, float]]:
    """GFLOP/s of square fp32 matrix multiplies per library and size, best of ``repeats``."""
    torch.set_num_threads(threads)
    out: dict[str, dict[int, float]] = {"torch.mm": {}, "ORT MatMul": {}}
    for n in sizes:
        a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
        session = ort_session(_matmul_model(n), threads)
        feed = {"a": a.numpy(), "b": b.numpy()}
        calls = {"torch.mm": partial(torch.mm, a, b, out=c),
                 "ORT MatMul": partial(session.run, None, feed)}
        for library, call in calls.items():
            timing = time_calls(call, warmup=2, repeats=repeats)
            out[library][n] = 2 * n**3 / timing.best / 1e9
    return out


@dataclass(frozen=True)
class Achieved:
    model: str
    runtime: str
    batch: int
    gflop_per_image: float
    gflops: float
    of_peak: float
    of_gemm: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def achieved(rows: Sequence[LatencyRow], flops: dict[str, int], peak_gflops: float,
             gemm_gflops: float) -> list[Achieved]:
    """GFLOP/s of every fp32 latency row (at its p50) against both yardsticks."""
    out = []
    for row in rows:
        if row.runtime not in FP32_RUNTIMES or row.model not in flops:
            continue
        gflops = flops[row.model] * row.batch / (row.p50_ms / 1000) / 1e9
        out.append(Achieved(row.model, row.runtime, row.batch, flops[row.model] / 1e9,
                            gflops, gflops / peak_gflops if peak_gflops else 0.0,
                            gflops / gemm_gflops))
    return out
