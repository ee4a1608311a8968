"""A ``-m`` sweep as one parent MLflow run, with each job's run as its child.

Registered in ``conf/hydra/default.yaml`` (``hydra.callbacks``). The parent's id reaches the jobs
through an environment variable: Hydra's basic and Optuna launchers run jobs in this process, and
cluster launchers (submitit) hand the submitting process's environment to the jobs.
"""

from __future__ import annotations

import atexit
import logging
import os
from typing import TYPE_CHECKING, Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

#: Set for the jobs of a sweep: the MLflow run id their runs nest under.
PARENT_RUN_ENV = "FITLENS_MLFLOW_PARENT_RUN_ID"


class SweepParentRun(Callback):
    """Opens the parent run before the first job and closes it after the last."""

    def __init__(self) -> None:
        self._client: MlflowClient | None = None
        self._run_id: str | None = None
        self._job_failed = False

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Imported here: Hydra builds this callback for every run, and mlflow takes seconds to
        # import, which a plain run with a typo'd value should not wait for (fitlens.cli).
        from fitlens.tracking.provenance import git_state
        from fitlens.tracking.store import (
            TrackingStoreError,
            connect,
            default_artifact_location,
            experiment_id,
        )

        settings = config.get("logger") or {}
        uri = settings.get("tracking_uri")
        if not uri:
            return
        try:
            client = connect(uri)
        except TrackingStoreError as exc:
            # Hydra turns a callback's exceptions into warnings and would start every job
            # anyway; SystemExit is the one way to stop the sweep before its first job.
            raise SystemExit(f"error: {exc}") from exc
        experiment = experiment_id(client, settings.experiment_name,
                                   default_artifact_location(uri,
                                                             settings.get("artifact_location"),
                                                             settings.experiment_name))
        overrides = " ".join(config.hydra.overrides.task)
        commit, dirty = git_state()
        tags = {"sweep": "true", "overrides": overrides, "sweep_dir": str(config.hydra.sweep.dir),
                "git_commit": commit, "git_dirty": dirty}
        if commit != "unknown":
            tags["mlflow.source.git.commit"] = commit
        run = client.create_run(experiment, run_name=f"sweep: {overrides}" if overrides
                                else "sweep", tags=tags)
        self._client, self._run_id = client, run.info.run_id
        os.environ[PARENT_RUN_ENV] = run.info.run_id
        # Hydra skips on_multirun_end when a job raises; the parent must not stay RUNNING.
        atexit.register(self._close_unfinished)
        log.info("MLflow sweep run %s in experiment %r (%s)", run.info.run_id,
                 settings.experiment_name, uri)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        # Runs in this process for local launchers; also catches jobs that failed before their
        # own MLflow run started (a bad override value).
        self._job_failed |= job_return.status == JobStatus.FAILED

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._close("FINISHED")

    def _close_unfinished(self) -> None:
        """The sweep stopped early: FAILED if a job failed, else it was interrupted (KILLED)."""
        if self._client is None or self._run_id is None:
            return
        children = self._client.search_runs(
            [self._client.get_run(self._run_id).info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self._run_id}'")
        failed = self._job_failed or any(c.info.status == "FAILED" for c in children)
        self._close("FAILED" if failed else "KILLED")

    def _close(self, status: str) -> None:
        if self._client is None or self._run_id is None:
            return
        self._client.set_terminated(self._run_id, status)
        os.environ.pop(PARENT_RUN_ENV, None)
        self._client, self._run_id = None, None
