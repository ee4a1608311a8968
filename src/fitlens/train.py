"""The training job: config in, trained and tested classifier out.

``cv.folds=k`` (``experiment=cv5``) makes it a cross-validation job instead: k group folds, then
a refit on every photo (:mod:`fitlens.crossval`).
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig

from fitlens import crossval
from fitlens.config import validate_config
from fitlens.console import EpochTable, FitHistory, training_display
from fitlens.data.datamodule import ExerciseDataModule
from fitlens.export.threshold import ThresholdSettings
from fitlens.models.checkpoint import safe_load
from fitlens.models.classifier import ExerciseClassifier
from fitlens.reports import write_oof_reports, write_run_reports
from fitlens.tracking.registry import MODEL_RUN_TAG
from fitlens.tracking.runs import Tracker
from fitlens.tracking.ui import run_url

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a run produced; ``metric`` is what a sweep optimises."""

    metric: float | None
    best_checkpoint: str | None
    output_dir: str
    val_metrics: dict[str, float] = field(default_factory=dict)
    test_metrics: dict[str, float] = field(default_factory=dict)
    #: A cross-validation job's ``oof/*`` metrics (and the threshold they give).
    oof_metrics: dict[str, float] = field(default_factory=dict)
    #: The MLflow run, its page in the UI and the registered model version (None without
    #: tracking: logger=csv).
    mlflow_run_id: str | None = None
    mlflow_url: str | None = None
    model_version: str | None = None
    registered_model: str | None = None
    #: The epochs as the console showed them (best and last, why the fit stopped).
    history: FitHistory | None = None
    #: The store, for the summary's "how to open the UI" (None without tracking).
    tracking_uri: str | None = None


@dataclass
class FittedJob:
    """One fit (a fold, a refit or a plain run) with the objects that made it."""

    result: TrainResult
    module: ExerciseClassifier
    datamodule: ExerciseDataModule


def _scalars(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def build(cfg: DictConfig) -> tuple[ExerciseDataModule, ExerciseClassifier, pl.Trainer]:
    """Instantiate datamodule, model, callbacks, loggers and trainer from the config."""
    datamodule = instantiate(cfg.data, _convert_="all")
    # The contract (classes, reject class, size, resize) is the data's; the model is built for it.
    model = instantiate(cfg.model, optimizer=cfg.optimizer, scheduler=cfg.scheduler,
                        _partial_=True)(spec=datamodule.spec)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    # What the console shows is not a config choice: epoch lines always, a bar on a terminal.
    shown, live_bar = training_display(bool(cfg.trainer.get("enable_progress_bar", True)))
    # The logger group holds Lightning loggers (entries with a _target_) and, for MLflow, the
    # tracking settings (tracking_uri, ...), which fitlens.tracking reads.
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()
               if isinstance(c, DictConfig) and "_target_" in c]
    trainer = instantiate(cfg.trainer, callbacks=[*callbacks, *shown], logger=loggers or False,
                          enable_progress_bar=live_bar)
    return datamodule, model, trainer


def run(cfg: DictConfig) -> TrainResult:
    """Seed, fit, then test the best checkpoint; tracked in MLflow if ``logger.tracking_uri``.

    With ``cv.folds`` set: :func:`cross_validate`.
    """
    validate_config(cfg)
    if cfg.get("cv") and cfg.cv.get("folds"):
        return cross_validate(cfg)
    # A checkpoint to resume is read first: a corrupt one (say, cut short by kill -9) fails now,
    # naming the file, and its MLflow run id lets the resumed job continue that run.
    resume = safe_load(cfg.ckpt_path) if cfg.get("ckpt_path") else None
    # Connects (or fails) before anything is trained.
    tracker = _tracker(cfg)
    return fit_job(cfg, tracker, resume=resume if isinstance(resume, dict) else None).result


def _tracker(cfg: DictConfig) -> Tracker | None:
    """The job's MLflow tracker; none for a smoke test (``trainer.fast_dev_run``), which, as
    Lightning does with its loggers, records nothing."""
    if cfg.trainer.get("fast_dev_run"):
        log.info("trainer.fast_dev_run: a smoke test, not tracked in MLflow")
        return None
    return Tracker.from_config(cfg)


def fit_job(cfg: DictConfig, tracker: Tracker | None, *, resume: dict[str, Any] | None = None,
            parent_run_id: str | None = None, run_name: str | None = None,
            log_model: bool = True, register: bool | None = None) -> FittedJob:
    """One tracked fit (and test): a plain run, a fold or a refit."""
    pl.seed_everything(cfg.seed, workers=True)
    datamodule, model, trainer = build(cfg)
    if tracker is None:
        return FittedJob(_fit_and_test(cfg, datamodule, model, trainer), model, datamodule)
    with tracker.run(trainer, datamodule, resume, parent_run_id=parent_run_id,
                     run_name=run_name) as tracked:
        result = _fit_and_test(cfg, datamodule, model, trainer)
        result.mlflow_run_id = tracked.run_id
        result.mlflow_url = run_url(tracker.settings.tracking_uri, tracker.experiment,
                                    tracked.run_id)
        result.tracking_uri = tracker.settings.tracking_uri
        result.model_version = tracked.log_result(
            model, datamodule, result.best_checkpoint, result.val_metrics, log_model=log_model,
            register=register)
        if result.model_version is not None:
            result.registered_model = tracker.settings.registered_model
    return FittedJob(result, model, datamodule)


