"""One MLflow run per training job: what went in, what happened, what came out.

At the start: the resolved config (as params and ``config.yaml``), git state, data fingerprint,
Hydra overrides and output dir (as tags) and the split CSV. During fit: Lightning's metrics per
epoch. At the end: test metrics, plots, a per-class report, the model bundle and the MLflow model
(registered as a new version). A run that raises ends FAILED, Ctrl-C ends it KILLED; either way
the last checkpoint is logged, so the training done so far is not lost. Every checkpoint carries
its run's id, so ``ckpt_path=<checkpoint>`` continues the same run after ``kill -9`` (which leaves
it RUNNING); a run that ended is a record and never written again: resuming from its checkpoint
starts a new run tagged ``resumed_from``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import mlflow
import numpy as np
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only

from fitlens.console import CURVES_FILE, RESULTS_FILE
from fitlens.contract import InputSpec
from fitlens.data.images import preprocess
from fitlens.models.checkpoint import (
    bundle_digest,
    lightning_state_to_net_state,
    load_bundle,
    safe_load,
    save_bundle,
)
from fitlens.reports import PLOTS_DIR, REPORTS_DIR
from fitlens.tracking.plots import confusion_png, per_class_csv
from fitlens.tracking.provenance import config_params, data_fingerprint, git_state
from fitlens.tracking.registry import (
    BUNDLE_ARTIFACT,
    BUNDLE_DIGEST_TAG,
    CLASSES_TAG,
    FINGERPRINT_TAG,
    MODEL_RUN_TAG,
    log_model,
    register_mode,
    registers_itself,
)
from fitlens.tracking.store import (
    TrackingStoreError,
    connect,
    default_artifact_location,
    experiment_id,
    lost_store,
)
from fitlens.tracking.sweep import PARENT_RUN_ENV

log = logging.getLogger(__name__)

#: The key under which a Lightning checkpoint names the MLflow run that wrote it.
RUN_ID_KEY = "mlflow_run_id"
#: Tag of a run that resumed training from a checkpoint of an ended run: that run's id.
RESUMED_FROM_TAG = "resumed_from"
#: The run folder's files and folders for a person, logged as they are.
RUN_FILES = (RESULTS_FILE, CURVES_FILE)
RUN_FOLDERS = (PLOTS_DIR, REPORTS_DIR)


class RunIdInCheckpoint(pl.Callback):
    """Writes the run id into every checkpoint, so resuming from it continues that run."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        checkpoint[RUN_ID_KEY] = self.run_id


class RunMetricsLogger(Logger):
    """Lightning's logged metrics (train/val per epoch, lr, test) into an existing MLflow run.

    Lightning's own ``MLFlowLogger`` ends the run in ``finalize`` after ``fit``, before testing
    and artifacts; here the run's lifecycle, and its FAILED/KILLED status, belongs to
    :class:`Tracker`. The MLflow step is the 1-based epoch (``epoch()``), as on the console and
    in results.csv, so the UI's charts have epochs on the x axis, not optimizer steps.

    A resumed job skips metrics at Lightning steps before ``resume_step`` (the checkpoint's):
    Lightning closes the checkpoint's epoch again on resume, and the run has that epoch's values.
    """

    def __init__(self, client: MlflowClient, run_id: str, resume_step: int = 0,
                 epoch: Callable[[], int] | None = None) -> None:
        super().__init__()
        self._client = client
        self._run_id = run_id
        self._resume_step = resume_step
        self._epoch = epoch

    @property
    def name(self) -> str:
        return "mlflow"

    @property
    def version(self) -> str:
        return self._run_id

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if (step or 0) < self._resume_step:
            return
        now = int(time.time() * 1000)
        at = (step or 0) if self._epoch is None else self._epoch()
        self._client.log_batch(self._run_id, metrics=[
            Metric(key, float(value), now, at) for key, value in metrics.items()])

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Ignored: the run's params are the whole resolved config, logged by the tracker."""


def _epoch_number(trainer: pl.Trainer) -> int:
    """The 1-based number of the epoch running or being closed (the last one, after fit):
    Lightning counts an epoch "ready" before its first hook and "completed" after its last."""
    return trainer.fit_loop.epoch_progress.current.ready


def _overrides() -> str:
    """The job's command-line overrides (a sweep job's own included), '' outside Hydra."""
    if not HydraConfig.initialized():
        return ""
    return " ".join(HydraConfig.get().overrides.task)


