"""One benchmark run: every section on the same machine, with the same threads, into one
results dict that :mod:`fitlens.bench.report` writes as ``report.json`` and ``report.md``.

Sections run one after another, never side by side, so none measures another's load. Quality
(each recipe's cross-validation job) runs first, then int8 (the jobs' fold models exported and
quantised), then latency: the first exported fold's files are the trained models whose latency
and size the "which model for the phone" table shows; a recipe without quality (no pretrained
weights here) is exported from a random init, which is as fast as a trained one.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn

from fitlens.bench import efficiency, latency, machine, throughput
from fitlens.bench.configs import compose_config
from fitlens.bench.exported import BLAZEPOSE, ExportedModel, export_blazepose, export_variants
from fitlens.bench.int8 import (
    Int8Settings,
    RecipeInt8,
    calibration_photos,
    fold_int8,
    trained_net,
)
from fitlens.bench.probe import ProbeResult, linear_probe
from fitlens.bench.quality import QualitySettings, RecipeQuality, recipe_quality
from fitlens.bench.recipes import Recipe, recipes
from fitlens.bench.timing import median
from fitlens.data.datamodule import spec_of
from fitlens.data.splits import find_images
from fitlens.export.pipeline import PARITY_PHOTOS
from fitlens.models.checkpoint import build_net
from fitlens.models.pose import INPUT_SIZE as POSE_INPUT_SIZE

log = logging.getLogger(__name__)

BACKBONES = ("resnet18", "mobilenet_v2", "efficientnet_lite0")
#: Pose rows by default: the experiment's own backbone, then the smaller one.
POSE_BACKBONES = ("efficientnet_lite0", "mobilenet_v2")
#: The model the training-loop sections use: the offline phone backbone, random init (speed
#: does not depend on the weights).
THROUGHPUT_BACKBONE = "mobilenet_v2"
#: The training-loop sections time the loop, not the data: without the reject class's photos
#: an epoch does the same work per step in half the time.
THROUGHPUT_DATA = ("data.reject_root=null",)
#: int8 calibration photos per fold, spread over its ~560 training photos: the export stage
#: calibrates on all of them, which for 10-20 fold models would cost minutes of the budget.
CALIBRATION_PHOTOS = 128
#: Photos BlazePose alone (the pose graph's first half) is calibrated on: its int8 file is for
#: latency and size only.
BLAZEPOSE_CALIBRATION = 32


@dataclass(frozen=True)
class BenchSettings:
    out: Path
    conf_dir: Path
    data_root: Path
    other_dir: Path | None
    recipes: tuple[Recipe, ...]
    threads: int
    quick: bool
    #: Overrides of the train config shared by every section (data, ``--quick`` batch size).
    overrides: tuple[str, ...]
    #: The training-loop sections' further overrides (data and, ``--quick``, image size).
    throughput_overrides: tuple[str, ...]
    throughput: throughput.ThroughputSettings
    latency: latency.LatencySettings
    quality: QualitySettings
    int8: Int8Settings
    gemm_sizes: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "data_root": str(self.data_root),
                "other_dir": str(self.other_dir) if self.other_dir else None,
                "recipes": [{"name": r.name, "command": r.command,
                             "overrides": r.train_overrides(cross_validate=True)}
                            for r in self.recipes],
                "threads": self.threads, "quick": self.quick,
                "overrides": list(self.overrides),
                "throughput_overrides": list(self.throughput_overrides),
                "throughput": asdict(self.throughput),
                "latency": {"batches": list(self.latency.batches),
                            "warmup": self.latency.warmup,
                            "repeats": {str(b): self.latency.repeats_for(b)
                                        for b in self.latency.batches}},
                "quality": asdict(self.quality), "int8": asdict(self.int8),
                "gemm_sizes": list(self.gemm_sizes)}


def make_settings(*, out: Path, conf_dir: Path, data_root: Path, other_dir: Path | None,
                  quick: bool, backbones: Sequence[str] | None = None,
                  pose_backbones: Sequence[str] | None = None, threads: int | None = None,
                  folds: int | None = None, epochs: int | None = None,
                  recipe: str | None = "linear_probe",
                  pose_int8_folds: int | None = None) -> BenchSettings:
    """Full run or ``quick`` (tiny images, 2 folds, few repeats: a smoke test of every section
    in about two minutes). Export settings (opset, parity tolerance) come from conf/export.yaml.

    ``backbones``: the CNN rows, ``pose_backbones``: the pose rows (None: the defaults; empty:
    none). ``pose_int8_folds``: folds of a pose row exported and quantised (None: all).
    """
    unknown = sorted((set(backbones or ()) | set(pose_backbones or ())) - set(BACKBONES))
    if unknown:
        raise ValueError(f"{unknown}: expected backbones among {list(BACKBONES)}")
    export = compose_config(conf_dir, "export").export
    reject = f"data.reject_root={other_dir}" if other_dir else "data.reject_root=null"
    data = (f"data.root={data_root}", reject)
    common = dict(out=out, conf_dir=conf_dir, data_root=data_root, other_dir=other_dir,
                  threads=threads or len(os.sched_getaffinity(0)))
    if quick:
        chosen = recipes(("mobilenet_v2",) if backbones is None else backbones,
                         ("mobilenet_v2",) if pose_backbones is None else pose_backbones,
                         recipe, quick=True)
        return BenchSettings(
            **common, quick=True, recipes=chosen, overrides=(*data, "data.batch_size=8"),
            throughput_overrides=(*THROUGHPUT_DATA, "data.image_size=32"),
            throughput=throughput.ThroughputSettings(epochs=2, repeats=1, loader_workers=(0, 2),
                                                     step_repeats=3, cost_epochs=3),
            latency=latency.LatencySettings(warmup=1, repeats={1: 5, 8: 3}),
            quality=QualitySettings(folds=folds or 2, epochs=epochs or 1),
            int8=Int8Settings(opset=int(export.opset), parity_tol=float(export.parity_tol),
                              folds=1, pose_folds=1, calibration=16),
            gemm_sizes=(128, 256))
    chosen = recipes(BACKBONES if backbones is None else backbones,
                     POSE_BACKBONES if pose_backbones is None else pose_backbones, recipe)
    return BenchSettings(
        **common, quick=False, recipes=chosen, overrides=data,
        throughput_overrides=THROUGHPUT_DATA, throughput=throughput.ThroughputSettings(),
        latency=latency.LatencySettings(), quality=QualitySettings(folds=folds or 5,
                                                                   epochs=epochs),
        int8=Int8Settings(opset=int(export.opset), parity_tol=float(export.parity_tol),
                          pose_folds=pose_int8_folds, calibration=CALIBRATION_PHOTOS),
        gemm_sizes=(256, 512, 1024, 2048))


class Clock:
    """Wall and CPU seconds of each section: on a shared machine the two differ by the time
    other processes took, which says how far to trust the section's timings."""

    def __init__(self) -> None:
        self.sections: dict[str, dict[str, float]] = {}

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.sections[name] = {"wall_s": time.perf_counter() - wall,
                                   "cpu_s": time.process_time() - cpu}


