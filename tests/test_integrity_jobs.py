"""A job's own folder, and settings that would fail only after training, checked before it."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from mlflow.exceptions import MlflowException
from mlflow.utils.validation import _validate_metric

from fitlens.config import RunDirResolver, metric_name_problem, validate_config
from fitlens.train import run
from tests.conftest import ROOT, compose_config

# --- run folders -------------------------------------------------------------------------------


def _claim_the_next_minute(folder: Path) -> set[Path]:
    """Folders of "another job" for every second of the next minute, each with a file in it."""
    now = datetime.datetime.now()
    taken = set()
    for second in range(60):
        path = folder / (now + datetime.timedelta(seconds=second)).strftime("%Y-%m-%d_%H-%M-%S")
        path.mkdir(parents=True)
        (path / "other_job.txt").write_text("not yours\n")
        taken.add(path)
    return taken


def test_a_job_never_shares_the_folder_of_one_started_in_the_same_second(
        tmp_path: Path) -> None:
    """The default run and sweep folders are named by the second the job starts; here every
    such name is already another job's. (The jobs stop at once on a bad value: what matters
    is the folder Hydra gave them. HYDRA_FULL_ERROR keeps it: a job that stops on a user's
    mistake otherwise removes its folder when it made nothing, see fitlens.cli.)"""
    runs = _claim_the_next_minute(tmp_path / "outputs" / "runs")
    sweeps = _claim_the_next_minute(tmp_path / "outputs" / "multiruns")
    env = {**os.environ, "FITLENS_ROOT": str(tmp_path), "PYTHONWARNINGS": "ignore",
           "HYDRA_FULL_ERROR": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    jobs = [subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args, "logger=csv",
                              "optimizer.lr=-1"], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for args in ([], ["-m", "seed=1,2"])]
    for job in jobs:
        out, _ = job.communicate(timeout=300)
        assert "optimizer.lr=-1: expected > 0" in out, out[-2000:]
    for taken in (runs, sweeps):
        for path in taken:
            assert [p.name for p in path.iterdir()] == ["other_job.txt"], path
    (mine,) = [p for p in (tmp_path / "outputs" / "runs").iterdir() if p not in runs]
    assert mine.name.endswith("_2") and (mine / ".hydra" / "config.yaml").is_file()
    (sweep,) = [p for p in (tmp_path / "outputs" / "multiruns").iterdir() if p not in sweeps]
    assert sweep.name.endswith("_2") and {p.name for p in sweep.iterdir()} >= {"0", "1"}


@pytest.mark.parametrize(("config_name", "folder"), [("export", "exports"),
                                                  ("evaluate", "eval")])
def test_export_and_evaluate_jobs_claim_a_folder_of_their_own(
        config_name: str, folder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FITLENS_ROOT", str(tmp_path))
    taken = _claim_the_next_minute(tmp_path / "outputs" / folder)
    RunDirResolver()  # what conf/hydra/default.yaml's callback does before Hydra resolves
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name=config_name, return_hydra_config=True)
    mine = Path(cfg.hydra.run.dir)
    assert mine not in taken and mine.name.endswith("_2") and mine.is_dir()
    assert not any(mine.iterdir())


# --- settings that would fail after training ---------------------------------------------------


NAMES = ["squats", "lat pulldown (machine)", "Kniebeuge Ü 深蹲", "bench-press 2.0", "a:b",
         "a/b", "x/../y", "..", "./x", "a//b", "tab\there", "plus+", "hüft/ext",
         "x" * 241, "x" * 242]


@pytest.mark.parametrize("name", NAMES)
def test_the_metric_name_check_is_mlflows_rule(name: str) -> None:
    metric = f"test/acc_{name}"
    try:
        _validate_metric(metric, 0.5, 0, 0)  # what log_batch checks, length included
        accepted = True
    except MlflowException:
        accepted = False
    assert (metric_name_problem(metric) is None) == accepted, metric


def test_class_names_mlflow_refuses_stop_before_training(tiny_cfg) -> None:
    classes = "[squats,'lat pulldown (machine)']"
    cfg = tiny_cfg(f"data.classes={classes}")
    with pytest.raises(ValueError, match=r"data.classes: class 'lat pulldown \(machine\)' gives "
                                         r"the metric name 'train/acc_lat pulldown \(machine\)', "
                                         r"which MLflow refuses .*'lat_pulldown_machine'.*"
                                         "logger=csv"):
        run(cfg)
    assert not Path(cfg.paths.output_dir).exists(), "nothing was trained or written"
    validate_config(tiny_cfg(f"data.classes={classes}", "logger=csv"))  # no MLflow: fine


@pytest.mark.parametrize(("overrides", "message"), [
    (["optimizer.lr=inf"], "optimizer.lr=inf: expected > 0 and finite"),
    (["data.image_size=100000"], r"data.image_size=100000: expected an integer in \[8, 1024\]"),
    (["data.val_fraction=0"], "data.val_fraction=0: callbacks monitor val/f1_macro, which needs "
                              "a validation split; set data.val_fraction > 0 .* or "
                              "callbacks=last_only"),
    (["experiment=cv5", "callbacks=default"], r"callbacks monitor val/f1_macro .* a "
                                              r"cross-validation job \(cv.folds=5\) refits .*"
                                              "callbacks=last_only"),
])
def test_settings_that_would_fail_after_training_stop_before_it(
        tiny_cfg, overrides: list[str], message: str) -> None:
    cfg = tiny_cfg(*overrides)
    with pytest.raises(ValueError, match=message):
        run(cfg)
    assert not Path(cfg.paths.output_dir).exists(), "nothing was trained or written"


@pytest.mark.parametrize("overrides", [
    ["data.val_fraction=0", "callbacks=last_only"], ["experiment=cv5"],
    ["data.val_fraction=0", "callbacks=none"], ["data.image_size=1024"],
    ["experiment=[cv5,linear_probe]"]])
def test_settings_that_work_pass(tmp_path: Path, overrides: list[str]) -> None:
    validate_config(compose_config(overrides, output_dir=tmp_path))
