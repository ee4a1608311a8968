"""Model quality per recipe: the project's cross-validation job, as users run it.

Each row is one ``fitlens.train.run`` with ``cv.folds=k`` (``experiment=cv5`` plus the row's
recipe, :mod:`fitlens.bench.recipes`): k group folds, then a refit on every photo. Every row gets
the same folds: they depend only on the photos, ``seed`` and ``data.folds``, which the job sets
from ``cv.folds`` and the benchmark never overrides. The scores are the job's own ``oof/*``
metrics (:mod:`fitlens.crossval`, one definition in :mod:`fitlens.metrics`): each fold's
macro-F1, the out-of-fold macro-F1 over every photo with its 90% group-bootstrap interval, reject
AUROC (known photos against photos of other exercises), and what the threshold chosen on the
out-of-fold predictions lets through.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from fitlens.bench.configs import compose_config
from fitlens.bench.recipes import Recipe
from fitlens.models.backbones import PretrainedWeightsUnavailable
from fitlens.train import run

log = logging.getLogger(__name__)

#: Where a fold's last checkpoint is (cv5's callbacks keep the last epoch of every fold).
FOLD_CHECKPOINT = Path("checkpoints") / "last.ckpt"


@dataclass(frozen=True)
class QualitySettings:
    folds: int = 5
    #: None = each recipe's own trainer.max_epochs.
    epochs: int | None = None


@dataclass
class RecipeQuality:
    recipe: Recipe
    #: Why the job did not run (e.g. no pretrained weights on this machine).
    skipped: str | None = None
    #: The composed job config (its fold configs follow from it), and where the job wrote.
    cfg: DictConfig | None = None
    output_dir: Path | None = None
    folds: int = 0
    epochs: int | None = None
    seconds: float | None = None
    #: The job's ``oof/*`` metrics (``TrainResult.oof_metrics``).
    oof: dict[str, float] = field(default_factory=dict)

    def fold_dir(self, fold: int) -> Path:
        """``<job>/fold<i>``: the fold's split.csv and checkpoints (:func:`fitlens.crossval.
        fold_config`)."""
        if self.output_dir is None:
            raise ValueError(f"{self.recipe.name}: the cross-validation job did not run")
        return self.output_dir / f"fold{fold}"

    def fold_checkpoint(self, fold: int) -> Path:
        return self.fold_dir(fold) / FOLD_CHECKPOINT

    def split_csvs(self) -> list[Path]:
        return [self.fold_dir(f) / "split.csv" for f in range(self.folds)]

    @property
    def fold_f1(self) -> list[float]:
        """Macro-F1 of each fold's model on its test fold (known classes)."""
        values = [self.oof.get(f"oof/fold{f}_f1_macro") for f in range(self.folds)]
        return [v for v in values if v is not None]

    def to_dict(self) -> dict[str, Any]:
        f1 = np.array(self.fold_f1)
        o = self.oof
        return {
            "name": self.recipe.name, "backbone": self.recipe.backbone, "pose": self.recipe.pose,
            "command": self.recipe.command, "skipped": self.skipped, "folds": self.folds,
            "epochs": self.epochs, "seed": None if self.cfg is None else int(self.cfg.seed),
            "job_seconds": self.seconds,
            "output_dir": None if self.output_dir is None else str(self.output_dir),
            "fold_f1_macro": f1.tolist(),
            "f1_macro_mean": float(f1.mean()) if len(f1) else None,
            "f1_macro_std": float(f1.std(ddof=1)) if len(f1) > 1 else None,
            "oof_f1_macro": o.get("oof/f1_macro"),
            "oof_f1_macro_low": o.get("oof/f1_macro_low"),
            "oof_f1_macro_high": o.get("oof/f1_macro_high"),
            "reject_auroc": o.get("oof/reject_auroc"),
            "threshold": o.get("oof/threshold"),
            "known_accepted": o.get("oof/coverage_at_threshold"),
            "other_accepted": o.get("oof/other_accepted_at_threshold"),
            "precision_at_threshold": o.get("oof/precision_at_threshold"),
            "oof_metrics": dict(o)}


def _first_sentences(message: str) -> str:
    """The error's first line without a trailing "do one of:" that introduces the remedies."""
    line = message.splitlines()[0]
    return line.rsplit(". ", 1)[0] + "." if line.endswith(":") and ". " in line else line


def missing_weights(cfg: DictConfig) -> str | None:
    """Why the model's pretrained parts cannot be had here (None: they can): a random-init
    score would say nothing about the recipe, so such a row is skipped with this reason."""
    parts = [cfg.model.backbone, *([cfg.model.pose] if "pose" in cfg.model else [])]
    for part in parts:
        try:
            instantiate(part)
        except InstantiationException as exc:
            if not isinstance(exc.__cause__, PretrainedWeightsUnavailable):
                raise
            return _first_sentences(str(exc.__cause__))
    return None


def job_config(conf_dir: Path, overrides: Sequence[str], recipe: Recipe, workdir: Path,
               settings: QualitySettings) -> DictConfig:
    """The recipe's cross-validation job: CSV logger (no MLflow store or registered versions
    for a benchmark), ``cv.folds``, no progress bar."""
    epochs = [] if settings.epochs is None else [f"trainer.max_epochs={settings.epochs}"]
    return compose_config(conf_dir, "train", [
        *overrides, *recipe.train_overrides(cross_validate=True), "logger=csv",
        f"cv.folds={settings.folds}", *epochs, "+trainer.enable_progress_bar=false",
    ], workdir / recipe.name)


def recipe_quality(conf_dir: Path, overrides: Sequence[str], recipe: Recipe, workdir: Path,
                   settings: QualitySettings) -> RecipeQuality:
    """Run the recipe's cross-validation job; skipped (with the reason) if its pretrained
    weights are not on this machine."""
    cfg = job_config(conf_dir, overrides, recipe, workdir, settings)
    quality = RecipeQuality(recipe, cfg=cfg, epochs=int(cfg.trainer.max_epochs))
    quality.skipped = missing_weights(cfg)
    if quality.skipped:
        return quality
    log.info("quality: %s, %d-fold cross-validation then a refit", recipe.name, settings.folds)
    start = time.perf_counter()
    result = run(cfg)
    quality.seconds = time.perf_counter() - start
    quality.output_dir = Path(result.output_dir)
    quality.folds = int(cfg.cv.folds)
    quality.oof = dict(result.oof_metrics)
    return quality