def _probe(quality: RecipeQuality) -> ProbeResult:
    """The linear probe of the CNN's pretrained features on the job's folds."""
    cfg = quality.cfg
    spec = spec_of(cfg.data)
    return linear_probe(instantiate(cfg.model.backbone), quality.split_csvs(),
                        list(spec.classes), spec.size, spec.reject_class)


@dataclass(frozen=True)
class SpeedModel:
    net: nn.Module
    exported: ExportedModel
    size: int
    #: How a photo becomes the input (the contract's resize mode).
    resize: str
    weights: str


def _speed_model(settings: BenchSettings, recipe: Recipe, quality: RecipeQuality | None,
                 int8: RecipeInt8 | None, workdir: Path) -> SpeedModel:
    """The net and files whose latency is measured: the first exported fold's, else a random
    init exported now (parity on the default split's test photos, calibration on its train)."""
    first = next((f for f in int8.folds if f.exported), None) if int8 else None
    if quality is not None and first is not None:
        spec = spec_of(quality.cfg.data)
        net = trained_net(quality.cfg.model, spec, quality.fold_checkpoint(first.fold))
        return SpeedModel(net, first.exported, spec.size, spec.resize_mode,
                          f"trained (fold {first.fold})")
    cfg = compose_config(settings.conf_dir, "train",
                         [*settings.overrides, *recipe.train_overrides(cross_validate=False),
                          "model.backbone.pretrained=false"], workdir)
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    net, spec = build_net(cfg.model, datamodule.spec)
    exported = export_variants(
        net.eval(), workdir, recipe.name, resize=spec.resize, opset=settings.int8.opset,
        parity_tol=settings.int8.parity_tol,
        parity_samples=datamodule.samples["test"][:PARITY_PHOTOS],
        calibration=calibration_photos(datamodule.samples["train"], settings.int8.calibration))
    return SpeedModel(net, exported, spec.size, spec.resize_mode, "random init")


