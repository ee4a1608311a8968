"""What a user reads while and after training: a line per epoch that survives a log file, why the
fit stopped, a summary with full paths, the MLflow link and the version, and a run folder with
the per-epoch table, curves and reports, with or without MLflow."""

from __future__ import annotations

import csv
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from fitlens import quiet
from fitlens.console import EpochTable, TerminalBar, training_display
from fitlens.train import run
from tests.conftest import ROOT, TINY


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_captured_training_log(tmp_path: Path, image_root: Path, tracking_uri: str) -> None:
    """``python train.py ... > log`` (not a terminal): one line per epoch, why early stopping
    stopped, and a summary with full paths, the run's link and its registered version."""
    env = {**os.environ, "FITLENS_ROOT": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    # min_delta 2: macro-F1 can never improve by that much, so early stopping ends epoch 2.
    done = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *TINY, f"data.root={image_root}",
         "trainer.max_epochs=4", "callbacks.early_stopping.patience=1",
         "+callbacks.early_stopping.min_delta=2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    header = next(line for line in out.splitlines() if "train/loss" in line)
    assert header.split() == ["epoch", "train/loss", "val/loss", "val/acc", "val/f1_macro",
                              "lr", "seconds"]
    epochs = re.findall(r"^\s+(\d)/4\s+(\d+\.\d{4})\s+(\d+\.\d{4})\s+(\d\.\d{3})\s+(\d\.\d{3})"
                        r"\s+(\d\.\de-\d\d)\s+\d+\.\ds", out, flags=re.M)
    assert [e[0] for e in epochs] == ["1", "2"], out
    assert ("early stopping after epoch 2: val/f1_macro did not improve for 1 epoch "
            "(callbacks.early_stopping.patience=1)") in out

    run_dir = next((tmp_path / "outputs" / "runs").iterdir())
    client = MlflowClient(tracking_uri)
    (mlflow_run,) = client.search_runs([client.get_experiment_by_name("fitlens").experiment_id])
    run_id = mlflow_run.info.run_id
    summary = out[out.index("── fitlens run: early stopping after epoch 2"):]
    assert "val, best epoch 1" in summary and "val, last epoch 2" in summary
    assert "test, best checkpoint" in summary
    assert re.search(rf"best checkpoint\s+{re.escape(str(run_dir))}/checkpoints/epoch000\.ckpt$",
                     summary, flags=re.M)
    assert re.search(rf"run folder\s+{re.escape(str(run_dir))}\s", summary)
    assert re.search(rf"MLflow run\s+{run_id}\s+http://127\.0\.0\.1:5000/#/experiments/"
                     rf"{mlflow_run.info.experiment_id}/runs/{run_id}", summary)
    assert re.search(r"registered\s+exercise-classifier version 1$", summary, flags=re.M)
    assert re.search(r'next\s+python scripts/promote\.py version=1 reason="', summary)
    for noise in ("…", "v_num", "litlogger", "Trainer.fit` stopped", "Seed set to"):
        assert noise not in out + done.stderr, noise
    assert "LeafSpec" not in done.stderr and "Traceback" not in done.stderr

    # The job's log file says the same, and the run folder has the table, curves and reports.
    assert re.search(r"\s2/4\s", (run_dir / "train.log").read_text())
    rows = _rows(run_dir / "results.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"seconds", "lr", "train/loss", "train/acc", "val/loss", "val/f1_macro"} <= set(rows[0])
    for name in ("curves.png", "plots/confusion_val.png", "plots/confusion_test.png",
                 "reports/per_class_test.csv"):
        assert (run_dir / name).is_file(), name

    # MLflow: opens on model training, charts per epoch, the same files.
    experiment = client.get_experiment(mlflow_run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert [m.step for m in client.get_metric_history(run_id, "val/f1_macro")] == [1, 2]
    assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == [1, 2]
    logged = {a.path for a in client.list_artifacts(run_id)}
    assert {"results.csv", "curves.png", "plots", "reports"} <= logged


def test_without_mlflow_the_run_folder_has_the_same_files(tiny_cfg) -> None:
    """logger=csv: the table, curves, confusion matrices and per-class reports are in the run
    folder all the same; monitor=val/loss keeps the epoch with the lowest loss."""
    cfg = tiny_cfg("logger=csv", "trainer.max_epochs=3", "monitor=val/loss",
                   "callbacks.early_stopping.patience=3")
    result = run(cfg)
    folder = Path(result.output_dir)
    rows = _rows(folder / "results.csv")
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    for name in ("curves.png", "plots/confusion_val.png", "plots/confusion_test.png",
                 "plots/misclassified_test.png", "reports/per_class_val.csv",
                 "reports/per_class_test.csv"):
        assert (folder / name).is_file(), name
    losses = [float(r["val/loss"]) for r in rows]
    assert result.val_metrics["best_val/loss"] == pytest.approx(min(losses), rel=1e-5)
    assert result.history.best["epoch"] == 1 + losses.index(min(losses))
    assert result.mlflow_run_id is None and result.model_version is None


def test_the_live_bar_is_for_terminals_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False, raising=False)
    shown, bar = training_display(True)
    assert [type(c) for c in shown] == [EpochTable] and bar is False
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    shown, bar = training_display(True)
    assert [type(c) for c in shown] == [EpochTable, TerminalBar] and bar is True
    shown, bar = training_display(False)  # trainer.enable_progress_bar=false
    assert [type(c) for c in shown] == [EpochTable] and bar is False
    # The bar shows the running loss, not Lightning's default (the logger's version, v_num).
    live = TerminalBar()
    assert live.get_metrics(None, None) == {}
    live._loss_sum, live._seen = 3.0, 2
    assert live.get_metrics(None, None) == {"loss": "1.5000"}


def test_known_noise_is_dropped_and_real_warnings_kept() -> None:
    noise = quiet.KnownNoise()

    def record(name: str, message: str, level: int = logging.INFO) -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, message, None, None)

    rank_zero = "pytorch_lightning.utilities.rank_zero"
    assert not noise.filter(record(rank_zero, "💡 Tip: For seamless cloud logging ... litlogger"))
    assert not noise.filter(record(rank_zero, "`Trainer.fit` stopped: `max_epochs=3` reached."))
    assert noise.filter(record(rank_zero, "GPU available: True (cuda), used: True"))
    assert noise.filter(record("fitlens.data.datamodule", "skipped 2 unreadable image(s)",
                               logging.WARNING))
    quantizer = ("Increased scale[11] for weight `net.features.conv_stem.weight` by ratio 18.3 "
                 "to ensure bias input `net.features.conv_stem.weight_bias` has a valid scale.")
    assert not noise.filter(record("root", quantizer))
    assert noise.filter(record("root", "Increased scale[1] ...", logging.WARNING))
    assert noise.filter(record("root", "anything else a library logs"))
    formatter = quiet.ConsoleFormatter()
    assert formatter.format(record("x", "careful", logging.WARNING)) == "warning: careful"
    assert formatter.format(record("x", "epoch line")) == "epoch line"
