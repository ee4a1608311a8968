"""Classify photos with the exported model, the way the app does.

Everything comes from ``model_meta.json``: which file to load (checked against its SHA-256),
the input size, the class order and the "not sure" threshold. Images go through
:func:`fitlens.data.images.preprocess`, the preprocessing the app mirrors, so a result here is
the result the app shows for the same file.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from fitlens.contract import Answer, Decision, decide
from fitlens.data.images import IMAGE_SUFFIXES, ImageLoadError, preprocess
from fitlens.export.metadata import (
    MetadataError,
    read_metadata,
    sha256_file,
    validate_metadata,
)

META_FILE = "model_meta.json"
#: ``outputs`` keys of a pose model's metadata, in the order the pictures use them.
POSE_OUTPUTS = ("keypoints", "person_box")
#: What onnxruntime raises for a file it cannot load as a model (damaged, not ONNX, bad graph).
ORT_LOAD_ERRORS = (ort_errors.Fail, ort_errors.InvalidArgument, ort_errors.InvalidGraph,
                   ort_errors.InvalidProtobuf, ort_errors.NoModel, ort_errors.NotImplemented,
                   ort_errors.RuntimeException)


@dataclass(frozen=True)
class Prediction:
    path: Path
    #: Known classes with their probabilities, most probable first (top-k).
    top: tuple[tuple[str, float], ...]
    decision: Decision
    threshold: float
    #: The reject output's probability (None for a model without one).
    reject_probability: float | None = None
    #: A pose model's ``[33, 3]`` landmarks (x, y in model-input pixels, visibility 0..1) and
    #: ``[4]`` person box (x0, y0, x1, y1 in model-input pixels); None for other models.
    keypoints: np.ndarray | None = None
    person_box: np.ndarray | None = None

    @property
    def answer(self) -> Answer:
        return self.decision.answer

    @property
    def confident(self) -> bool:
        """The contract's rule gave an exercise (not "not sure", not "not one I know")."""
        return self.answer is Answer.EXERCISE

    @property
    def label(self) -> str | None:
        return self.top[0][0] if self.confident else None


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str


@dataclass(frozen=True)
class PredictResult:
    predictions: list[Prediction]
    skipped: list[Skipped]
    #: Wall time of reading, preprocessing and running every photo (skipped ones included).
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        """Photos per outcome: the contract's three answers, and skipped."""
        counts = {answer.value: 0 for answer in Answer}
        for p in self.predictions:
            counts[p.answer.value] += 1
        return {**counts, "skipped": len(self.skipped)}