def _fit_and_test(cfg: DictConfig, datamodule: pl.LightningDataModule,
                  model: pl.LightningModule, trainer: pl.Trainer) -> TrainResult:
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if checkpoint and checkpoint.best_model_path else None
    val = _scalars({k: v for k, v in trainer.callback_metrics.items() if k.startswith("val/")})
    if checkpoint is not None and checkpoint.best_model_score is not None:
        val[f"best_{checkpoint.monitor}"] = float(checkpoint.best_model_score)
    test: dict[str, float] = {}
    if cfg.get("test"):
        results = trainer.test(model, datamodule=datamodule, ckpt_path=best, verbose=False,
                               weights_only=True)
        test = _scalars(results[0]) if results else {}
    metrics = {**val, **test}
    optimized = cfg.get("optimized_metric")
    metric = val.get(f"best_{optimized}", metrics.get(optimized)) if optimized else None
    out_dir = Path(cfg.paths.output_dir)
    if trainer.is_global_zero:
        write_run_reports(model, datamodule.samples, out_dir)
    table = next((c for c in trainer.callbacks if isinstance(c, EpochTable)), None)
    return TrainResult(metric=metric, best_checkpoint=best, output_dir=str(out_dir),
                       val_metrics=val, test_metrics=test,
                       history=table.history if table else None)


def cross_validate(cfg: DictConfig) -> TrainResult:
    """k group folds (each photo predicted once, by a model that never saw its variant), then a
    refit on every photo with the same recipe; only the refit is registered, carrying the
    out-of-fold metrics, predictions and threshold (see :mod:`fitlens.crossval`)."""
    if cfg.get("ckpt_path"):
        raise ValueError("ckpt_path: resuming is for a single run; a cross-validation job "
                         "(cv.folds) starts its folds afresh")
    folds = int(cfg.cv.folds)
    if folds < 2:
        raise ValueError(f"cv.folds={folds}: expected null or an integer >= 2")
    tracker = _tracker(cfg)
    out_dir = Path(cfg.paths.output_dir)
    with tracker.parent_run(f"cv{folds}") if tracker else nullcontext() as parent_id:
        oof = crossval.OutOfFold.empty()
        spec = None
        for fold in range(folds):
            job = fit_job(crossval.fold_config(cfg, fold), tracker, parent_run_id=parent_id,
                          run_name=f"fold {fold}", log_model=False, register=False)
            outputs = job.module.test_outputs
            samples = job.datamodule.samples["test"]
            if [s.label for s in samples] != outputs["labels"].tolist():
                raise RuntimeError("test predictions are not in file order (distributed "
                                   "test?); cross-validation needs them per photo")
            oof.extend([str(s.path) for s in samples], [s.class_name for s in samples],
                       [s.group for s in samples], fold, outputs["probs"].numpy().astype(
                           np.float64), outputs["labels"].numpy())
            spec = job.module.spec
            log.info("fold %d/%d: test %s", fold + 1, folds,
                     {k: round(v, 3) for k, v in job.result.test_metrics.items()
                      if k in ("test/f1_macro", "test/acc", "test/reject_auroc")})
        metrics = crossval.oof_metrics(oof, spec, int(cfg.seed))
        choice = crossval.oof_threshold(oof, spec, ThresholdSettings.from_config(cfg.threshold))
        metrics.update({"oof/threshold": choice.threshold,
                        "oof/precision_at_threshold": choice.point.precision,
                        "oof/precision_lower_at_threshold": choice.point.precision_lower,
                        "oof/coverage_at_threshold": choice.point.coverage})
        if choice.point.other_accepted_fraction is not None:
            metrics["oof/other_accepted_at_threshold"] = choice.point.other_accepted_fraction
        metrics = {k: v for k, v in metrics.items() if np.isfinite(v)}
        oof_csv = crossval.write_oof_csv(oof, spec.output_classes, out_dir / crossval.OOF_FILE)
        write_oof_reports(crossval.confusion_matrix(oof, spec), spec.output_classes, out_dir)
        refit = fit_job(crossval.fold_config(cfg, None), tracker, parent_run_id=parent_id,
                        run_name="refit", log_model=True, register=None)
        if tracker is not None and parent_id is not None:
            tracker.log_cross_validation(parent_id, refit.result.mlflow_run_id, metrics, oof_csv,
                                         crossval.confusion_matrix(oof, spec), spec)
            # A sweep registers its best job from the run that holds the job's model.
            tracker.client.set_tag(parent_id, MODEL_RUN_TAG, refit.result.mlflow_run_id)
    optimized = cfg.get("optimized_metric")
    result = refit.result
    result.oof_metrics = metrics
    result.metric = metrics.get(optimized) if optimized else None
    result.output_dir = str(out_dir)
    return result
