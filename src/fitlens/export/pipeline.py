"""The export stage: a trained bundle in, the app's model assets out, all or nothing.

Order matters: every check (onnx.checker, parity on the test split, the int8 accuracy gate, the
threshold) runs on files in a staging folder inside ``out_dir``; only when all pass are they
renamed into place, metadata last. A failed export leaves the previous assets untouched.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
from omegaconf import DictConfig

from fitlens.contract import InputSpec
from fitlens.data.images import ImageLoadError
from fitlens.data.splits import SPLITS, Sample, read_split_csv
from fitlens.export.fixtures import expected_probabilities
from fitlens.export.metadata import build_metadata, sha256_file, write_metadata
from fitlens.export.onnx import (
    ExportError,
    ParityResult,
    export_onnx,
    file_opset,
    image_probabilities,
    session_for,
)
from fitlens.export.quantize import QuantizeReport, Scores, check_drop, quantize_int8, scores
from fitlens.export.threshold import (
    OtherAcceptance,
    ThresholdChoice,
    ThresholdError,
    choose_threshold,
    other_acceptance,
)
from fitlens.models.checkpoint import CheckpointError, load_bundle
from fitlens.models.classifier import ExerciseNet
from fitlens.tracking.registry import RegistryError, record_export, resolve_model
from fitlens.tracking.store import TrackingStoreError

log = logging.getLogger(__name__)

#: Failures whose message says what to fix: the entry script prints them without a traceback.
EXPECTED_ERRORS: tuple[type[Exception], ...] = (ExportError, ThresholdError, CheckpointError,
                                                RegistryError, TrackingStoreError,
                                                ImageLoadError, FileNotFoundError, ValueError)

META_FILE = "model_meta.json"
EXPECTED_FILE = "expected_probabilities.json"
QUANTIZE_CHOICES = (None, "int8")


@dataclass(frozen=True)
class ExportSettings:
    """``export.*`` from conf/export.yaml (paths resolved)."""

    out_dir: Path
    fixtures_dir: Path
    other_dir: Path | None = None
    data_root: Path | None = None
    opset: int = 18
    parity_tol: float = 1e-4
    quantize: str | None = None
    max_drop: float = 0.01
    target_precision: float = 0.95

    def __post_init__(self) -> None:
        if self.quantize not in QUANTIZE_CHOICES:
            raise ValueError(f"export.quantize={self.quantize!r}: expected null or 'int8'")
        if not 0 <= self.max_drop < 1:
            raise ValueError(f"export.max_drop={self.max_drop}: expected a fraction in [0, 1) "
                             "(0.01 = one point of accuracy / macro-F1)")
        if not 0 < self.parity_tol < 1:
            raise ValueError(f"export.parity_tol={self.parity_tol}: expected a small positive "
                             "probability difference such as 1e-4")


@dataclass(frozen=True)
class ModelSource:
    """Where the exported weights came from, as written into the metadata."""

    registered_model: str | None = None
    version: str | None = None
    run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ExportReport:
    model_path: Path
    meta_path: Path
    expected_path: Path
    sha256: str
    size_bytes: int
    opset: int
    parity: ParityResult
    test: Scores
    test_images: int
    threshold: ThresholdChoice
    other: OtherAcceptance
    int8: QuantizeReport | None
    seconds: dict[str, float]
    source: ModelSource

    @property
    def files(self) -> list[Path]:
        extra = [self.int8.path] if self.int8 else []
        return [self.model_path, *extra, self.expected_path, self.meta_path]


def settings_from(cfg: DictConfig) -> ExportSettings:
    e = cfg.export

    def path(value: str | None) -> Path | None:
        return None if value is None else Path(value)

    return ExportSettings(
        out_dir=Path(e.out_dir), fixtures_dir=Path(e.fixtures_dir), other_dir=path(e.other_dir),
        data_root=path(e.data_root), opset=int(e.opset), parity_tol=float(e.parity_tol),
        quantize=e.quantize, max_drop=float(e.max_drop),
        target_precision=float(e.target_precision))


def run(cfg: DictConfig) -> ExportReport:
    """The stage behind ``scripts/export.py``: resolve the version, export it, record the export
    on the version's run."""
    e = cfg.export
    settings = settings_from(cfg)
    pinned = e.version is not None or e.run_id is not None
    resolved = resolve_model(
        cfg.logger.tracking_uri, cfg.logger.registered_model,
        alias=None if pinned else e.alias, version=e.version, run_id=e.run_id,
        dst=Path(cfg.paths.output_dir) / "resolved")
    split = Path(e.split_file) if e.split_file else resolved.split_csv
    source = ModelSource(registered_model=resolved.name, version=resolved.version,
                         run_id=resolved.run_id, metrics=resolved.metrics)
    report = export_bundle(resolved.bundle_dir, split, settings, source)
    record_export(cfg.logger.tracking_uri, resolved, report.files, report.sha256)
    return report


