"""One benchmark run: every section on the same machine, with the same threads, into one
results dict that :mod:`fitlens.bench.report` writes as ``report.json`` and ``report.md``.

Sections run one after another, never side by side, so none measures another's load. Quality
runs before latency: its first fold's exported files are the trained models whose latency and
size the "which model for the phone" table shows; a backbone without quality (no pretrained
weights here) is exported from a random init, which is as fast as a trained one.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate

from fitlens.bench import efficiency, latency, machine, throughput
from fitlens.bench.configs import compose_config
from fitlens.bench.exported import ExportedModel, export_variants
from fitlens.bench.probe import ProbeResult, linear_probe
from fitlens.bench.quality import BackboneQuality, QualitySettings, backbone_quality, trained_net
from fitlens.bench.timing import median
from fitlens.models.checkpoint import build_net
from fitlens.models.classifier import ExerciseNet

log = logging.getLogger(__name__)

BACKBONES = ("resnet18", "mobilenet_v2", "efficientnet_lite0")
#: The model the training-loop sections use: the offline phone backbone, random init (speed
#: does not depend on the weights).
THROUGHPUT_BACKBONE = "mobilenet_v2"


@dataclass(frozen=True)
class BenchSettings:
    out: Path
    conf_dir: Path
    data_root: Path
    other_dir: Path | None
    backbones: tuple[str, ...]
    threads: int
    quick: bool
    #: Overrides of the train config shared by every section (data root, ``--quick`` sizes).
    overrides: tuple[str, ...]
    throughput: throughput.ThroughputSettings
    latency: latency.LatencySettings
    quality: QualitySettings
    gemm_sizes: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "data_root": str(self.data_root),
                "other_dir": str(self.other_dir) if self.other_dir else None,
                "backbones": list(self.backbones), "threads": self.threads, "quick": self.quick,
                "overrides": list(self.overrides), "throughput": asdict(self.throughput),
                "latency": {"batches": list(self.latency.batches),
                            "warmup": self.latency.warmup,
                            "repeats": {str(b): self.latency.repeats_for(b)
                                        for b in self.latency.batches}},
                "quality": asdict(self.quality), "gemm_sizes": list(self.gemm_sizes)}


def make_settings(*, out: Path, conf_dir: Path, data_root: Path, other_dir: Path | None,
                  quick: bool, backbones: Sequence[str] | None = None, threads: int | None = None,
                  folds: int | None = None, epochs: int | None = None,
                  recipe: str | None = "linear_probe") -> BenchSettings:
    """Full run (~15-20 min on 2 cores) or ``quick`` (tiny images, one fold, few repeats: a
    smoke test of every section in well under a minute). Export settings (opset, parity
    tolerance, target precision) come from conf/export.yaml."""
    unknown = sorted(set(backbones or ()) - set(BACKBONES))
    if unknown:
        raise ValueError(f"--backbones {unknown}: expected some of {list(BACKBONES)}")
    export = compose_config(conf_dir, "export").export
    quality = QualitySettings(folds=folds or 5, run_folds=1 if quick else None,
                              recipe=recipe, epochs=1 if quick and epochs is None else epochs,
                              target_precision=float(export.target_precision),
                              opset=int(export.opset), parity_tol=float(export.parity_tol))
    common = dict(out=out, conf_dir=conf_dir, data_root=data_root, other_dir=other_dir,
                  threads=threads or len(os.sched_getaffinity(0)), quality=quality)
    if quick:
        return BenchSettings(
            **common, quick=True, backbones=tuple(backbones or ("mobilenet_v2",)),
            overrides=(f"data.root={data_root}", "data.image_size=32", "data.batch_size=8"),
            throughput=throughput.ThroughputSettings(epochs=2, repeats=1, loader_workers=(0, 2),
                                                     step_repeats=3, cost_epochs=3),
            latency=latency.LatencySettings(warmup=1, repeats={1: 5, 8: 3}),
            gemm_sizes=(128, 256))
    return BenchSettings(
        **common, quick=False, backbones=tuple(backbones or BACKBONES),
        overrides=(f"data.root={data_root}",), throughput=throughput.ThroughputSettings(),
        latency=latency.LatencySettings(), gemm_sizes=(256, 512, 1024, 2048))


def _probe(settings: BenchSettings, backbone: str, quality: BackboneQuality) -> ProbeResult:
    """The linear probe of ``backbone``'s pretrained features on the quality section's folds."""
    cfg = compose_config(settings.conf_dir, "train", [*settings.overrides, f"model={backbone}"])
    return linear_probe(instantiate(cfg.model.backbone),
                        [Path(f.split_csv) for f in quality.folds if f.split_csv],
                        list(cfg.data.classes), int(cfg.data.image_size))


@dataclass(frozen=True)
class SpeedModel:
    net: ExerciseNet
    exported: ExportedModel
    size: int
    weights: str


def _speed_model(settings: BenchSettings, backbone: str, quality: BackboneQuality | None,
                 workdir: Path) -> SpeedModel:
    """The net and files whose latency is measured: the first trained fold's, else a random
    init exported now (parity on the default split's test images, calibration on its train)."""
    cfg = compose_config(settings.conf_dir, "train",
                         [*settings.overrides, f"model={backbone}",
                          "model.backbone.pretrained=false"], workdir)
    first = quality.folds[0] if quality and quality.folds else None
    if first is not None and first.exported is not None and first.checkpoint is not None:
        net, spec = trained_net(cfg.model, first.checkpoint)
        return SpeedModel(net, first.exported, spec.size, f"trained (fold {first.fold})")
    net, spec = build_net(cfg.model)
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    exported = export_variants(
        net.eval(), workdir, backbone, size=spec.size, opset=settings.quality.opset,
        parity_tol=settings.quality.parity_tol, parity_samples=datamodule.samples["test"],
        calibration=[s.path for s in datamodule.samples["train"]])
    return SpeedModel(net, exported, spec.size, "random init")


def _export_costs(models: dict[str, ExportedModel],
                  qualities: dict[str, BackboneQuality]) -> list[dict[str, Any]]:
    """Median seconds per backbone over every export of it in this run (one per fold)."""
    rows = []
    for backbone, model in models.items():
        exports = [f.exported for f in qualities[backbone].folds if f.exported] \
            if backbone in qualities else []
        exports = exports or [model]
        rows.append({"backbone": backbone, "exports": len(exports),
                     "export_seconds": median([e.export_seconds for e in exports]),
                     "quantize_seconds": median([e.quantize_seconds for e in exports])})
    return rows


def run(settings: BenchSettings, command: str = "") -> dict[str, Any]:
    """Every section; returns the results dict (JSON-ready) that the report renders."""
    started = time.perf_counter()
    torch.set_num_threads(settings.threads)
    host = machine.probe(settings.threads)
    results: dict[str, Any] = {
        "command": command, "quick": settings.quick,
        "started_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "settings": settings.to_dict()}
    work = settings.out / "work"

    log.info("GEMM sweep %s", settings.gemm_sizes)
    gemm = efficiency.gemm_sweep(settings.gemm_sizes, settings.threads)
    best_gemm = max(g for by_size in gemm.values() for g in by_size.values())

    speed_overrides = [*settings.overrides, f"model={THROUGHPUT_BACKBONE}",
                       "model.backbone.pretrained=false"]
    log.info("training throughput: Lightning vs bare loop (%s)", THROUGHPUT_BACKBONE)
    overhead = throughput.framework_overhead(settings.conf_dir, speed_overrides,
                                             work / "throughput", settings.throughput)
    log.info("framework cost per epoch: the same loops on in-memory batches")
    cost = throughput.framework_cost(settings.conf_dir, speed_overrides, work / "cost",
                                     settings.throughput)
    log.info("input pipeline: loader alone vs model step")
    pipeline = throughput.input_pipeline(settings.conf_dir, speed_overrides, work / "loader",
                                         settings.throughput)

    qualities: dict[str, BackboneQuality] = {}
    probes: dict[str, ProbeResult] = {}
    for backbone in settings.backbones:
        qualities[backbone] = backbone_quality(
            settings.conf_dir, settings.overrides, backbone, work / "quality",
            settings.other_dir, settings.quality)
        if qualities[backbone].skipped:
            log.warning("quality: %s skipped: %s", backbone, qualities[backbone].skipped)
        elif qualities[backbone].folds:
            log.info("linear probe: %s", backbone)
            probes[backbone] = _probe(settings, backbone, qualities[backbone])

    rows: list[latency.LatencyRow] = []
    flops: dict[str, int] = {}
    speed: dict[str, SpeedModel] = {}
    for backbone in settings.backbones:
        log.info("latency: %s", backbone)
        model = speed[backbone] = _speed_model(settings, backbone, qualities.get(backbone),
                                               work / "latency" / backbone)
        rows += latency.measure(backbone, model.net, model.exported.fp32, model.exported.int8,
                                size=model.size, threads=settings.threads,
                                settings=settings.latency)
        flops[backbone] = efficiency.model_flops(model.net, model.size)
    models = {b: m.exported for b, m in speed.items()}

    results.update({
        "machine": {**host.to_dict(), "load_at_end": os.getloadavg()},
        "gemm_gflops": {lib: {str(n): g for n, g in by_size.items()}
                        for lib, by_size in gemm.items()},
        "throughput": overhead.to_dict(),
        "framework_cost": cost.to_dict(),
        "input_pipeline": pipeline.to_dict(),
        "image_size": next(iter(speed.values())).size,
        "latency": [r.to_dict() for r in rows],
        "efficiency": {
            "gflop_per_image": {b: f / 1e9 for b, f in flops.items()},
            "peak_gflops": host.peak_gflops, "best_gemm_gflops": best_gemm,
            "achieved": [a.to_dict() for a in efficiency.achieved(
                rows, flops, host.peak_gflops, best_gemm)]},
        "models": [{**models[b].to_dict(), "weights": speed[b].weights,
                    "quality": qualities[b].to_dict(),
                    "probe": probes[b].to_dict() if b in probes else None}
                   for b in settings.backbones],
        "export_cost": _export_costs(models, qualities),
        "seconds_total": time.perf_counter() - started,
    })
    return results
