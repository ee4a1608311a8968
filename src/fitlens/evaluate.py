"""Score a model on labelled photos the way the app answers them (``scripts/evaluate.py``).

The model is a registered version (``evaluate.version=N``, else ``evaluate.alias``, by default
the champion), a training checkpoint (``evaluate.checkpoint=<run>/checkpoints/<file>.ckpt``) or
an exported ONNX model (``evaluate.onnx=<file or folder>``, read with its ``model_meta.json`` by
:class:`fitlens.predict.Predictor`, as predict and the app read it). The photos are a folder in
the training layout (``evaluate.images=<folder>``: ``<folder>/<class>/*.jpg``, a folder named
after the reject class counting as other exercises), a folder of photos of other exercises
(``evaluate.other``), or, when neither is given, a split of the model's training run
(``evaluate.split``, test by default).

Every photo goes through the app's preprocessing; the scores are :func:`fitlens.metrics.scores`,
each photo's answer :func:`fitlens.contract.decide` at the model's threshold. The job folder
(``outputs/eval/<time>/``) gets ``metrics.json``, ``predictions.csv``, ``confusion.png`` and
``.csv`` (rows: true class, columns: the arg-max output, as in training's plots) and
``per_class.csv``; ``evaluate.log_to_run=true`` also logs them to the model's MLflow run.
"""

from __future__ import annotations

import csv
import json
import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from fitlens.contract import Answer, InputSpec, decide
from fitlens.data.datamodule import spec_of
from fitlens.data.images import IMAGE_SUFFIXES, ImageLoadError, preprocess
from fitlens.data.splits import SPLITS, read_split_csv
from fitlens.metrics import confusion, scores
from fitlens.models.checkpoint import (
    lightning_state_to_net_state,
    load_bundle,
    safe_load,
    save_bundle,
)
from fitlens.predict import META_FILE, Predictor
from fitlens.tracking.evaluation import exported_threshold, log_evaluation, run_split
from fitlens.tracking.plots import confusion_png, per_class_csv
from fitlens.tracking.registry import resolve_model
from fitlens.tracking.runs import RUN_ID_KEY

log = logging.getLogger(__name__)

FILES = ("metrics.json", "predictions.csv", "confusion.png", "confusion.csv", "per_class.csv")
#: The row name of photos of other exercises for a model without a reject output.
OTHER = "other"
#: Scores in the order a person reads them, before the per-class ones.
ORDER = ("acc", "f1_macro", "reject_auroc", "known_accepted", "other_accepted",
         "accepted_precision")


@dataclass(frozen=True)
class Photo:
    path: Path
    #: Known class index, or ``len(classes)`` for a photo of another exercise.
    label: int
    truth: str


@dataclass
class Model:
    """A model ready to score photos: one photo in, probabilities over its outputs out."""

    spec: InputSpec
    probabilities: Callable[[Path], np.ndarray]
    threshold: float
    #: Where the threshold came from, in words.
    threshold_source: str
    description: str
    run_id: str | None = None
    split_csv: Path | None = None


@dataclass
class Evaluation:
    model: Model
    photos_source: str
    photos: list[Photo]
    probs: np.ndarray
    labels: np.ndarray
    skipped: list[tuple[Path, str]]
    metrics: dict[str, float]
    answers: dict[str, dict[str, int]]
    matrix: np.ndarray
    names: tuple[str, ...]
    folder: Path
    files: list[Path] = field(default_factory=list)
    logged_to: str | None = None


# --- the model --------------------------------------------------------------------------------


def _torch_model(net: nn.Module, spec: InputSpec) -> Callable[[Path], np.ndarray]:
    net = net.eval()

    def probabilities(path: Path) -> np.ndarray:
        with torch.inference_mode():
            logits = net(torch.from_numpy(preprocess(path, spec.resize)))
        return logits.softmax(dim=1)[0].double().numpy()

    return probabilities


