"""A ``-m`` sweep as one parent MLflow run, with each job's run as its child; at its end a table
of the jobs, and (``logger.register=best``) only the best job's model registered.

Registered in ``conf/hydra/default.yaml`` (``hydra.callbacks``). The parent's id reaches the jobs
through an environment variable: Hydra's basic and Optuna launchers run jobs in this process, and
cluster launchers (submitit) hand the submitting process's environment to the jobs. As a job
ends, what it returned is written onto its run (``on_job_end`` runs where the job ran), so the
sweep's end reads every job's result from the store, whichever launcher ran it.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import numbers
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from rich.console import Console

# mlflow (and what imports it) is imported where it is used: Hydra builds this callback for
# every run, and mlflow takes seconds to import, which a plain run with a typo'd value should not
# wait for (fitlens.cli).
if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

log = logging.getLogger(__name__)

#: Set for the jobs of a sweep: the MLflow run id their runs nest under.
PARENT_RUN_ENV = "FITLENS_MLFLOW_PARENT_RUN_ID"
#: Tag on a job's top run, set as the job ends: its number, overrides, Hydra status and the
#: metric it returned (JSON).
JOB_TAG = "fitlens.sweep.job"
#: The jobs table, as printed, on the parent run.
TABLE_ARTIFACT = "sweep_jobs.txt"


@dataclass
class SweepJob:
    """One job of the sweep: what it returned and where its runs are."""

    #: Hydra's job number (None: a run under the sweep whose job end was not recorded).
    num: int | None
    overrides: list[str]
    #: What the job returned, the sweep's objective (None: failed, or returned no number).
    metric: float | None
    #: Hydra's job status (COMPLETED, FAILED), or UNKNOWN when its end was not recorded.
    status: str
    run_id: str | None = None
    run_status: str | None = None
    #: The run holding the job's MLflow model (a cross-validation's refit), if one was logged.
    model_run_id: str | None = None

    def why_not_best(self) -> str | None:
        """Why this job cannot be the sweep's best (None: it can)."""
        reasons = [
            (self.status == "FAILED", "failed"),
            (self.status != "COMPLETED", "end not recorded"),
            (self.metric is None, "returned no metric"),
            (self.metric is not None and not math.isfinite(self.metric),
             f"returned {self.metric}"),
            (self.run_id is None, "no MLflow run"),
            (self.run_status not in (None, "FINISHED"), f"run {self.run_status}"),
            (self.model_run_id is None, "no model logged"),
        ]
        return next((why for bad, why in reasons if bad), None)


