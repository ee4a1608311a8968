"""The export stage: a trained bundle in, the app's model assets out, all or nothing.

The complete export (ONNX file, int8 variant, metadata, expected outputs) is built and checked in
a folder of its own (``keep_dir``: the export job's folder): onnx.checker, parity on real photos,
the int8 accuracy gate, the threshold. Only then is it recorded on the model version and
published into the app's asset folder (:mod:`fitlens.export.publish`: one atomic switch).

The "not sure" threshold is chosen on photos the model did not train on: the out-of-fold
predictions of a cross-validated refit (``experiment=cv5``), else the run's validation split;
the test split, when there is one, then reports what the shipped threshold does on photos that
chose nothing.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
from omegaconf import DictConfig

from fitlens.contract import InputSpec
from fitlens.crossval import read_oof_csv
from fitlens.data.splits import SPLITS, Sample, read_split_csv
from fitlens.export.fixtures import expected_probabilities
from fitlens.export.metadata import build_metadata, sha256_file, write_metadata
from fitlens.export.onnx import (
    ParityResult,
    export_onnx,
    file_opset,
    image_probabilities,
    session_for,
)
from fitlens.export.publish import (
    EXPECTED_FILE,
    META_FILE,
    publish,
    remove_staging,
)
from fitlens.export.quantize import QuantizeReport, Scores, check_drop, quantize_int8, scores
from fitlens.export.threshold import (
    OperatingPoint,
    ThresholdChoice,
    ThresholdSettings,
    choose_threshold,
    folder_probabilities,
    operating_point,
)
from fitlens.models.checkpoint import load_bundle
from fitlens.tracking.registry import record_export, resolve_model
from fitlens.tracking.store import store_errors

log = logging.getLogger(__name__)

QUANTIZE_CHOICES = (None, "int8")
#: Photos the parity check runs on: enough to catch drift, few enough to stay quick.
PARITY_PHOTOS = 24


@dataclass(frozen=True)
class ExportSettings:
    """``export.*`` from conf/export.yaml (paths resolved)."""

    out_dir: Path
    fixtures_dir: Path
    #: Where the complete export is built and kept (None: a temporary folder).
    keep_dir: Path | None = None
    #: Where ``expected_probabilities.json`` goes for the app's model test (None: not written
    #: outside keep_dir); it never ships.
    expected_dir: Path | None = None
    other_dir: Path | None = None
    data_root: Path | None = None
    reject_root: Path | None = None
    opset: int = 18
    parity_tol: float = 1e-4
    quantize: str | None = None
    max_drop: float = 0.01
    threshold: ThresholdSettings = field(default_factory=ThresholdSettings)

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
class Judged:
    """Photos with labels (known class index, or ``len(classes)`` for another exercise) and the
    model's probabilities on them."""

    probs: np.ndarray
    labels: np.ndarray
    source: str

    def __add__(self, other: Judged) -> Judged:
        return Judged(np.concatenate([self.probs, other.probs]),
                      np.concatenate([self.labels, other.labels]),
                      f"{self.source} + {other.source}")


@dataclass(frozen=True)
class ExportReport:
    #: The complete export, in ``keep_dir`` (the published copies: :func:`publish`).
    model_path: Path
    meta_path: Path
    expected_path: Path
    sha256: str
    size_bytes: int
    opset: int
    parity: ParityResult
    #: Known-class scores of the exported file on the test split (None: a refit has none).
    test: Scores | None
    test_images: int
    threshold: ThresholdChoice
    #: The shipped threshold on held-out photos that played no part in choosing it.
    held_out: OperatingPoint | None
    int8: QuantizeReport | None
    seconds: dict[str, float]
    source: ModelSource

    @property
    def files(self) -> list[Path]:
        extra = [self.int8.path] if self.int8 else []
        return [self.model_path, *extra, self.expected_path, self.meta_path]

    #: Set by :func:`run`: the app's copies of the metadata and the model.
    published: tuple[Path, ...] = ()