class Predictor:
    """The exported model in ``model_dir`` (or its ``variant``, e.g. ``int8``), ready to run."""

    def __init__(self, model_dir: str | Path, variant: str | None = None) -> None:
        self.model_dir = Path(model_dir)
        meta_path = self.model_dir / META_FILE
        self.meta = read_metadata(meta_path)
        self.spec = validate_metadata(self.meta, str(meta_path))
        entry = self.meta
        if variant is not None:
            variants = self.meta.get("variants") or {}
            if variant not in variants:
                raise MetadataError(f"{meta_path}: no variant {variant!r}; it has "
                                    f"{sorted(variants) or 'none'} (export with "
                                    "export.quantize=int8 for an int8 variant)")
            entry = variants[variant]  # validated: a plain file name, a hash, a threshold
        self.variant = variant
        self.model_path = self.model_dir / entry["model_file"]
        self.sha256 = entry["sha256"]
        self.threshold = float(entry["threshold"])
        # A plain file name (validated) can still be a link to a file anywhere.
        if not self.model_path.resolve().is_relative_to(self.model_dir.resolve()):
            raise MetadataError(f"{meta_path}: names {entry['model_file']}, a link to "
                                f"{self.model_path.resolve()}, outside {self.model_dir}; expected "
                                "the model file itself next to model_meta.json")
        if not self.model_path.is_file():
            raise MetadataError(f"{meta_path}: names {entry['model_file']}, which is not in "
                                f"{self.model_dir}; re-run python scripts/export.py")
        if sha256_file(self.model_path) != self.sha256:
            raise MetadataError(f"{self.model_path}: SHA-256 differs from {meta_path}; the model "
                                "and its metadata come from different exports, re-run "
                                "python scripts/export.py")
        self.input_name = self.meta["input"]["name"]
        self.output_name = self.meta["outputs"]["probabilities"]
        #: A pose model's extra outputs, for pictures (None: the model has none).
        self.pose_names = tuple(self.meta["outputs"].get(k) for k in POSE_OUTPUTS)
        if None in self.pose_names:
            self.pose_names = None
        try:
            self.session = ort.InferenceSession(str(self.model_path),
                                                providers=["CPUExecutionProvider"])
        except ORT_LOAD_ERRORS as exc:
            raise MetadataError(f"{self.model_path}: onnxruntime cannot load this model ({exc}); "
                                "expected the ONNX file the export wrote, re-run "
                                "python scripts/export.py") from exc
        self._check_graph(meta_path)

    def _check_graph(self, meta_path: Path) -> None:
        """The graph must take and give what the metadata says: a model from one export and
        metadata from another would otherwise give confident wrong answers."""
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        size, width = self.spec.size, self.spec.num_outputs
        shape = inputs.get(self.input_name)
        if shape is None or len(shape) != 4 or shape[1:] != [3, size, size]:
            raise MetadataError(
                f"{self.model_path}: inputs {inputs}; {meta_path} says input "
                f"{self.input_name!r} of shape [batch, 3, {size}, {size}]")
        out = outputs.get(self.output_name)
        if out is None or len(out) != 2 or (isinstance(out[1], int) and out[1] != width):
            raise MetadataError(
                f"{self.model_path}: outputs {outputs}; {meta_path} says output "
                f"{self.output_name!r} of shape [batch, {width}] for classes "
                f"{list(self.spec.output_classes)}")
        # Probabilities must be probabilities: a graph whose "probabilities" are logits would
        # show "38.4%" and "-72.4%" and break the threshold. (An int8 softmax sums to 1 only
        # within its quantisation step.)
        probe = np.full(self.spec.input_shape, 0.5, dtype=np.float32)
        (probs,) = self.session.run([self.output_name], {self.input_name: probe})
        probs = np.asarray(probs, dtype=np.float64)
        if probs.shape != (1, width) or probs.min() < -1e-6 or abs(probs.sum() - 1) > 0.02:
            raise MetadataError(
                f"{self.model_path}: output {self.output_name!r} gives {probs.shape} values "
                f"summing to {probs.sum():.4g} (min {probs.min():.4g}) on a grey image; "
                f"expected {width} probabilities summing to 1 "
                f"(classes {list(self.spec.output_classes)})")

    def probabilities(self, path: str | Path) -> np.ndarray:
        """One file's probabilities over the outputs (known classes, then the reject class);
        raises :class:`ImageLoadError` if it is not a usable image."""
        (probs,) = self.session.run([self.output_name],
                                    {self.input_name: preprocess(path, self.spec.resize)})
        return np.asarray(probs, dtype=np.float64)[0]

    def predict_file(self, path: str | Path, top_k: int = 3) -> Prediction:
        """Classify one file; raises :class:`ImageLoadError` if it is not a usable image."""
        if self.pose_names is None:
            return self.prediction(path, self.probabilities(path), top_k)
        probs, keypoints, box = self.session.run(
            [self.output_name, *self.pose_names],
            {self.input_name: preprocess(path, self.spec.resize)})
        return replace(self.prediction(path, np.asarray(probs, dtype=np.float64)[0], top_k),
                       keypoints=np.asarray(keypoints, dtype=np.float64)[0],
                       person_box=np.asarray(box, dtype=np.float64)[0])

    def prediction(self, path: str | Path, probs: np.ndarray, top_k: int = 3) -> Prediction:
        """The contract's decision for one photo's probabilities."""
        known = self.spec.num_classes
        order = np.argsort(-probs[:known], kind="stable")[:max(1, top_k)]
        return Prediction(Path(path), tuple((self.spec.classes[i], float(probs[i]))
                                            for i in order),
                          decide(probs, self.threshold, known), self.threshold,
                          float(probs[known]) if self.spec.reject_class else None)

    def predict_paths(self, paths: Sequence[str | Path], top_k: int = 3) -> PredictResult:
        """Classify files and the images in directories; unusable files are skipped with the
        reason, so one broken photo does not stop a folder."""
        predictions, skipped = [], []
        started = time.perf_counter()
        for path in iter_images(paths):
            try:
                predictions.append(self.predict_file(path, top_k))
            except ImageLoadError as exc:
                skipped.append(Skipped(path, exc.reason))
        return PredictResult(predictions, skipped, time.perf_counter() - started)