def _given_threshold(e: DictConfig) -> float | None:
    value = e.get("threshold")
    if value is None:
        return None
    if not 0 <= float(value) <= 1:
        raise ValueError(f"evaluate.threshold={value}: expected a probability in [0, 1] or null "
                         "(the model's own)")
    return float(value)


def _onnx(e: DictConfig) -> Model:
    path = Path(e.onnx)
    if not path.exists():
        raise FileNotFoundError(f"evaluate.onnx={path}: no such file or folder; expected an "
                                f"exported model (the .onnx file with its {META_FILE} beside it, "
                                "or that folder)")
    predictor = Predictor(path if path.is_dir() else path.parent, e.get("variant"))
    if path.is_file() and path.resolve() != predictor.model_path.resolve():
        raise ValueError(f"evaluate.onnx={path}: {predictor.model_dir / META_FILE} describes "
                         f"{predictor.model_path.name}, not this file; pass the folder (or "
                         "evaluate.variant=<name> for a variant it lists)")
    source = predictor.meta.get("source") or {}
    named = (f" ({source.get('registered_model')} version {source.get('version')})"
             if source.get("version") else "")
    given = _given_threshold(e)
    return Model(predictor.spec, predictor.probabilities,
                 predictor.threshold if given is None else given,
                 f"{META_FILE}" if given is None else "evaluate.threshold",
                 f"{predictor.model_path}{named}", run_id=source.get("run_id"))


def _run_folder(checkpoint: Path) -> Path:
    """The training run folder a checkpoint is in (a fold's checkpoint: its job's folder)."""
    for folder in list(checkpoint.resolve().parents)[:3]:
        if (folder / ".hydra" / "config.yaml").is_file():
            return folder
    raise FileNotFoundError(
        f"evaluate.checkpoint={checkpoint}: no .hydra/config.yaml in the folders above it; "
        "expected a checkpoint of a training run (<run folder>/checkpoints/<name>.ckpt), whose "
        "config says which network and classes it has")


def _checkpoint(e: DictConfig, tmp: Path) -> Model:
    path = Path(e.checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"evaluate.checkpoint={path}: file does not exist; expected "
                                "<run folder>/checkpoints/<name>.ckpt")
    run_dir = _run_folder(path)
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    checkpoint = safe_load(path)
    state = lightning_state_to_net_state(checkpoint, str(path))
    backbone = str(cfg.model.backbone._target_).rsplit(".", 1)[-1]
    # Through the bundle the export loads, so a checkpoint is judged as its export would run.
    bundle = save_bundle(state, cfg.model, spec_of(cfg.data), backbone, tmp / "bundle")
    net, spec, _ = load_bundle(bundle)
    given = _given_threshold(e)
    split = path.resolve().parents[1] / "split.csv"
    return Model(spec, _torch_model(net, spec), given or 0.0,
                 "evaluate.threshold" if given is not None
                 else "none chosen: a checkpoint gets its threshold at export",
                 f"checkpoint {path.resolve()}",
                 run_id=checkpoint.get(RUN_ID_KEY) if isinstance(checkpoint, dict) else None,
                 split_csv=split if split.is_file() else None)


def _registered(e: DictConfig, tracking: DictConfig, tmp: Path) -> Model:
    version = e.get("version")
    resolved = resolve_model(tracking.tracking_uri, tracking.registered_model,
                             alias=None if version is not None else e.alias, version=version,
                             dst=tmp / "model")
    net, spec, _ = load_bundle(resolved.bundle_dir)
    given = _given_threshold(e)
    exported = (None if given is not None
                else exported_threshold(tracking.tracking_uri, resolved.run_id, tmp / "export"))
    if given is not None:
        threshold, source = given, "evaluate.threshold"
    elif exported is not None:
        threshold, source = exported, "its export's model_meta.json"
    elif "oof/threshold" in resolved.metrics:
        threshold, source = resolved.metrics["oof/threshold"], "its cross-validation"
    else:
        threshold, source = 0.0, "none chosen: the version was never exported"
    which = f"version {version}" if version is not None else f"@{e.alias}"
    return Model(spec, _torch_model(net, spec), float(threshold), source,
                 f"{resolved.name} {which} = version {resolved.version} (run {resolved.run_id})",
                 run_id=resolved.run_id, split_csv=resolved.split_csv)