def settings_from(cfg: DictConfig) -> ExportSettings:
    e = cfg.export

    def path(value: str | None) -> Path | None:
        return None if value is None else Path(value)

    return ExportSettings(
        out_dir=Path(e.out_dir), fixtures_dir=Path(e.fixtures_dir),
        keep_dir=Path(cfg.paths.output_dir) / "export", expected_dir=path(e.expected_dir),
        other_dir=path(e.other_dir),
        data_root=path(e.data_root), reject_root=path(e.reject_root), opset=int(e.opset),
        parity_tol=float(e.parity_tol), quantize=e.quantize, max_drop=float(e.max_drop),
        threshold=ThresholdSettings.from_config(cfg.threshold))


def run(cfg: DictConfig) -> ExportReport:
    """The stage behind ``scripts/export.py``: resolve the version, export it, record the export
    on the version (before anything reaches the app), then publish it to the app."""
    e = cfg.export
    settings = settings_from(cfg)
    remove_staging(settings.out_dir)
    pinned = e.version is not None or e.run_id is not None
    resolved = resolve_model(
        cfg.logger.tracking_uri, cfg.logger.registered_model,
        alias=None if pinned else e.alias, version=e.version, run_id=e.run_id,
        dst=Path(cfg.paths.output_dir) / "resolved")
    split = Path(e.split_file) if e.split_file else resolved.split_csv
    source = ModelSource(registered_model=resolved.name, version=resolved.version,
                         run_id=resolved.run_id, metrics=resolved.metrics)
    report = export_bundle(resolved.bundle_dir, split, settings, source, resolved.oof_csv)
    with store_errors(cfg.logger.tracking_uri,
                      f"recording the export on version {resolved.version} of {resolved.name!r}",
                      f"; nothing was published, export.out_dir={settings.out_dir} keeps its "
                      f"previous export (the new one is in {report.meta_path.parent})"):
        record_export(cfg.logger.tracking_uri, resolved, report.files, report.sha256)
    return replace(report, published=publish(report.meta_path, report.model_path,
                                              report.expected_path, settings.out_dir,
                                              settings.expected_dir))


def _relocated(sample: Sample, spec: InputSpec, settings: ExportSettings) -> Path:
    """A photo recorded on the machine that trained, found on this one if it moved."""
    if sample.path.is_file():
        return sample.path
    if sample.class_name == spec.reject_class:
        root = settings.reject_root
        return sample.path if root is None else root / sample.path.name
    root = settings.data_root
    return sample.path if root is None else root / sample.class_name / sample.path.name


def load_split(split_csv: Path | None, spec: InputSpec,
               settings: ExportSettings) -> dict[str, list[Sample]]:
    """The training run's split, with files moved since training found under
    ``export.data_root`` (``<root>/<class>/<file>``) or ``export.reject_root`` (``<root>/<file>``).
    """
    if split_csv is None:
        raise FileNotFoundError(
            "the model's run has no split.csv, so there are no photos for the parity check and "
            "the threshold; pass export.split_file=<run>/split.csv")
    samples, split_of = read_split_csv(split_csv, spec.output_classes)
    by_split: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    missing = []
    for s in samples:
        path = _relocated(s, spec, settings)
        if not path.is_file():
            missing.append(str(s.path))
            continue
        by_split[split_of[s.group]].append(Sample(path, s.label, s.class_name, s.group))
    if missing:
        raise FileNotFoundError(
            f"{split_csv}: {len(missing)} listed image(s) not found (e.g. {missing[0]}), also not "
            f"under export.data_root={settings.data_root}/<class>/ or export.reject_root="
            f"{settings.reject_root}/; expected the photos the model was trained on")
    return by_split


def _judge(session: ort.InferenceSession, samples: Sequence[Sample], spec: InputSpec,
           source: str) -> Judged:
    probs, _ = image_probabilities(session, [s.path for s in samples], spec.resize)
    return Judged(probs, np.array([s.label for s in samples], dtype=np.int64), source)