class Tracker:
    """MLflow for one training job, configured by the ``logger`` config group."""

    def __init__(self, cfg: DictConfig, client: MlflowClient, experiment: str) -> None:
        self.cfg = cfg
        self.settings = cfg.logger
        self.client = client
        self.experiment = experiment

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Tracker | None:
        """A tracker if ``logger.tracking_uri`` is set (None: ``logger=csv``), connected now.

        Only the global-zero process tracks: DDP starts one copy of the job per device.
        """
        settings = cfg.get("logger") or {}
        uri = settings.get("tracking_uri")
        if not uri or rank_zero_only.rank != 0:
            return None
        register_mode(settings.get("register"))  # a typo fails now, not after training
        client = connect(uri)
        experiment = experiment_id(client, settings.experiment_name,
                                   default_artifact_location(uri,
                                                             settings.get("artifact_location"),
                                                             settings.experiment_name))
        return cls(cfg, client, experiment)

    def _resume_plan(self, run_id: str | None) -> tuple[str | None, str | None]:
        """For a checkpoint's run: ``(run to continue, ended run to link a new run to)``.

        Only an interrupted job is continued: its run is still RUNNING (``kill -9`` ends nothing)
        and has logged no model. A run that ended (FINISHED, FAILED, KILLED) is a record others
        rely on: a FINISHED run's bundle is a registered version's weights, and a FAILED or
        KILLED status says how that job ended. Resuming from its checkpoint is a new job, so a
        new run, tagged with the old one's id. A checkpoint from another store (or a deleted
        run) starts an unlinked new run.
        """
        if run_id is None:
            return None, None
        try:
            found = self.client.get_run(run_id)
        except MlflowException:
            found = None
        if found is None or found.info.lifecycle_stage != "active":
            log.warning("ckpt_path: its MLflow run %s is not in %s (or is deleted); the resumed "
                        "training is tracked as a new run", run_id, self.settings.tracking_uri)
            return None, None
        status = found.info.status
        if status == "RUNNING" and not self.client.list_artifacts(run_id, BUNDLE_ARTIFACT):
            return run_id, None
        log.warning("ckpt_path: its MLflow run %s %s; that run is left as it is, and the resumed "
                    "training is tracked as a new run tagged %s=%s", run_id,
                    "logged its model already" if status == "RUNNING" else f"ended {status}",
                    RESUMED_FROM_TAG, run_id)
        return None, run_id

    @contextmanager
    def parent_run(self, name: str) -> Iterator[str]:
        """A run that groups the runs of one job (a cross-validation's folds and refit); it ends
        as the job ends, and nests under a sweep's parent when the job is a sweep's."""
        mlflow.set_tracking_uri(self.settings.tracking_uri)
        overrides = _overrides()
        commit, dirty = git_state()
        tags = {"git_commit": commit, "git_dirty": dirty, "overrides": overrides,
                "output_dir": str(self.cfg.paths.output_dir), "job": name}
        parent = os.environ.get(PARENT_RUN_ENV)
        if parent:
            tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(self.experiment, run_name=f"{name}: {overrides}"
                                     if overrides else name, tags=tags)
        run_id = run.info.run_id
        status = "FAILED"
        try:
            self.client.log_batch(run_id, params=[
                Param(k, v) for k, v in config_params(self.cfg).items()])
            self.client.log_text(run_id, OmegaConf.to_yaml(self.cfg, resolve=True),
                                 "config.yaml")
            yield run_id
            status = "FINISHED"
        except (KeyboardInterrupt, SystemExit):
            status = "KILLED"
            raise
        finally:
            self.client.set_terminated(run_id, status)

    def log_cross_validation(self, parent_id: str, refit_id: str | None,
                             metrics: Mapping[str, float], oof_csv: Path,
                             matrix: np.ndarray, spec: InputSpec) -> None:
        """The out-of-fold results, on the parent and on the refit (the registered version's
        run): metrics, the per-photo predictions, the confusion matrix and per-class report."""
        now = int(time.time() * 1000)
        with TemporaryDirectory() as tmp:
            plots = Path(tmp)
            confusion_png(torch.from_numpy(matrix), spec.output_classes,
                          "confusion: out-of-fold", plots / "confusion_oof.png")
            per_class_csv(torch.from_numpy(matrix), spec.output_classes,
                          plots / "per_class_oof.csv")
            for run_id in filter(None, (parent_id, refit_id)):
                self.client.log_batch(run_id, metrics=[
                    Metric(k, float(v), now, 0) for k, v in metrics.items()])
                self.client.log_artifact(run_id, str(oof_csv))
                self.client.log_artifact(run_id, str(plots / "confusion_oof.png"), "plots")
                self.client.log_artifact(run_id, str(plots / "per_class_oof.csv"), "reports")

    @contextmanager
    def run(self, trainer: pl.Trainer, datamodule: pl.LightningDataModule,
            resume_from: Mapping[str, Any] | None = None, *, parent_run_id: str | None = None,
            run_name: str | None = None) -> Iterator[TrackedRun]:
        """The MLflow run around fit and test; ends FINISHED, FAILED (exception) or KILLED.

        ``resume_from`` (the checkpoint being resumed) continues the run that wrote it if that
        job was interrupted (:meth:`_resume_plan`): its metrics go on from the checkpoint's step
        and its status ends as this job ends. Otherwise the job gets a new run.
        ``parent_run_id`` nests the run (a fold under its cross-validation); without it a
        sweep's job nests under the sweep.
        """
        datamodule.setup("fit")  # the split and its fingerprint belong to the run's start
        overrides = _overrides()
        commit, dirty = git_state()
        fingerprint, n_files = data_fingerprint(
            s for split in datamodule.samples.values() for s in split)
        tags = {"git_commit": commit, "git_dirty": dirty, FINGERPRINT_TAG: fingerprint,
                CLASSES_TAG: json.dumps(list(datamodule.spec.output_classes)),
                "data_files": str(n_files), "overrides": overrides,
                "output_dir": str(self.cfg.paths.output_dir)}
        if commit != "unknown":
            tags["mlflow.source.git.commit"] = commit
        mlflow.set_tracking_uri(self.settings.tracking_uri)
        resumed, resumed_from = self._resume_plan((resume_from or {}).get(RUN_ID_KEY))
        if resumed:
            # The first job's tags stay; this job's own are kept beside them.
            tags = {f"resume.{k}": v for k, v in tags.items() if not k.startswith("mlflow.")}
            active = mlflow.start_run(run_id=resumed, tags=tags)
        else:
            if resumed_from:
                tags[RESUMED_FROM_TAG] = resumed_from
            # Not MLflow's random name: training seeded `random`, so every run would get the same.
            name = run_name or overrides or Path(self.cfg.paths.output_dir).name
            active = mlflow.start_run(experiment_id=self.experiment, run_name=name, tags=tags,
                                      parent_run_id=parent_run_id
                                      or os.environ.get(PARENT_RUN_ENV))
        tracked = TrackedRun(self, active.info.run_id, trainer)
        status = "FAILED"
        lost: TrackingStoreError | None = None
        try:
            tracked.log_inputs(datamodule, resumed=resumed is not None)
            resume_step = int(resume_from.get("global_step", 0)) if resumed else 0
            trainer.loggers = [*trainer.loggers, RunMetricsLogger(
                self.client, tracked.run_id, resume_step, epoch=lambda: _epoch_number(trainer))]
            trainer.callbacks.append(RunIdInCheckpoint(tracked.run_id))
            yield tracked
            status = "FINISHED"
        except (KeyboardInterrupt, SystemExit):
            # Lightning turns Ctrl-C inside fit/test into SystemExit after its graceful stop.
            status = "KILLED"
            raise
        except MlflowException as exc:
            lost = lost_store(self.settings.tracking_uri, tracked.run_id, exc,
                              tracked.last_checkpoint())
            if lost is None:
                raise
            raise lost from exc
        finally:
            if lost is None:
                if status != "FINISHED":
                    tracked.log_last_checkpoint()
                mlflow.end_run(status)
                log.info("MLflow run %s ended %s", tracked.run_id, status)
            else:
                # A gone store can take neither the checkpoint nor the status (the error names
                # the local checkpoint); the attempt only clears this process's active run.
                with suppress(MlflowException):
                    mlflow.end_run(status)


