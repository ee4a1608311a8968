"""The training job: config in, trained and tested classifier out."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig

from fitlens.config import validate_config
from fitlens.models.checkpoint import safe_load
from fitlens.tracking.runs import Tracker

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a run produced; ``metric`` is what a sweep optimises."""

    metric: float | None
    best_checkpoint: str | None
    output_dir: str
    val_metrics: dict[str, float] = field(default_factory=dict)
    test_metrics: dict[str, float] = field(default_factory=dict)
    #: The MLflow run and registered model version (None without tracking: logger=csv).
    mlflow_run_id: str | None = None
    model_version: str | None = None


def _scalars(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def build(cfg: DictConfig) -> tuple[pl.LightningDataModule, pl.LightningModule, pl.Trainer]:
    """Instantiate datamodule, model, callbacks, loggers and trainer from the config."""
    datamodule = instantiate(cfg.data, _convert_="all")
    model = instantiate(cfg.model, optimizer=cfg.optimizer, scheduler=cfg.scheduler)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    # The logger group holds Lightning loggers (entries with a _target_) and, for MLflow, the
    # tracking settings (tracking_uri, ...), which fitlens.tracking reads.
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()
               if isinstance(c, DictConfig) and "_target_" in c]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return datamodule, model, trainer


def run(cfg: DictConfig) -> TrainResult:
    """Seed, fit, then test the best checkpoint; tracked in MLflow if ``logger.tracking_uri``."""
    validate_config(cfg)
    # A checkpoint to resume is read first: a corrupt one (say, cut short by kill -9) fails now,
    # naming the file, and its MLflow run id lets the resumed job continue that run.
    resume = safe_load(cfg.ckpt_path) if cfg.get("ckpt_path") else None
    # Connects (or fails) before anything is trained.
    tracker = Tracker.from_config(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule, model, trainer = build(cfg)
    if tracker is None:
        return _fit_and_test(cfg, datamodule, model, trainer)
    with tracker.run(trainer, datamodule, resume if isinstance(resume, dict) else None) as tracked:
        result = _fit_and_test(cfg, datamodule, model, trainer)
        result.mlflow_run_id = tracked.run_id
        result.model_version = tracked.log_result(model, datamodule, result.best_checkpoint,
                                                  result.val_metrics)
    return result


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
    return TrainResult(metric=metric, best_checkpoint=best,
                       output_dir=str(Path(cfg.paths.output_dir)), val_metrics=val,
                       test_metrics=test)
