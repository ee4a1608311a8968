"""The machine a benchmark ran on: CPU, the instruction sets that decide int8 and fp32 speed,
the clock, the threads used, library versions, load, and the fp32 peak these imply.

Numbers from different machines are not comparable, so every report starts with these.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import onnxruntime
import torch

#: Flags that decide fp32 throughput (FMA width) and whether int8 has a dot-product instruction.
#: avx512_vnni / avx_vnni / amx_int8 are what ONNX Runtime's int8 kernels need to beat fp32.
FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")
INT8_DOT_PRODUCT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
#: fp32 FLOP per cycle per core with AVX2 FMA: 2 FMA units x 8 lanes x 2 (multiply + add).
#: AVX-512 doubles this only on cores with two 512-bit FMA units; AMD Zen 4 splits 512-bit ops
#: into two 256-bit halves, so 32 stays its peak too. The issue defines the peak this way.
FP32_FLOP_PER_CYCLE = 32

CPUINFO = Path("/proc/cpuinfo")
CPUFREQ_MAX = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")


@dataclass(frozen=True)
class Machine:
    cpu_model: str
    #: CPUs this process may run on (the container's share, not the host's).
    cores: int
    #: torch intra-op threads and ONNX Runtime intra_op_num_threads in every measurement.
    threads: int
    clock_mhz: float
    clock_source: str
    flags: dict[str, bool]
    python: str
    torch: str
    onnxruntime: str
    #: 1/5/15-minute load averages when the benchmark started: other work competes for cores.
    load_at_start: tuple[float, float, float]

    @property
    def int8_dot_product(self) -> bool:
        return any(self.flags.get(f, False) for f in INT8_DOT_PRODUCT_FLAGS)

    @property
    def peak_gflops(self) -> float:
        """fp32 peak for the threads used: min(threads, cores) x clock x 32 FLOP/cycle."""
        return min(self.threads, self.cores) * self.clock_mhz / 1000 * FP32_FLOP_PER_CYCLE

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "int8_dot_product": self.int8_dot_product,
                "fp32_flop_per_cycle": FP32_FLOP_PER_CYCLE, "peak_gflops": self.peak_gflops}


def _cpuinfo() -> str:
    return CPUINFO.read_text(encoding="utf-8", errors="replace") if CPUINFO.is_file() else ""


def _lscpu_max_mhz() -> float | None:
    if shutil.which("lscpu") is None:
        return None
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"^CPU max MHz:\s*([\d.]+)", out, re.MULTILINE)
    return float(match.group(1)) if match else None


def read_clock(cpuinfo: str) -> tuple[float, str]:
    """The highest clock the OS reports, and where it came from.

    A VM often exposes neither cpufreq nor lscpu's max MHz; /proc/cpuinfo's ``cpu MHz`` is then
    the nominal clock, and boost can make measured GEMM beat the peak computed from it.
    """
    if CPUFREQ_MAX.is_file():
        return int(CPUFREQ_MAX.read_text().strip()) / 1000, str(CPUFREQ_MAX)
    lscpu = _lscpu_max_mhz()
    if lscpu:
        return lscpu, "lscpu 'CPU max MHz'"
    mhz = [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", cpuinfo, re.MULTILINE)]
    if mhz:
        return max(mhz), "/proc/cpuinfo 'cpu MHz' (current/nominal; no max MHz exposed)"
    return 0.0, "unknown (no cpufreq, lscpu or /proc/cpuinfo clock)"


def probe(threads: int) -> Machine:
    cpuinfo = _cpuinfo()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    flag_line = re.search(r"^flags\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    present = set(flag_line.group(1).split()) if flag_line else set()
    clock, source = read_clock(cpuinfo)
    return Machine(
        cpu_model=model.group(1).strip() if model else platform.processor() or "unknown",
        cores=len(os.sched_getaffinity(0)), threads=threads, clock_mhz=clock,
        clock_source=source, flags={f: f in present for f in FLAGS},
        python=platform.python_version(), torch=torch.__version__,
        onnxruntime=onnxruntime.__version__, load_at_start=os.getloadavg())