def iter_images(paths: Sequence[str | Path]) -> Iterator[Path]:
    """Named files as given (whatever their suffix); directories walked recursively for
    image files (``IMAGE_SUFFIXES``), sorted, hidden files left out."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*")
                              if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                              and not any(part.startswith(".")
                                          for part in p.relative_to(path).parts))
        else:
            yield path


def to_json(result: PredictResult, predictor: Predictor) -> dict[str, Any]:
    source = predictor.meta.get("source") or {}
    return {
        "model": {"file": predictor.model_path.name, "sha256": predictor.sha256,
                  "variant": predictor.variant, "registered_model": source.get("registered_model"),
                  "version": source.get("version")},
        "threshold": predictor.threshold,
        "reject_class": predictor.spec.reject_class,
        "summary": {**result.counts(), "seconds": result.seconds},
        "predictions": [{"file": str(p.path), "answer": p.answer.value, "label": p.label,
                         "confident": p.confident, "reject_probability": p.reject_probability,
                         "top": [{"class": c, "probability": prob} for c, prob in p.top]}
                        for p in result.predictions],
        "skipped": [{"file": str(s.path), "reason": s.reason} for s in result.skipped],
    }


def write_csv(result: PredictResult, path: Path) -> Path:
    """``predictions.csv``: per photo its answer, the label it was given (empty unless an
    exercise), the top classes with probabilities and the reject output's probability; skipped
    files with the reason."""
    top_k = max((len(p.top) for p in result.predictions), default=0)
    ranked = [f"top{i}{part}" for i in range(1, top_k + 1) for part in ("", "_probability")]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "answer", "label", *ranked, "reject_probability", "skipped"])
        for p in result.predictions:
            cells = [cell for c, prob in p.top for cell in (c, f"{prob:.6f}")]
            cells += [""] * (len(ranked) - len(cells))
            reject = "" if p.reject_probability is None else f"{p.reject_probability:.6f}"
            writer.writerow([str(p.path), p.answer.value, p.label or "", *cells, reject, ""])
        for skipped in result.skipped:
            writer.writerow([str(skipped.path), "skipped", "", *[""] * len(ranked), "",
                             skipped.reason])
    return path


def verdict(p: Prediction) -> str:
    """The answer in words, as the app says it."""
    if p.answer is Answer.EXERCISE:
        return p.top[0][0]
    if p.answer is Answer.UNKNOWN:
        return (f"not one of the exercises I know ({p.decision.probability:.1%} none of them; "
                f"best guess {p.top[0][0]})")
    return f"not sure (best {p.top[0][1]:.1%} < threshold {p.threshold:.1%})"


def format_text(result: PredictResult) -> str:
    """One line per image: the answer and the top-k known classes with confidences."""
    lines = []
    for p in result.predictions:
        ranked = ", ".join(f"{c} {prob:.1%}" for c, prob in p.top)
        lines.append(f"{p.path}: {verdict(p)}  [{ranked}]")
    lines.extend(f"{s.path}: skipped, {s.reason}" for s in result.skipped)
    if not result.predictions and not result.skipped:
        lines.append("no images found")
    return "\n".join(lines)


def format_summary(result: PredictResult) -> str:
    """One closing line: how many photos got each answer, were skipped, and the time per photo."""
    counts = result.counts()
    total = len(result.predictions) + len(result.skipped)
    per_photo = f", {1000 * result.seconds / total:.1f} ms per photo" if total else ""
    return (f"{total} photo(s): {counts[Answer.EXERCISE.value]} classified, "
            f"{counts[Answer.NOT_SURE.value]} not sure, "
            f"{counts[Answer.UNKNOWN.value]} none of the known exercises, "
            f"{counts['skipped']} skipped{per_photo}")