def load_split(split_csv: Path | None, classes: Sequence[str],
               data_root: Path | None) -> dict[str, list[Sample]]:
    """The training run's split, with files moved since training found under ``data_root``.

    The CSV records absolute paths on the machine that trained; on another checkout the same
    photo is at ``<data_root>/<class>/<file name>``.
    """
    if split_csv is None:
        raise FileNotFoundError(
            "the model's run has no split.csv, so there are no test images for the parity check "
            "and no validation images for the threshold; pass export.split_file=<run>/split.csv")
    samples, split_of = read_split_csv(split_csv, classes)
    by_split: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    missing = []
    for s in samples:
        path = s.path
        if not path.is_file() and data_root is not None:
            path = data_root / s.class_name / s.path.name
        if not path.is_file():
            missing.append(str(s.path))
            continue
        by_split[split_of[s.group]].append(Sample(path, s.label, s.class_name, s.group))
    if missing:
        raise FileNotFoundError(
            f"{split_csv}: {len(missing)} listed image(s) not found (e.g. {missing[0]}), also not "
            f"under export.data_root={data_root}/<class>/; expected the photos the model was "
            "trained and tested on")
    for name in ("val", "test"):
        if not by_split[name]:
            raise ValueError(f"{split_csv}: the {name} split is empty; the export needs test "
                             "images (parity, scores) and validation images (threshold)")
    return by_split


def _probs(session: ort.InferenceSession, samples: Sequence[Sample],
           size: int) -> tuple[np.ndarray, np.ndarray]:
    probs, _ = image_probabilities(session, [s.path for s in samples], size)
    return probs, np.array([s.label for s in samples])


def _threshold(session: ort.InferenceSession, val: Sequence[Sample], size: int, target: float,
               name: str) -> ThresholdChoice:
    return choose_threshold(*_probs(session, val, size), target,
                            f"{name} on the validation split")


def _metrics(source: ModelSource, test: Scores, choice: ThresholdChoice,
             other: OtherAcceptance) -> dict[str, float]:
    """The run's test metrics plus what the export measured on the exported file itself."""
    metrics = {k: float(v) for k, v in source.metrics.items() if k.startswith("test/")}
    metrics.update({
        "export/test_acc": test.accuracy,
        "export/test_f1_macro": test.f1_macro,
        "export/val_precision_at_threshold": choice.precision,
        "export/val_coverage_at_threshold": choice.coverage,
    })
    if other.accepted_fraction is not None:
        metrics["export/other_accepted_fraction"] = other.accepted_fraction
    return metrics