def _blazepose_model(settings: BenchSettings, recipe: Recipe, workdir: Path) -> SpeedModel:
    """BlazePose alone (the pose graph's first half), calibrated on a spread of the photos."""
    cfg = compose_config(settings.conf_dir, "train",
                         [*settings.overrides, *recipe.train_overrides(cross_validate=False)])
    pose = instantiate(cfg.model.pose)
    photos = [p for paths in find_images(settings.data_root, cfg.data.classes).values()
              for p in paths]
    step = max(1, len(photos) // BLAZEPOSE_CALIBRATION)
    exported = export_blazepose(pose, workdir, opset=settings.int8.opset,
                                calibration=photos[::step][:BLAZEPOSE_CALIBRATION])
    return SpeedModel(pose, exported, POSE_INPUT_SIZE, "letterbox", "pose_landmark_full.tflite")


def _export_costs(speed: dict[str, SpeedModel],
                  int8: dict[str, RecipeInt8]) -> list[dict[str, Any]]:
    """Median seconds per model over every export of it in this run (one per exported fold)."""
    rows = []
    for name, model in speed.items():
        exports = [f.exported for f in int8[name].folds if f.exported] if name in int8 else []
        exports = exports or [model.exported]
        quantized = [e.quantize_seconds for e in exports if e.quantize_seconds is not None]
        parity = [e.parity_max_abs_diff for e in exports if e.parity_max_abs_diff is not None]
        rows.append({"model": name, "exports": len(exports),
                     "export_seconds": median([e.export_seconds for e in exports]),
                     "quantize_seconds": median(quantized) if quantized else None,
                     "calibration_images": exports[0].calibration_images,
                     "parity_max_abs_diff": max(parity, default=None),
                     "parity_tol": exports[0].parity_tol,
                     "int8_error": next((e.int8_error for e in exports if e.int8_error), None)})
    return rows


def run(settings: BenchSettings, command: str = "") -> dict[str, Any]:
    """Every section; returns the results dict (JSON-ready) that the report renders."""
    started = time.perf_counter()
    torch.set_num_threads(settings.threads)
    host = machine.probe(settings.threads)
    clock = Clock()
    results: dict[str, Any] = {
        "command": command, "quick": settings.quick,
        "started_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "settings": settings.to_dict()}
    work = settings.out / "work"

    log.info("GEMM sweep %s", settings.gemm_sizes)
    with clock.section("GEMM sweep"):
        gemm = efficiency.gemm_sweep(settings.gemm_sizes, settings.threads)
    best_gemm = max(g for by_size in gemm.values() for g in by_size.values())

    speed_overrides = [*settings.overrides, *settings.throughput_overrides,
                       f"model={THROUGHPUT_BACKBONE}", "model.backbone.pretrained=false"]
    log.info("training throughput: Lightning vs bare loop (%s)", THROUGHPUT_BACKBONE)
    with clock.section("1. framework overhead"):
        overhead = throughput.framework_overhead(settings.conf_dir, speed_overrides,
                                                 work / "throughput", settings.throughput)
    log.info("framework cost per epoch: the same loops on in-memory batches")
    with clock.section("1. framework fixed cost"):
        cost = throughput.framework_cost(settings.conf_dir, speed_overrides, work / "cost",
                                         settings.throughput)
    log.info("input pipeline: loader alone vs model step")
    with clock.section("2. input pipeline"):
        pipeline = throughput.input_pipeline(settings.conf_dir, speed_overrides,
                                             work / "loader", settings.throughput)

    qualities: dict[str, RecipeQuality] = {}
    probes: dict[str, ProbeResult] = {}
    for recipe in settings.recipes:
        with clock.section(f"5. quality: {recipe.name}"):
            quality = qualities[recipe.name] = recipe_quality(
                settings.conf_dir, settings.overrides, recipe, work / "quality",
                settings.quality)
        if quality.skipped:
            log.warning("quality: %s skipped: %s", recipe.name, quality.skipped)
        elif not recipe.pose:
            log.info("linear probe: %s", recipe.name)
            with clock.section(f"5. probe: {recipe.name}"):
                probes[recipe.name] = _probe(quality)

    int8: dict[str, RecipeInt8] = {}
    for name, quality in qualities.items():
        if quality.skipped:
            continue
        folds = settings.int8.fold_ids(quality)
        log.info("int8 out of fold: %s, fold(s) %s", name, list(folds))
        with clock.section(f"6. int8: {name}"):
            int8[name] = RecipeInt8(name, tuple(fold_int8(quality, f, settings.int8)
                                                for f in folds))

    speed: dict[str, SpeedModel] = {}
    for recipe in settings.recipes:
        with clock.section(f"3. export for latency: {recipe.name}"):
            speed[recipe.name] = _speed_model(settings, recipe, qualities.get(recipe.name),
                                              int8.get(recipe.name),
                                              work / "latency" / recipe.name)
    pose_recipe = next((r for r in settings.recipes if r.pose), None)
    if pose_recipe is not None:
        with clock.section(f"3. export for latency: {BLAZEPOSE}"):
            speed[BLAZEPOSE] = _blazepose_model(settings, pose_recipe,
                                                work / "latency" / BLAZEPOSE)
    rows: list[latency.LatencyRow] = []
    flops: dict[str, int] = {}
    for name, model in speed.items():
        log.info("latency: %s", name)
        with clock.section(f"3. latency: {name}"):
            rows += latency.measure(name, model.net, model.exported.fp32, model.exported.int8,
                                    size=model.size, threads=settings.threads,
                                    settings=settings.latency)
            flops[name] = efficiency.model_flops(model.net, model.size)
    kinds = {r.name: "pose" if r.pose else "cnn" for r in settings.recipes}
    kinds.update({BLAZEPOSE: "pose part"} if pose_recipe else {})

    results.update({
        "machine": {**host.to_dict(), "load_at_end": os.getloadavg()},
        "gemm_gflops": {lib: {str(n): g for n, g in by_size.items()}
                        for lib, by_size in gemm.items()},
        "throughput": overhead.to_dict(),
        "framework_cost": cost.to_dict(),
        "input_pipeline": pipeline.to_dict(),
        "latency": [r.to_dict() for r in rows],
        "efficiency": {
            "gflop_per_image": {b: f / 1e9 for b, f in flops.items()},
            "peak_gflops": host.peak_gflops, "best_gemm_gflops": best_gemm,
            "achieved": [a.to_dict() for a in efficiency.achieved(
                rows, flops, host.peak_gflops, best_gemm)]},
        "models": [{**model.exported.to_dict(), "kind": kinds[name],
                    "image_size": model.size, "input": f"{model.size} px {model.resize}",
                    "weights": model.weights,
                    "quality": qualities[name].to_dict() if name in qualities else None,
                    "probe": probes[name].to_dict() if name in probes else None,
                    "int8": int8[name].to_dict() if name in int8 else None}
                   for name, model in speed.items()],
        "export_cost": _export_costs(speed, int8),
        "sections": clock.sections,
        "seconds_total": time.perf_counter() - started,
    })
    return results
