"""Inference latency of one network in torch eager, ONNX Runtime fp32 and ONNX Runtime int8.

All three get the same random input (the model's input shape), the same thread count
(``torch.set_num_threads`` and ORT ``intra_op_num_threads``, one inter-op thread) and the same
warm-up; p50/p95 are over single timed calls. ONNX Runtime sessions are built here rather than
with ``fitlens.export.onnx.session_for`` because that one does not take a thread count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from fitlens.bench.timing import time_calls
from fitlens.export.metadata import INPUT_NAME

RUNTIMES = ("torch eager", "ORT fp32", "ORT int8")


@dataclass(frozen=True)
class LatencySettings:
    batches: tuple[int, ...] = (1, 8)
    warmup: int = 5
    #: Timed calls per (runtime, batch); more at batch 1, where single calls are short.
    repeats: dict[int, int] | None = None

    def repeats_for(self, batch: int) -> int:
        return (self.repeats or {}).get(batch, 20 if batch == 1 else 10)


@dataclass(frozen=True)
class LatencyRow:
    model: str
    runtime: str
    batch: int
    p50_ms: float
    p95_ms: float
    runs: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ort_session(model: Path | bytes, threads: int) -> ort.InferenceSession:
    """A CPU session on ``threads`` intra-op threads; ``model`` is a file or serialized bytes."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _callers(net: nn.Module, sessions: dict[str, ort.InferenceSession],
             x: np.ndarray) -> dict[str, Callable[[], object]]:
    """One zero-argument call per runtime, all on the same input ``x``."""
    tensor = torch.from_numpy(x)
    feed = {INPUT_NAME: x}

    def eager() -> object:
        with torch.inference_mode():
            return net(tensor)

    calls: dict[str, Callable[[], object]] = {"torch eager": eager}
    for runtime, session in sessions.items():
        calls[runtime] = partial(session.run, None, feed)
    return calls


def measure(model: str, net: nn.Module, fp32: Path, int8: Path | None, *, size: int,
            threads: int, settings: LatencySettings) -> list[LatencyRow]:
    """One row per runtime and batch size (no ORT int8 rows without an int8 file)."""
    torch.set_num_threads(threads)
    net = net.eval()
    sessions = {"ORT fp32": ort_session(fp32, threads)}
    if int8 is not None:
        sessions["ORT int8"] = ort_session(int8, threads)
    rng = np.random.default_rng(0)
    rows = []
    for batch in settings.batches:
        x = rng.random((batch, 3, size, size), dtype=np.float32)
        for runtime, call in _callers(net, sessions, x).items():
            timing = time_calls(call, warmup=settings.warmup,
                                repeats=settings.repeats_for(batch))
            rows.append(LatencyRow(model, runtime, batch, timing.p50 * 1000,
                                   timing.p95 * 1000, len(timing.seconds)))
    return rows