def _other_photos(session: ort.InferenceSession, spec: InputSpec,
                  settings: ExportSettings) -> Judged | None:
    """Photos of other exercises that the model never trained on (``export.other_dir``), for a
    model without a reject class; one with a reject class trained on them, so its split's own
    held-out other photos count instead."""
    if spec.reject_class is not None or settings.other_dir is None:
        return None
    probs, unreadable = folder_probabilities(settings.other_dir, session, spec.resize)
    if not len(probs):
        log.warning("export.other_dir=%s: no readable photos of other exercises; the threshold "
                    "is chosen without them", settings.other_dir)
        return None
    if unreadable:
        log.warning("export.other_dir=%s: %d unreadable file(s) skipped", settings.other_dir,
                    unreadable)
    return Judged(probs, np.full(len(probs), spec.num_classes, dtype=np.int64),
                  f"{len(probs)} photos in export.other_dir")


def _selection(session: ort.InferenceSession, spec: InputSpec, splits: dict[str, list[Sample]],
               oof_csv: Path | None, settings: ExportSettings) -> Judged:
    """The photos the threshold is chosen on: out-of-fold predictions, else validation."""
    if oof_csv is not None:
        probs, labels = read_oof_csv(oof_csv, spec.output_classes)
        chosen = Judged(probs, labels, f"out-of-fold predictions of {len(labels)} photos")
    elif splits["val"]:
        chosen = _judge(session, splits["val"], spec,
                        f"validation split ({len(splits['val'])} photos)")
    else:
        raise ValueError(
            "the model's run has no validation photos and no out-of-fold predictions to choose "
            "the 'not sure' threshold on; train with experiment=cv5 (cross-validation, then a "
            "refit) or with data.val_fraction > 0")
    other = _other_photos(session, spec, settings)
    return chosen if other is None else chosen + other


def _parity_photos(splits: dict[str, list[Sample]]) -> list[Sample]:
    """A fixed handful of real photos: held-out ones first, training ones for a refit."""
    ordered = [s for name in ("test", "val", "train") for s in splits[name]]
    return ordered[:PARITY_PHOTOS]


def export_bundle(bundle_dir: str | Path, split_csv: Path | None, settings: ExportSettings,
                  source: ModelSource | None = None,
                  oof_csv: Path | None = None) -> ExportReport:
    """Build and check the complete export of the bundle in ``bundle_dir`` in
    ``settings.keep_dir`` (or a temporary folder); nothing reaches the app until it is
    published."""
    source = source or ModelSource()
    started = time.perf_counter()
    net, spec, model_cfg = load_bundle(bundle_dir)
    arch = model_name(model_cfg)
    splits = load_split(split_csv, spec, settings)
    keep = settings.keep_dir or Path(tempfile.mkdtemp(prefix="fitlens-export-"))
    keep.mkdir(parents=True, exist_ok=True)
    return _export(net, spec, arch, splits, oof_csv, settings, source, keep, started)


def model_name(model_cfg: DictConfig) -> str:
    """``resnet18``, ``efficientnet_lite0``, ... or ``pose_<backbone>`` for a pose model."""
    backbone = str(model_cfg.backbone._target_).rsplit(".", 1)[-1]
    net = str((model_cfg.get("net") or {}).get("_target_", ""))
    return f"pose_{backbone}" if net.endswith("PoseFusionNet") else backbone


