"""Sweeps register their best job, not all: ``logger.register`` (best, all, none), how the best
job is chosen, and an Optuna search of cross-validation jobs through the real entry point."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from mlflow import MlflowClient

from fitlens.tracking.registry import MODEL_RUN_TAG, register_mode, registers_itself
from fitlens.tracking.runs import Tracker
from fitlens.tracking.sweep import JOB_TAG, SweepJob, best_job
from tests.conftest import TINY, compose_config
from tests.test_tracking_sweep import _runs, _train


@pytest.mark.parametrize(("value", "mode", "single_job", "sweep_job"), [
    ("best", "best", True, False), ("BEST", "best", True, False), ("all", "all", True, True),
    ("none", "none", False, False), (True, "all", True, True), (False, "none", False, False)])
def test_register_modes(value: object, mode: str, single_job: bool, sweep_job: bool) -> None:
    assert register_mode(value) == mode
    assert registers_itself(value, in_sweep=False) is single_job
    assert registers_itself(value, in_sweep=True) is sweep_job


def test_an_unknown_register_mode_stops_before_training(tmp_path: Path) -> None:
    cfg = compose_config(["logger.register=maybe"], output_dir=tmp_path)
    with pytest.raises(ValueError, match="logger.register='maybe': expected best .*, all "
                                         r"\(every job\) or none"):
        Tracker.from_config(cfg)


def _job(num: int, metric: float | None, **changes: object) -> SweepJob:
    job = SweepJob(num=num, overrides=[f"optimizer.lr={num}"], metric=metric,
                   status="COMPLETED", run_id=f"run{num}", run_status="FINISHED",
                   model_run_id=f"model{num}")
    for key, value in changes.items():
        setattr(job, key, value)
    return job


def test_best_job_follows_the_direction_and_skips_jobs_that_cannot_be_chosen() -> None:
    unusable = [_job(10, None, status="FAILED", run_id=None),
                _job(11, None), _job(12, math.nan), _job(13, 0.99, model_run_id=None),
                _job(14, 0.99, run_status="FAILED"), _job(15, 0.99, status="UNKNOWN")]
    assert [j.why_not_best() for j in unusable] == [
        "failed", "returned no metric", "returned nan", "no model logged", "run FAILED",
        "end not recorded"]
    jobs = [_job(0, 0.5), _job(1, 0.7), _job(2, 0.7), _job(3, 0.2), *unusable]
    assert best_job(jobs).num == 1, "highest; a tie goes to the earlier job"
    assert best_job(jobs, maximize=False).num == 3
    assert best_job(unusable) is None


def test_optuna_search_of_cross_validation_jobs_registers_the_best_refit(
        tmp_path: Path, image_root: Path, tracking_uri: str) -> None:
    # The cv5 preset's optimized_metric (oof/f1_macro) holds under hparams_search.
    out = _train(["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2",
                  "hydra.sweeper.sampler.n_startup_trials=1", "experiment=cv5", "cv.folds=2",
                  *TINY, f"data.root={image_root}",
                  f"logger.tracking_uri={tracking_uri}"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]

    runs = _runs(tracking_uri)
    (sweep,) = [r for r in runs if r.data.tags.get("sweep") == "true"]
    jobs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == sweep.info.run_id]
    assert len(jobs) == 2 and all(r.info.run_name.startswith("cv2") for r in jobs)
    returned = {r.info.run_id: json.loads(r.data.tags[JOB_TAG]) for r in jobs}
    assert {j["metric"] for j in returned.values()} == {
        r.data.metrics["oof/f1_macro"] for r in jobs}
    best = max(jobs, key=lambda r: (returned[r.info.run_id]["metric"],
                                    -returned[r.info.run_id]["num"]))

    # One version, from the best job's refit (the child run that holds its model).
    client = MlflowClient(tracking_uri)
    (version,) = client.search_model_versions("name='exercise-classifier'")
    refit = client.get_run(version.run_id)
    assert refit.info.run_name == "refit"
    assert refit.data.tags["mlflow.parentRunId"] == best.info.run_id
    assert best.data.tags[MODEL_RUN_TAG] == refit.info.run_id
    sweep = client.get_run(sweep.info.run_id)
    assert sweep.info.status == "FINISHED"
    assert sweep.data.tags["best.model_version"] == str(version.version)
    assert sweep.data.metrics["best/oof/f1_macro"] == best.data.metrics["oof/f1_macro"]
    assert sweep.data.params["optimizer.lr"] == best.data.params["optimizer.lr"]

    # The table shows each trial's sampled values, not the fixed command-line overrides.
    lines = out.stdout[out.stdout.index(f"sweep {sweep.info.run_id}: 2 job(s)"):].splitlines()
    assert lines[0].endswith("best = higher oof/f1_macro (the value each job returned)")
    for line, job in zip(lines[2:4], sorted(jobs, key=lambda r: returned[r.info.run_id]["num"]),
                         strict=True):
        assert job.info.run_id in line and ("best" in line.split()) == (job is best)
        assert f"optimizer.lr={job.data.params['optimizer.lr']}" in line
        assert "data.root" not in line and "cv.folds" not in line
    assert lines[4].startswith(f"registered exercise-classifier version {version.version}: "
                               f"the model of job {returned[best.info.run_id]['num']}")


@pytest.mark.parametrize("register", ["best", "all"])
def test_a_failed_job_is_shown_never_chosen_and_the_finished_best_is_kept(
        tmp_path: Path, image_root: Path, tracking_uri: str, register: str) -> None:
    out = _train(["-m", *TINY, f"data.root={image_root}", "optimizer.lr=1e-3,-1",
                  f"logger.register={register}", f"logger.tracking_uri={tracking_uri}"],
                 tmp_path)
    assert out.returncode != 0 and "optimizer.lr=-1" in out.stderr
    runs = _runs(tracking_uri)
    (sweep,) = [r for r in runs if r.data.tags.get("sweep") == "true"]
    (job,) = [r for r in runs if r is not sweep]
    assert sweep.info.status == "FAILED" and job.info.status == "FINISHED"
    (version,) = MlflowClient(tracking_uri).search_model_versions("name='exercise-classifier'")
    assert version.run_id == job.info.run_id
    assert MlflowClient(tracking_uri).get_run(sweep.info.run_id).data.tags[
        "best.model_version"] == str(version.version)

    lines = out.stdout[out.stdout.index(f"sweep {sweep.info.run_id}: 2 job(s)"):].splitlines()
    assert lines[2].split()[2:] == ["best", job.info.run_id, "optimizer.lr=0.001"]
    assert lines[3].split() == ["1", "-", "failed", "-", "optimizer.lr=-1"]
    done = {"best": f"registered exercise-classifier version {version.version}: the model of "
                    f"job 0 (run {job.info.run_id})",
            "all": f"logger.register=all: every job registered its model; job 0's is version "
                   f"{version.version}"}[register]
    assert lines[4] == f"{done} (the best of the jobs that finished before the sweep stopped)"