class TrackedRun:
    """The open run of one job: its inputs, results and, on failure, the last checkpoint."""

    def __init__(self, tracker: Tracker, run_id: str, trainer: pl.Trainer) -> None:
        self.tracker = tracker
        self.run_id = run_id
        self.trainer = trainer
        self.client = tracker.client

    def log_inputs(self, datamodule: pl.LightningDataModule, resumed: bool = False) -> None:
        """Config as params and ``config.yaml``, and the split. MLflow params are write-once, so a
        resumed job adds only new keys and keeps its whole config as ``config_resumed.yaml``."""
        cfg = self.tracker.cfg
        params = config_params(cfg)
        if resumed:
            logged = self.client.get_run(self.run_id).data.params
            params = {k: v for k, v in params.items() if k not in logged}
        self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in params.items()])
        self.client.log_text(self.run_id, OmegaConf.to_yaml(cfg, resolve=True),
                             "config_resumed.yaml" if resumed else "config.yaml")
        split_csv = getattr(datamodule, "split_csv", None)
        if split_csv and Path(split_csv).is_file():
            self.client.log_artifact(self.run_id, split_csv)

    def last_checkpoint(self) -> str | None:
        """The checkpoint a resume would start from (None: none saved yet)."""
        checkpoint = self.trainer.checkpoint_callback
        path = checkpoint and (checkpoint.last_model_path or checkpoint.best_model_path)
        return path if path and Path(path).is_file() else None

    def log_last_checkpoint(self) -> None:
        """What was trained so far, for a run that did not finish (resume with ckpt_path=...).

        Warns instead of raising: the exception that stopped the run is the one to report.
        """
        path = self.last_checkpoint()
        if path is None:
            log.warning("run %s: no checkpoint was saved before it stopped", self.run_id)
            return
        try:
            self.client.log_artifact(self.run_id, path, "checkpoints")
        except (MlflowException, OSError) as exc:
            log.warning("run %s: could not log the last checkpoint %s: %s", self.run_id, path,
                        exc)

    def log_result(self, module: pl.LightningModule, datamodule: pl.LightningDataModule,
                   best_checkpoint: str | None, val_metrics: Mapping[str, float], *,
                   log_model: bool = True, register: bool | None = None) -> str | None:
        """``best_<monitor>``, plots and reports, then the bundle and the (registered) model.

        The other val metrics are in the run already, per epoch. ``log_model=False`` (a
        cross-validation fold) stops after the reports; ``register=None`` follows
        ``logger.register`` (``best``: not in a sweep, which registers its best job when it
        ends). Returns the registered version, if one was made.
        """
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[
            Metric(k, float(v), now, 0) for k, v in val_metrics.items() if k.startswith("best_")])
        self._log_run_files()
        with TemporaryDirectory() as tmp:
            if not log_model:
                return None
            if best_checkpoint is None:
                log.warning("run %s: no checkpoint (callbacks.model_checkpoint is off), so no "
                            "bundle or model is logged", self.run_id)
                return None
            if register is None:
                register = registers_itself(self.tracker.settings.register,
                                            in_sweep=bool(os.environ.get(PARENT_RUN_ENV)))
            return self._log_model(module, datamodule, best_checkpoint,
                                   Path(tmp) / BUNDLE_ARTIFACT, register)

    def _log_run_files(self) -> None:
        """What the run folder shows a person (written by fitlens.console and fitlens.reports):
        results.csv, curves.png, the confusion matrices and the per-class reports. The job's
        folder is the Trainer's (a cross-validation fold has its own)."""
        folder = Path(self.trainer.default_root_dir)
        for name in RUN_FILES:
            if (folder / name).is_file():
                self.client.log_artifact(self.run_id, str(folder / name))
        for name in RUN_FOLDERS:
            if (folder / name).is_dir():
                self.client.log_artifacts(self.run_id, str(folder / name), name)

    def _log_model(self, module: pl.LightningModule, datamodule: pl.LightningDataModule,
                   best_checkpoint: str, folder: Path, register: bool) -> str | None:
        """The bundle (for export) and, rebuilt from it, the MLflow model (for the registry):
        both hold the best checkpoint's weights, and the bundle is proven loadable."""
        cfg = self.tracker.cfg
        state = lightning_state_to_net_state(safe_load(best_checkpoint), best_checkpoint)
        save_bundle(state, cfg.model, module.spec, module.backbone_name, folder)
        # Recorded before the bundle is uploaded and registered: the export refuses a bundle
        # whose files differ from it (fitlens.tracking.registry.resolve_model).
        self.client.set_tag(self.run_id, BUNDLE_DIGEST_TAG, bundle_digest(folder))
        self.client.log_artifacts(self.run_id, str(folder), BUNDLE_ARTIFACT)
        net, spec, _ = load_bundle(folder)
        example_file = next(s.path for split in ("test", "val", "train")
                            for s in datamodule.samples.get(split, []))
        settings = self.tracker.settings
        version = log_model(net, spec, preprocess(example_file, spec.resize),
                            settings.registered_model if register else None)
        self.client.set_tag(self.run_id, MODEL_RUN_TAG, self.run_id)
        return version