def _export(net, spec: InputSpec, arch: str, splits: dict[str, list[Sample]],
            oof_csv: Path | None, settings: ExportSettings, source: ModelSource, keep: Path,
            started: float) -> ExportReport:
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    fp32 = keep / f"fitness_{arch}.onnx"
    parity = export_onnx(net, fp32, resize=spec.resize, opset=settings.opset,
                         parity_samples=_parity_photos(splits), tolerance=settings.parity_tol)
    seconds["export_and_verify"] = time.perf_counter() - t
    log.info("%s: parity on %d photos, max |dp| = %.2g", fp32.name, parity.images,
             parity.max_abs_diff)

    t = time.perf_counter()
    session = session_for(fp32)
    chosen_on = _selection(session, spec, splits, oof_csv, settings)
    choice = choose_threshold(chosen_on.probs, chosen_on.labels, spec.num_classes,
                              settings.threshold, chosen_on.source)
    if not choice.met:
        log.warning("%s", choice.note)
    test = held_out = None
    if splits["test"]:
        judged = _judge(session, splits["test"], spec, "test split")
        test = scores(judged.probs, judged.labels, spec.num_classes)
        held_out = operating_point(judged.probs, judged.labels, spec.num_classes,
                                   choice.threshold, settings.threshold.confidence, "test split")
    seconds["threshold"] = time.perf_counter() - t

    int8: QuantizeReport | None = None
    variants: dict[str, dict] = {}
    if settings.quantize == "int8":
        t = time.perf_counter()
        int8, variants["int8"] = _int8(fp32, keep / f"fitness_{arch}_int8.onnx", spec, splits,
                                       choice, settings)
        seconds["quantize"] = time.perf_counter() - t

    # Named by content: a published file never has the name of another export's model.
    sha256 = sha256_file(fp32)
    model_file = f"fitness_{arch}-{sha256[:12]}.onnx"
    fp32 = fp32.replace(keep / model_file)
    expected = expected_probabilities(fp32, settings.fixtures_dir, spec.resize)
    write_metadata(expected, keep / EXPECTED_FILE)
    opset = file_opset(fp32)
    meta = build_metadata(
        spec, model_file=model_file, model_name=arch, sha256=sha256, opset=opset,
        threshold=choice.threshold, registered_model=source.registered_model,
        version=source.version, run_id=source.run_id,
        metrics=_metrics(source, test, choice, held_out), variants=variants,
        pose_outputs=getattr(net, "has_pose_outputs", False),
        operating_point=_operating_point_meta(choice, held_out))
    write_metadata(meta, keep / META_FILE)
    seconds["total"] = time.perf_counter() - started
    return ExportReport(
        model_path=fp32, meta_path=keep / META_FILE,
        expected_path=keep / EXPECTED_FILE, sha256=sha256, size_bytes=fp32.stat().st_size,
        opset=opset, parity=parity, test=test, test_images=len(splits["test"]),
        threshold=choice, held_out=held_out, int8=int8, seconds=seconds, source=source)


def _int8(fp32: Path, dest: Path, spec: InputSpec, splits: dict[str, list[Sample]],
          choice: ThresholdChoice, settings: ExportSettings) -> tuple[QuantizeReport, dict]:
    """A static int8 variant, calibrated on training photos and gated on the drop in known-class
    scores against fp32 on the held-out photos (the test split; training photos for a refit,
    where only the drop, not the level, is meaningful)."""
    calibration = [s.path for s in splits["train"]]
    quantize_int8(fp32, dest, calibration, spec.resize)
    checked_split = next(name for name in ("test", "val", "train") if splits[name])
    checked_on = splits[checked_split]
    fp32_judged = _judge(session_for(fp32), checked_on, spec, "fp32")
    int8_judged = _judge(session_for(dest), checked_on, spec, "int8")
    fp32_scores = scores(fp32_judged.probs, fp32_judged.labels, spec.num_classes)
    int8_scores = scores(int8_judged.probs, int8_judged.labels, spec.num_classes)
    check_drop(fp32_scores, int8_scores, settings.max_drop, dest.name)
    report = QuantizeReport(path=dest, fp32_bytes=fp32.stat().st_size,
                            int8_bytes=dest.stat().st_size, fp32=fp32_scores, int8=int8_scores,
                            test_images=len(checked_on), calibration_images=len(calibration),
                            max_drop=settings.max_drop, checked_split=checked_split)
    variant = {
        "model_file": dest.name,
        "sha256": sha256_file(dest),
        "size_bytes": report.int8_bytes,
        "quantization": "static QDQ, int8 weights per channel, uint8 activations, "
                        f"MinMax calibration on {len(calibration)} training images",
        # The fp32 threshold: chosen on fp32 probabilities, which the gate says int8 follows.
        "threshold": choice.threshold,
        "metrics": {"export/test_acc": int8_scores.accuracy,
                    "export/test_f1_macro": int8_scores.f1_macro},
    }
    return report, variant