def _number(value: Any) -> float | None:
    """A job's return value as the objective: a real number, else None (a list from a
    multi-objective search has no single best)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return None


def best_job(jobs: list[SweepJob], maximize: bool = True) -> SweepJob | None:
    """The job with the best returned metric among those that finished with a model (None if
    no job did); ties go to the earlier job, as in Optuna."""
    sign = 1 if maximize else -1
    candidates = [j for j in jobs if j.why_not_best() is None]
    return max(candidates, key=lambda j: (sign * j.metric, -j.num), default=None)


def _children(client: MlflowClient, parent_id: str) -> list[Run]:
    experiment = client.get_run(parent_id).info.experiment_id
    return client.search_runs([experiment],
                              filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")


def _job_of(run: Run) -> SweepJob:
    from fitlens.tracking.registry import MODEL_RUN_TAG

    tags = run.data.tags
    recorded = json.loads(tags[JOB_TAG]) if JOB_TAG in tags else {}
    return SweepJob(num=recorded.get("num"),
                    overrides=recorded.get("overrides", [tags.get("overrides", "")]),
                    metric=recorded.get("metric"), status=recorded.get("status", "UNKNOWN"),
                    run_id=run.info.run_id, run_status=run.info.status,
                    model_run_id=tags.get(MODEL_RUN_TAG))


class SweepParentRun(Callback):
    """Opens the parent run before the first job; after the last, prints the jobs table,
    registers the best job's model and records it on the parent, then closes the parent."""

    def __init__(self) -> None:
        self._client: MlflowClient | None = None
        self._run_id: str | None = None
        self._job_failed = False
        self._settings: DictConfig | None = None
        self._metric: str | None = None
        self._maximize = True
        #: Keys the sweep's command line sets to one value for every job (not shown per job).
        self._fixed: set[str] = set()
        #: Jobs that ended without a run to record them on (failed before tracking started).
        self._unrecorded: list[SweepJob] = []

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from fitlens.tracking.provenance import git_state
        from fitlens.tracking.registry import register_mode
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
            register_mode(settings.get("register"))
            client = connect(uri)
        except (TrackingStoreError, ValueError) as exc:
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
        self._settings = settings
        self._metric = config.get("optimized_metric")
        # The Optuna sweeper says which way is better; Hydra's basic sweeper has no direction.
        direction = str(config.hydra.sweeper.get("direction", "maximize")).lower()
        self._maximize = direction not in ("minimize", "min")
        self._fixed = {o.get_key_element() for o in OverridesParser.create().parse_overrides(
            list(config.hydra.overrides.task)) if not o.is_sweep_override()}
        os.environ[PARENT_RUN_ENV] = run.info.run_id
        # Hydra skips on_multirun_end when a job raises; the parent must not stay RUNNING.
        atexit.register(self._close_unfinished)
        log.info("MLflow sweep run %s in experiment %r (%s)", run.info.run_id,
                 settings.experiment_name, uri)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """Record the job's result on its top run. Runs where the job ran; in this process for
        local launchers, where it also catches jobs that failed before their own MLflow run
        started (a bad override value)."""
        from mlflow import MlflowClient

        failed = job_return.status == JobStatus.FAILED
        self._job_failed |= failed
        parent = os.environ.get(PARENT_RUN_ENV)
        uri = (config.get("logger") or {}).get("tracking_uri")
        if not parent or not uri:
            return
        job = SweepJob(num=int(config.hydra.job.num), overrides=list(job_return.overrides or []),
                       metric=None if failed else _number(job_return.return_value),
                       status=job_return.status.name)
        client = MlflowClient(uri)
        # The job's top run (a plain run, or a cross-validation's parent) is the sweep's child
        # that records this job's folder.
        output_dir = str(config.paths.output_dir)
        run = next((r for r in _children(client, parent)
                    if r.data.tags.get("output_dir") == output_dir), None)
        if run is None:
            self._unrecorded.append(job)
            return
        client.set_tag(run.info.run_id, JOB_TAG, json.dumps(
            {"num": job.num, "overrides": job.overrides, "metric": job.metric,
             "status": job.status}))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._client is None or self._run_id is None:
            return
        try:
            self._conclude(finished=True)
        finally:
            self._close("FINISHED")

    def _close_unfinished(self) -> None:
        """The sweep stopped early: FAILED if a job failed, else it was interrupted (KILLED)."""
        if self._client is None or self._run_id is None:
            return
        children = _children(self._client, self._run_id)
        failed = self._job_failed or any(c.info.status == "FAILED" for c in children)
        try:
            self._conclude(finished=False)
        finally:
            self._close("FAILED" if failed else "KILLED")

    def _jobs(self) -> list[SweepJob]:
        jobs = [_job_of(r) for r in _children(self._client, self._run_id)] + self._unrecorded
        return sorted(jobs, key=lambda j: (j.num is None, j.num or 0))

    def _conclude(self, finished: bool) -> None:
        """Print the jobs table and what was registered; record the best job on the parent."""
        jobs = self._jobs()
        best = best_job(jobs, self._maximize)
        if best is None:
            outcome = (f"no job finished with a model and a finite {self._metric or 'metric'}: "
                       "no best job, nothing registered by the sweep")
        else:
            outcome = self._record_best(best, finished)
        lines = [*self._table(jobs, best), outcome]
        self._client.log_text(self._run_id, "\n".join(lines) + "\n", TABLE_ARTIFACT)
        console = Console(soft_wrap=True)
        for line in lines:
            console.print(line, markup=False, highlight=False)

    def _own(self, job: SweepJob) -> str:
        """The job's overrides that tell it apart: those the sweep did not fix for every job."""
        return " ".join(o for o in job.overrides if o.split("=", 1)[0] not in self._fixed)

    def _table(self, jobs: list[SweepJob], best: SweepJob | None) -> list[str]:
        metric = self._metric or "returned"
        way = "higher" if self._maximize else "lower"
        rows = [("job", metric, "", "MLflow run", "overrides")]
        for job in jobs:
            rows.append(("?" if job.num is None else str(job.num),
                         "-" if job.metric is None else f"{job.metric:.4f}",
                         "best" if job is best else job.why_not_best() or "",
                         job.run_id or "-",
                         self._own(job)))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        title = (f"sweep {self._run_id}: {len(jobs)} job(s), best = {way} {metric} "
                 "(the value each job returned)")
        lines = [title]
        for row in rows:
            cells = (cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True))
            lines.append("  ".join(cells) + "  " + row[4])
        return lines

    def _record_best(self, best: SweepJob, finished: bool) -> str:
        """Register the best job's model as ``logger.register`` says, put its params, metric and
        version on the parent, and say what was done."""
        from mlflow.entities import Metric, Param, RunTag

        from fitlens.tracking.registry import (
            RegistryError,
            register_mode,
            register_run_model,
            version_from_run,
        )

        settings, client = self._settings, self._client
        name, mode = settings.registered_model, register_mode(settings.get("register"))
        version = None
        if mode == "best":
            try:
                version = register_run_model(settings.tracking_uri, name, best.model_run_id)
            except RegistryError as exc:
                outcome = f"error: job {best.num}'s model was not registered: {exc}"
            else:
                outcome = (f"registered {name} version {version}: the model of job {best.num} "
                           f"(run {best.model_run_id})")
        elif mode == "all":
            registered = version_from_run(client, name, best.model_run_id)
            version = None if registered is None else str(registered.version)
            outcome = (f"logger.register=all: every job registered its model; job {best.num}'s "
                       f"is version {version or '(none)'}")
        else:
            outcome = f"logger.register=none: nothing registered; the best is job {best.num}"
        if not finished:
            # Versions are only added, and promoting one is a separate step: the jobs that did
            # finish are not lost with the one that failed.
            outcome += " (the best of the jobs that finished before the sweep stopped)"
        tags = {"best.job": str(best.num), "best.run_id": best.run_id,
                "best.model_run_id": best.model_run_id,
                "best.overrides": self._own(best)}
        if version is not None:
            tags["best.model_version"] = version
        params = client.get_run(best.run_id).data.params
        client.log_batch(
            self._run_id, params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
            metrics=[Metric(f"best/{self._metric or 'returned'}", best.metric,
                            int(time.time() * 1000), 0)])
        return outcome

    def _close(self, status: str) -> None:
        if self._client is None or self._run_id is None:
            return
        self._client.set_terminated(self._run_id, status)
        os.environ.pop(PARENT_RUN_ENV, None)
        self._client, self._run_id = None, None
