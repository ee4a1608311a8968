"""What the config must get right before a job starts: values that libraries would reject late
(after hours of training) or with a message that hides where the value came from, and a run
folder of the job's own.

Run folders: ``conf/hydra/default.yaml`` names them ``${fitlens.claim_dir:<outputs>/runs/<time>}``.
The time has one-second resolution, so two jobs started in the same second would otherwise share
one folder (config, log, ``split.csv`` and ``last.ckpt`` mixed). :func:`claim_dir` creates the
folder itself, atomically, and takes ``<time>_2``, ``<time>_3``, ... when another job already did.
"""

from __future__ import annotations

import itertools
import math
import posixpath
import re
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

#: The input side a phone model is trained for: 224 is the default; 1024 is 20x its compute.
IMAGE_SIZE_RANGE = (8, 1024)
#: The metric names a class name becomes part of (fitlens.metrics.scores, per split).
CLASS_METRIC = "{split}/acc_{name}"
METRIC_SPLITS = ("train", "val", "test", "oof")
#: MLflow's own rule for metric names (mlflow.utils.validation, POSIX): these characters only,
#: no path tricks (the name must equal its normpath), at most 250 characters.
MLFLOW_METRIC_NAME = re.compile(r"[/\w.\- :]*")
MLFLOW_MAX_KEY_LENGTH = 250
CLAIM_DIR_RESOLVER = "fitlens.claim_dir"

_claimed: dict[str, str] = {}


def claim_dir(path: str) -> str:
    """``path``, or the first free ``path_2``, ``path_3``, ...: a folder this process created.

    ``mkdir`` without ``exist_ok`` is atomic, also between processes and on a shared file
    system, so no two jobs get the same folder. Asked again for the same ``path`` (Hydra resolves
    the run dir more than once), the process gets the folder it already claimed.
    """
    if path in _claimed:
        return _claimed[path]
    base = Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        candidate = base if n == 1 else base.with_name(f"{base.name}_{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        _claimed[path] = str(candidate)
        return _claimed[path]
    raise AssertionError("unreachable")


class RunDirResolver(Callback):
    """Registers :func:`claim_dir` as ``${fitlens.claim_dir:...}`` for ``hydra.run.dir`` and
    ``hydra.sweep.dir``. A Hydra callback because Hydra builds its callbacks after composing the
    config and before it resolves the job's folder (``conf/hydra/default.yaml``)."""

    def __init__(self) -> None:
        OmegaConf.register_new_resolver(CLAIM_DIR_RESOLVER, claim_dir, replace=True,
                                        use_cache=True)


def metric_name_problem(name: str) -> str | None:
    """Why MLflow would refuse ``name`` as a metric name (None: it accepts it)."""
    if not MLFLOW_METRIC_NAME.fullmatch(name):
        return ("MLflow metric names may only contain letters, digits, underscores, dashes, "
                "periods, spaces, colons and slashes")
    normalised = posixpath.normpath(name)
    if normalised != name or normalised == "." or normalised.startswith(("..", "/")):
        return f"MLflow treats metric names as paths, and this one would become {normalised!r}"
    if len(name) > MLFLOW_MAX_KEY_LENGTH:
        return f"MLflow metric names are at most {MLFLOW_MAX_KEY_LENGTH} characters"
    return None


def _check_class_names(cfg: DictConfig) -> None:
    """A tracked job logs ``<split>/acc_<class>``; MLflow would refuse a bad name only when the
    test metrics are logged, after all the training."""
    if not (cfg.get("logger") or {}).get("tracking_uri"):
        return
    for name in cfg.data.get("classes") or []:
        for split in METRIC_SPLITS:
            metric = CLASS_METRIC.format(split=split, name=name)
            problem = metric_name_problem(metric)
            if problem:
                safe = re.sub(r"_+", "_", re.sub(r"[^\w.-]", "_", str(name))).strip("_.")
                raise ValueError(
                    f"data.classes: class {name!r} gives the metric name {metric!r}, which "
                    f"MLflow refuses ({problem}); rename the class folder and its entry in "
                    f"data.classes (e.g. {safe or 'class_1'!r}), or train without MLflow: "
                    "logger=csv")


def _monitored(cfg: DictConfig) -> list[str]:
    """The metrics the configured callbacks watch (checkpoint choice, early stopping)."""
    callbacks = cfg.get("callbacks") or {}
    return [str(c.monitor) for c in callbacks.values()
            if isinstance(c, DictConfig) and c.get("monitor")]


def _check_validation_split(cfg: DictConfig) -> None:
    """A callback watching ``val/*`` fails at the end of the first epoch when there is no
    validation split (Lightning: "monitored metric was not found")."""
    watched = [m for m in _monitored(cfg) if m.startswith("val/")]
    if not watched or cfg.data.get("split_file"):
        return  # a split file brings its own validation rows
    if cfg.get("cv") and cfg.cv.get("folds"):
        raise ValueError(
            f"callbacks monitor {watched[0]} (monitor={cfg.get('monitor')}), but a "
            f"cross-validation job (cv.folds={cfg.cv.folds}) refits on every photo, with no "
            "validation split; use callbacks=last_only, as experiment=cv5 does")
    if not cfg.data.get("val_fraction"):
        raise ValueError(
            f"data.val_fraction={cfg.data.get('val_fraction')}: callbacks monitor "
            f"{watched[0]}, which needs a validation split; set data.val_fraction > 0 (e.g. "
            "0.2), or callbacks=last_only to keep the last epoch without monitoring")


def _finite_positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value) and value > 0


def validate_config(cfg: DictConfig) -> None:
    """Raise ValueError naming the setting for values that cannot work."""
    low, high = IMAGE_SIZE_RANGE
    checks = [
        ("optimizer.lr", cfg.optimizer.get("lr"), _finite_positive, "> 0 and finite"),
        ("data.batch_size", cfg.data.get("batch_size"), lambda v: isinstance(v, int) and v >= 1,
         "an integer >= 1"),
        ("data.image_size", cfg.data.get("image_size"),
         lambda v: isinstance(v, int) and low <= v <= high,
         f"an integer in [{low}, {high}] (the model's input side in pixels; 224 by default)"),
        ("trainer.max_epochs", cfg.trainer.get("max_epochs"),
         lambda v: v is None or v == -1 or (isinstance(v, int) and v >= 1),
         "an integer >= 1 (or -1 for no limit)"),
    ]
    for name, value, ok, expected in checks:
        try:
            good = ok(value)
        except TypeError:
            good = False
        if not good:
            raise ValueError(f"{name}={value!r}: expected {expected}")
    _check_validation_split(cfg)
    _check_class_names(cfg)