def _operating_point_meta(choice: ThresholdChoice,
                          held_out: OperatingPoint | None) -> dict[str, object]:
    s = choice.settings
    return {"target_precision": s.target_precision, "confidence": s.confidence,
            "min_accepted": s.min_accepted, "max_other_accepted": s.max_other_accepted,
            "met": choice.met,
            "note": choice.note, "chosen_on": {"photos": choice.source,
                                               **choice.point.to_dict()},
            "held_out": None if held_out is None else {"photos": "test split",
                                                       **held_out.to_dict()}}


def _metrics(source: ModelSource, test: Scores | None, choice: ThresholdChoice,
             held_out: OperatingPoint | None) -> dict[str, float]:
    """The run's held-out metrics plus what the export measured on the exported file itself."""
    metrics = {k: float(v) for k, v in source.metrics.items()
               if k.startswith(("test/", "oof/"))}
    point = choice.point
    metrics.update({"export/precision_at_threshold": point.precision,
                    "export/precision_lower_at_threshold": point.precision_lower,
                    "export/coverage_at_threshold": point.coverage})
    if point.other_accepted_fraction is not None:
        metrics["export/other_accepted_at_threshold"] = point.other_accepted_fraction
    if test is not None:
        metrics.update({"export/test_acc": test.accuracy, "export/test_f1_macro": test.f1_macro})
    if held_out is not None and held_out.known_accepted:
        metrics["export/test_precision_at_threshold"] = held_out.precision
        metrics["export/test_coverage_at_threshold"] = held_out.coverage
    return {k: v for k, v in metrics.items() if np.isfinite(v)}


def summary_rows(report: ExportReport) -> list[tuple[str, str]]:
    """What a person checks after an export, as (label, value) rows for a table."""
    src = report.source
    choice, parity = report.threshold, report.parity
    rows = [
        ("model", f"{src.registered_model or '-'} version {src.version or '-'} "
                  f"(run {src.run_id or '-'})"),
        ("onnx", f"{report.model_path} ({report.size_bytes / 1e6:.1f} MB, opset {report.opset})"),
        ("sha256", report.sha256),
        ("parity", f"{parity.images} photos, max |dp| {parity.max_abs_diff:.2g} "
                   f"<= {parity.tolerance:g}, same top class on all"),
    ]
    if report.test is not None:
        rows.append(("test (onnx)", f"accuracy {report.test.accuracy:.3f}, macro-F1 "
                                    f"{report.test.f1_macro:.3f} on {report.test_images} photos"))
    rows.append(("threshold", f"{choice.threshold:.3f}, chosen on the {choice.source}: "
                              f"{choice.point.describe()}"))
    if not choice.met:
        rows.append(("target not met", choice.note))
    if report.held_out is not None:
        rows.append(("held out", f"on the test split: {report.held_out.describe()}"))
    if report.int8:
        q = report.int8
        rows.append(("int8", f"{q.path.name}: {q.int8_bytes / 1e6:.1f} MB vs "
                             f"{q.fp32_bytes / 1e6:.1f} MB; accuracy {q.fp32.accuracy:.3f} -> "
                             f"{q.int8.accuracy:.3f}, macro-F1 {q.fp32.f1_macro:.3f} -> "
                             f"{q.int8.f1_macro:.3f} on the {q.test_images} {q.checked_split} "
                             f"photos (max drop {q.max_drop:g})"
                             + ("; a refit has no held-out photos, so only the drop means "
                                "something" if q.checked_split == "train" else "")))
    rows.append(("seconds", ", ".join(f"{k} {v:.1f}" for k, v in report.seconds.items())))
    rows.append(("complete export", str(report.meta_path.parent)))
    for path in report.published:
        rows.append(("app asset", str(path)))
    return rows
