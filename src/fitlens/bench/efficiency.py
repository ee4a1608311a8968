"""How much of the CPU's fp32 peak inference reaches: FLOPs counted, divided by measured time.

Two yardsticks: the theoretical peak (:attr:`fitlens.bench.machine.Machine.peak_gflops`) and the
best matrix multiply measured in the same run, which shows what this machine, with this load
and these threads, can actually sustain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fitlens.bench.latency import LatencyRow
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


def gemm_sweep(sizes: Sequence[int], threads: int, repeats: int = 5) -> dict[int, float]:
    """GFLOP/s of ``torch.mm`` on square fp32 matrices, best of ``repeats`` per size."""
    torch.set_num_threads(threads)
    out = {}
    for n in sizes:
        a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
        timing = time_calls(lambda a=a, b=b, c=c: torch.mm(a, b, out=c), warmup=2,
                            repeats=repeats)
        out[n] = 2 * n**3 / timing.best / 1e9
    return out


@dataclass(frozen=True)
class Achieved:
    backbone: str
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
        if row.runtime not in FP32_RUNTIMES or row.backbone not in flops:
            continue
        gflops = flops[row.backbone] * row.batch / (row.p50_ms / 1000) / 1e9
        out.append(Achieved(row.backbone, row.runtime, row.batch, flops[row.backbone] / 1e9,
                            gflops, gflops / peak_gflops if peak_gflops else 0.0,
                            gflops / gemm_gflops))
    return out