def load_model(e: DictConfig, tracking: DictConfig, tmp: Path) -> Model:
    """The one model ``evaluate.*`` names: onnx, checkpoint or version (else the alias)."""
    chosen = [k for k in ("onnx", "checkpoint", "version") if e.get(k) is not None]
    if len(chosen) > 1:
        raise ValueError(f"evaluate.{chosen[0]} and evaluate.{chosen[1]} are both set; give one "
                         "model: evaluate.onnx, evaluate.checkpoint or evaluate.version "
                         "(none of them: evaluate.alias)")
    if chosen == ["onnx"]:
        return _onnx(e)
    if chosen == ["checkpoint"]:
        return _checkpoint(e, tmp)
    return _registered(e, tracking, tmp)


# --- the photos -------------------------------------------------------------------------------


def _images_in(folder: Path) -> list[Path]:
    wanted = set(IMAGE_SUFFIXES)
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in wanted
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def folder_photos(images: Path, spec: InputSpec) -> list[Photo]:
    """``<images>/<class>/...`` photos, labelled by their folder."""
    expected = (f"expected <folder>/<class>/*.jpg with class folders among {list(spec.classes)}"
                + (f" (or {spec.reject_class!r} for other exercises)" if spec.reject_class
                   else ""))
    if not images.is_dir():
        raise FileNotFoundError(f"evaluate.images={images}: folder does not exist; {expected}")
    folders = sorted(p for p in images.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [p.name for p in folders if p.name not in spec.output_classes]
    if not folders or unknown:
        found = f"folder(s) {unknown} are not classes of the model" if unknown else \
            "no class folders"
        raise ValueError(f"evaluate.images={images}: {found}; {expected}. Photos of other "
                         "exercises: evaluate.other=<folder>; unlabelled photos: "
                         "scripts/predict.py")
    return [Photo(path, spec.output_classes.index(folder.name),
                  OTHER if folder.name == spec.reject_class else folder.name)
            for folder in folders for path in _images_in(folder)]


def other_photos(other: Path, spec: InputSpec) -> list[Photo]:
    """Every photo under ``other``: exercises that are none of the model's classes."""
    if not other.is_dir():
        raise FileNotFoundError(f"evaluate.other={other}: folder does not exist; expected photos "
                                "of exercises that are none of the model's classes")
    return [Photo(path, spec.num_classes, OTHER) for path in _images_in(other)]


def split_photos(e: DictConfig, model: Model, tracking: DictConfig, tmp: Path) -> list[Photo]:
    """The photos of split ``evaluate.split`` of the model's training run."""
    split = e.get("split")
    if split not in SPLITS:
        raise ValueError(f"evaluate.split={split!r}: expected one of {list(SPLITS)}, or give "
                         "the photos: evaluate.images=<folder> / evaluate.other=<folder>")
    csv_path = Path(e.split_file) if e.get("split_file") else model.split_csv
    if csv_path is None and model.run_id is not None:
        csv_path = run_split(tracking.tracking_uri, model.run_id, tmp / "split")
    if csv_path is None:
        raise FileNotFoundError(
            f"evaluate.split={split}: the model has no training run with a split.csv; give "
            "evaluate.split_file=<run folder>/split.csv, or the photos: evaluate.images=<folder>")
    samples, split_of = read_split_csv(csv_path, model.spec.output_classes)
    chosen = [s for s in samples if split_of[s.group] == split]
    if not chosen:
        raise ValueError(f"evaluate.split={split}: {csv_path} has no {split} photos (a refit "
                         "trains on all of them); give the photos: evaluate.images=<folder>")
    missing = [s.path for s in chosen if not s.path.is_file()]
    if missing:
        raise FileNotFoundError(f"evaluate.split={split}: {len(missing)} photo(s) listed in "
                                f"{csv_path} are not on this machine (e.g. {missing[0]}); give "
                                "the photos: evaluate.images=<folder>")
    k = model.spec.num_classes
    return [Photo(s.path, s.label, OTHER if s.label >= k else s.class_name) for s in chosen]


def load_photos(e: DictConfig, model: Model, tracking: DictConfig,
                tmp: Path) -> tuple[list[Photo], str]:
    """The photos and, in words, where they came from."""
    if e.get("images") is None and e.get("other") is None:
        return split_photos(e, model, tracking, tmp), f"the {e.split} split of its training run"
    photos, parts = [], []
    if e.get("images") is not None:
        photos += folder_photos(Path(e.images), model.spec)
        parts.append(f"{Path(e.images).resolve()}")
    if e.get("other") is not None:
        photos += other_photos(Path(e.other), model.spec)
        parts.append(f"other exercises in {Path(e.other).resolve()}")
    if not photos:
        raise ValueError(f"evaluate.images / evaluate.other: no photos in {', '.join(parts)}; "
                         f"expected files ending in {', '.join(IMAGE_SUFFIXES)}")
    return photos, " + ".join(parts)


# --- scoring ----------------------------------------------------------------------------------


def answers(probs: np.ndarray, labels: np.ndarray, threshold: float,
            num_known: int) -> dict[str, dict[str, int]]:
    """How the app would answer, per kind of photo: known-class photos ``right`` / ``wrong`` /
    ``not_sure`` / ``not_one_i_know``; other photos ``accepted`` (answered with an exercise) /
    ``not_sure`` / ``not_one_i_know``."""
    known = {"right": 0, "wrong": 0, Answer.NOT_SURE.value: 0, Answer.UNKNOWN.value: 0}
    other = {"accepted": 0, Answer.NOT_SURE.value: 0, Answer.UNKNOWN.value: 0}
    for p, label in zip(probs, labels, strict=True):
        d = decide(p, threshold, num_known)
        if d.answer is Answer.EXERCISE:
            key = ("right" if d.index == label else "wrong") if label < num_known \
                else "accepted"
        else:
            key = d.answer.value
        (known if label < num_known else other)[key] += 1
    return {"known": known, "other": other}


def score(model: Model, photos: Sequence[Photo]) -> tuple[np.ndarray, np.ndarray,
                                                          list[Photo], list[tuple[Path, str]]]:
    """Probabilities of every readable photo; unreadable ones are skipped with the reason."""
    rows, kept, skipped = [], [], []
    for photo in photos:
        try:
            rows.append(model.probabilities(photo.path))
            kept.append(photo)
        except ImageLoadError as exc:
            skipped.append((photo.path, exc.reason))
    if not kept:
        raise ValueError(f"none of the {len(photos)} photo(s) could be read (e.g. "
                         f"{skipped[0][0]}: {skipped[0][1]})")
    return np.stack(rows), np.array([p.label for p in kept], dtype=np.int64), kept, skipped


def evaluate(model: Model, photos: Sequence[Photo], photos_source: str,
             folder: Path) -> Evaluation:
    probs, labels, kept, skipped = score(model, photos)
    spec = model.spec
    k = spec.num_classes
    names = spec.output_classes
    if spec.reject_class is None and (labels >= k).any():
        names = (*spec.classes, OTHER)
    return Evaluation(model=model, photos_source=photos_source, photos=kept, probs=probs,
                      labels=labels, skipped=skipped,
                      metrics=scores(probs, labels, spec.classes, model.threshold),
                      answers=answers(probs, labels, model.threshold, k),
                      matrix=confusion(probs, labels, len(names)), names=names, folder=folder)


def write(ev: Evaluation) -> list[Path]:
    """The evaluation's files (:data:`FILES`) in its folder."""
    folder, spec = ev.folder, ev.model.spec
    folder.mkdir(parents=True, exist_ok=True)
    k = spec.num_classes
    (folder / "metrics.json").write_text(json.dumps({
        "model": ev.model.description, "run_id": ev.model.run_id,
        "photos": ev.photos_source, "evaluated": len(ev.photos),
        "threshold": ev.model.threshold, "threshold_source": ev.model.threshold_source,
        "metrics": ev.metrics, "answers": ev.answers,
        "skipped": [{"file": str(p), "reason": why} for p, why in ev.skipped]}, indent=2) + "\n",
        encoding="utf-8")
    with (folder / "predictions.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "class", "answer", "predicted", "probability",
                         "reject_probability", *(f"p_{c}" for c in spec.output_classes)])
        for photo, p in zip(ev.photos, ev.probs, strict=True):
            d = decide(p, ev.model.threshold, k)
            best = int(np.argmax(p[:k]))
            writer.writerow([str(photo.path), photo.truth, d.answer.value, spec.classes[best],
                             f"{p[best]:.6f}", f"{p[k]:.6f}" if spec.reject_class else "",
                             *(f"{v:.6f}" for v in p)])
    matrix = torch.from_numpy(ev.matrix)
    confusion_png(matrix, ev.names, f"confusion: {len(ev.photos)} photos (rows: true, "
                                    "columns: arg-max output)", folder / "confusion.png")
    with (folder / "confusion.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["true \\ predicted", *ev.names])
        writer.writerows([name, *map(int, row)] for name, row in zip(ev.names, ev.matrix,
                                                                    strict=True))
    per_class_csv(matrix, ev.names, folder / "per_class.csv")
    return [folder / name for name in FILES]


def run(cfg: DictConfig) -> Evaluation:
    """The job behind ``scripts/evaluate.py``."""
    e, tracking = cfg.evaluate, cfg.logger
    folder = Path(cfg.paths.output_dir)
    with tempfile.TemporaryDirectory(prefix="fitlens-eval-") as tmp:
        model = load_model(e, tracking, Path(tmp))
        photos, source = load_photos(e, model, tracking, Path(tmp))
        ev = evaluate(model, photos, source, folder)
    ev.files = write(ev)
    if e.get("log_to_run"):
        if ev.model.run_id is None:
            raise ValueError("evaluate.log_to_run=true: this model has no MLflow run to log to "
                             "(a checkpoint trained with logger=csv?)")
        ev.logged_to = log_evaluation(tracking.tracking_uri, ev.model.run_id, folder, ev.metrics)
    return ev


def summary_lines(ev: Evaluation) -> list[str]:
    """What a person reads after an evaluation: model, photos, threshold, scores, answers,
    files (full paths)."""
    known = int((ev.labels < ev.model.spec.num_classes).sum())
    lines = [f"model      {ev.model.description}",
             f"photos     {ev.photos_source}: {len(ev.photos)} evaluated ({known} of the known "
             f"classes, {len(ev.photos) - known} other exercises), {len(ev.skipped)} skipped",
             f"threshold  {ev.model.threshold:.3f} ({ev.model.threshold_source})"]
    names = [n for n in ORDER if n in ev.metrics]
    names += [n for n in ev.metrics if n not in names]
    width = max(len(n) for n in names)
    lines.append(f"{'metric'.ljust(width)}  value")
    lines += [f"{n.ljust(width)}  {ev.metrics[n]:.3f}" for n in names]
    a = ev.answers
    lines.append(f"answers    known-class photos: {a['known']['right']} right, "
                 f"{a['known']['wrong']} wrong, {a['known']['not_sure']} not sure, "
                 f"{a['known']['not_one_i_know']} none of the known exercises")
    if len(ev.photos) > known:
        lines.append(f"           other exercises: {a['other']['accepted']} taken for an "
                     f"exercise, {a['other']['not_sure']} not sure, "
                     f"{a['other']['not_one_i_know']} none of the known exercises")
    lines.append(f"folder     {ev.folder.resolve()}  ({', '.join(p.name for p in ev.files)})")
    if ev.logged_to:
        lines.append(f"MLflow     logged to run {ev.model.run_id} under {ev.logged_to}/ "
                     "(metrics eval/*)")
    return lines


def report(ev: Evaluation) -> None:
    for line in summary_lines(ev):
        log.info("%s", line)