def export_bundle(bundle_dir: str | Path, split_csv: Path | None, settings: ExportSettings,
                  source: ModelSource | None = None) -> ExportReport:
    """Export the bundle in ``bundle_dir`` into ``settings.out_dir`` (see the module docstring)."""
    source = source or ModelSource()
    started = time.perf_counter()
    net, spec, model_cfg = load_bundle(bundle_dir)
    arch = str(model_cfg.backbone._target_).rsplit(".", 1)[-1]
    splits = load_split(split_csv, spec.classes, settings.data_root)
    out_dir = Path(settings.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    try:
        report = _export_staged(net, spec, arch, splits, settings, source, staging, started)
        # Models first, metadata last: the app never reads metadata naming a file not yet there.
        for path in report.files:
            (staging / path.name).replace(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def _export_staged(net: ExerciseNet, spec: InputSpec, arch: str, splits: dict[str, list[Sample]],
                   settings: ExportSettings, source: ModelSource, staging: Path,
                   started: float) -> ExportReport:
    out_dir = Path(settings.out_dir)
    size = spec.size
    model_file = f"fitness_{arch}.onnx"
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    fp32 = staging / model_file
    parity = export_onnx(net, fp32, size=size, opset=settings.opset,
                         parity_samples=splits["test"], tolerance=settings.parity_tol)
    seconds["export_and_verify"] = time.perf_counter() - t
    log.info("%s: parity on %d test images, max |dp| = %.2g", model_file, parity.images,
             parity.max_abs_diff)

    t = time.perf_counter()
    session = session_for(fp32)
    test = scores(*_probs(session, splits["test"], size))
    choice = _threshold(session, splits["val"], size, settings.target_precision, fp32.name)
    other = (other_acceptance(settings.other_dir, choice.threshold, session, size)
             if settings.other_dir is not None
             else OtherAcceptance("", 0, 0, 0, note="export.other_dir not set"))
    seconds["threshold"] = time.perf_counter() - t

    int8: QuantizeReport | None = None
    variants: dict[str, dict] = {}
    if settings.quantize == "int8":
        t = time.perf_counter()
        int8_file = staging / f"fitness_{arch}_int8.onnx"
        quantize_int8(fp32, int8_file, [s.path for s in splits["train"]], size)
        int8_session = session_for(int8_file)
        int8_scores = scores(*_probs(int8_session, splits["test"], size))
        check_drop(test, int8_scores, settings.max_drop, int8_file.name)
        int8_choice = _threshold(int8_session, splits["val"], size, settings.target_precision,
                                 int8_file.name)
        int8 = QuantizeReport(path=out_dir / int8_file.name, fp32_bytes=fp32.stat().st_size,
                              int8_bytes=int8_file.stat().st_size, fp32=test, int8=int8_scores,
                              test_images=len(splits["test"]),
                              calibration_images=len(splits["train"]),
                              max_drop=settings.max_drop)
        variants["int8"] = {
            "model_file": int8_file.name,
            "sha256": sha256_file(int8_file),
            "size_bytes": int8.int8_bytes,
            "quantization": "static QDQ, int8 weights per channel, uint8 activations, "
                            f"MinMax calibration on {int8.calibration_images} training images",
            "threshold": int8_choice.threshold,
            "metrics": {"export/test_acc": int8_scores.accuracy,
                        "export/test_f1_macro": int8_scores.f1_macro},
        }
        seconds["quantize"] = time.perf_counter() - t

    expected = expected_probabilities(fp32, settings.fixtures_dir)
    write_metadata(expected, staging / EXPECTED_FILE)
    sha256 = sha256_file(fp32)
    opset = file_opset(fp32)
    meta = build_metadata(
        spec, model_file=model_file, model_name=arch, sha256=sha256, opset=opset,
        threshold=choice.threshold, registered_model=source.registered_model,
        version=source.version, run_id=source.run_id,
        metrics=_metrics(source, test, choice, other), variants=variants)
    write_metadata(meta, staging / META_FILE)
    seconds["total"] = time.perf_counter() - started
    return ExportReport(
        model_path=out_dir / model_file, meta_path=out_dir / META_FILE,
        expected_path=out_dir / EXPECTED_FILE, sha256=sha256, size_bytes=fp32.stat().st_size,
        opset=opset, parity=parity, test=test, test_images=len(splits["test"]),
        threshold=choice, other=other, int8=int8, seconds=seconds, source=source)


def summary_rows(report: ExportReport) -> list[tuple[str, str]]:
    """What a person checks after an export, as (label, value) rows for a table."""
    src = report.source
    choice, other, parity = report.threshold, report.other, report.parity
    rows = [
        ("model", f"{src.registered_model or '-'} version {src.version or '-'} "
                  f"(run {src.run_id or '-'})"),
        ("onnx", f"{report.model_path} ({report.size_bytes / 1e6:.1f} MB, opset {report.opset})"),
        ("sha256", report.sha256),
        ("parity", f"{parity.images} test images, max |dp| {parity.max_abs_diff:.2g} "
                   f"<= {parity.tolerance:g}, same top class on all"),
        ("test (onnx)", f"accuracy {report.test.accuracy:.3f}, macro-F1 "
                        f"{report.test.f1_macro:.3f} on {report.test_images} images"),
        ("threshold", f"{choice.threshold:.3f}: val precision {choice.precision:.3f} "
                      f"(target {choice.target_precision:g}), coverage {choice.coverage:.1%} of "
                      f"{choice.val_images}"),
        ("other exercises", other.note if other.note else
         f"{other.accepted} of {other.images} accepted ({other.accepted_fraction:.1%}) "
         f"in {other.folder}" + (f", {other.unreadable} unreadable" if other.unreadable else "")),
    ]
    if report.int8:
        q = report.int8
        rows.append(("int8", f"{q.path.name}: {q.int8_bytes / 1e6:.1f} MB vs "
                             f"{q.fp32_bytes / 1e6:.1f} MB; accuracy {q.fp32.accuracy:.3f} -> "
                             f"{q.int8.accuracy:.3f}, macro-F1 {q.fp32.f1_macro:.3f} -> "
                             f"{q.int8.f1_macro:.3f} (max drop {q.max_drop:g})"))
    rows.append(("seconds", ", ".join(f"{k} {v:.1f}" for k, v in report.seconds.items())))
    rows.append(("metadata", str(report.meta_path)))
    return rows
