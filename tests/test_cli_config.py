"""Settings a user reaches for first: debug presets, fast_dev_run, and a monitor whose mode
(min/max) follows it."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate

from fitlens.train import run
from tests.conftest import compose_config
from tests.test_cli_errors import run_entry


@pytest.mark.parametrize(("monitor", "mode"), [
    ("val/f1_macro", "max"), ("val/loss", "min"), ("train/loss", "min"),
    ("val/other_accepted", "min"), ("val/reject_auroc", "max"), ("val/acc_squats", "max")])
def test_checkpoint_and_early_stopping_follow_the_monitor(monitor: str, mode: str,
                                                          tmp_path: Path) -> None:
    cfg = compose_config([f"monitor={monitor}"], output_dir=tmp_path)
    checkpoint = instantiate(cfg.callbacks.model_checkpoint)
    stopping = instantiate(cfg.callbacks.early_stopping)
    assert (checkpoint.monitor, checkpoint.mode) == (monitor, mode)
    assert (stopping.monitor, stopping.mode) == (monitor, mode)
    assert compose_config([f"monitor={monitor}", "monitor_mode=max"],
                          output_dir=tmp_path).callbacks.early_stopping.mode == "max"


@pytest.mark.parametrize("preset", ["fdr", "overfit", "limit"])
def test_debug_presets_train_on_cpu_without_mlflow(preset: str, tmp_path: Path) -> None:
    cfg = compose_config([f"debug={preset}"], output_dir=tmp_path)
    assert "tracking_uri" not in cfg.logger, "a debug run is never tracked or registered"
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.devices == 1
    assert cfg.task_name == "debug" and cfg.model.backbone.pretrained is False
    limits = {"fdr": ("fast_dev_run", True), "overfit": ("overfit_batches", 1),
              "limit": ("limit_train_batches", 2)}
    key, value = limits[preset]
    assert cfg.trainer[key] == value


def test_debug_fdr_runs_the_whole_job(tmp_path: Path, image_root: Path, tracking_uri: str,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FITLENS_ROOT", str(tmp_path))
    ran = run_entry("train.py", ["debug=fdr", f"data.root={image_root}", "model=mobilenet_v2",
                                 "model.backbone.pretrained=false", "data.image_size=32",
                                 "data.reject_root=null"], monkeypatch, capsys)
    assert ran.code == 0, ran.err
    assert "fast_dev_run: one batch of each split ran" in ran.out
    (folder,) = (tmp_path / "outputs" / "debug").iterdir()
    assert (folder / "results.csv").is_file() and (folder / "train.log").is_file()
    assert not Path(tracking_uri.removeprefix("sqlite:///")).exists(), "no MLflow store used"


def test_fast_dev_run_is_a_setting_and_is_not_tracked(tiny_cfg, tracking_uri: str) -> None:
    result = run(tiny_cfg("trainer.fast_dev_run=true"))
    assert result.mlflow_run_id is None and result.model_version is None
    assert [r["epoch"] for r in result.history.rows] == [1]
    assert not Path(tracking_uri.removeprefix("sqlite:///")).exists()
