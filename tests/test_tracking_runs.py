"""One MLflow run per training job, in a real SQLite store: what it records, and how it ends when
training raises, is interrupted, or the store is unreachable."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from mlflow import MlflowClient

from fitlens.data.splits import Sample
from fitlens.models.checkpoint import load_bundle
from fitlens.tracking.plots import per_class_rows
from fitlens.tracking.provenance import config_params, data_fingerprint
from fitlens.tracking.runs import Tracker
from fitlens.tracking.store import TrackingStoreError
from fitlens.train import run
from tests.conftest import TrackedTraining, compose_config


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        found |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def _only_run(uri: str) -> mlflow.entities.Run:
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("fitlens").experiment_id])
    assert len(runs) == 1
    return runs[0]


def test_run_records_config_provenance_metrics_and_artifacts(tracked_run: TrackedTraining) -> None:
    client = MlflowClient(tracked_run.tracking_uri)
    result, cfg = tracked_run.result, tracked_run.cfg
    run_ = client.get_run(result.mlflow_run_id)
    assert run_.info.status == "FINISHED"
    experiment = client.get_experiment(run_.info.experiment_id)
    assert experiment.name == "fitlens"
    store = Path(tracked_run.tracking_uri.removeprefix("sqlite:///")).parent
    assert experiment.artifact_location == (store / "artifacts" / "fitlens").as_uri()

    params = run_.data.params
    assert float(params["optimizer.lr"]) == cfg.optimizer.lr
    assert params["model.backbone._target_"] == "fitlens.models.backbones.mobilenet_v2"
    assert params["trainer.max_epochs"] == "2"

    tags = run_.data.tags
    assert len(tags["git_commit"]) == 40 and tags["git_dirty"] in ("true", "false")
    assert len(tags["data_fingerprint"]) == 16 and tags["data_files"] == "48"
    assert tags["output_dir"] == str(cfg.paths.output_dir)
    assert "overrides" in tags

    history = client.get_metric_history(run_.info.run_id, "val/f1_macro")
    assert len(history) == 2, "one point per epoch"
    metrics = run_.data.metrics
    for name in ("train/loss", "train/acc", "train/f1_macro", "val/loss", "val/acc",
                 "best_val/f1_macro"):
        assert name in metrics
    assert {"lr-AdamW/backbone", "lr-AdamW/head"} <= set(metrics)
    for name, value in result.test_metrics.items():
        assert metrics[name] == pytest.approx(value)

    assert _artifacts(client, run_.info.run_id) >= {
        "config.yaml", "split.csv", "plots/confusion_val.png", "plots/confusion_test.png",
        "plots/misclassified_test.png", "reports/per_class_test.csv",
        "bundle/model_state.pt", "bundle/model.yaml", "bundle/contract.json"}
    config_text = mlflow.artifacts.load_text(f"{run_.info.artifact_uri}/config.yaml")
    assert "max_epochs: 2" in config_text


def test_registered_model_is_the_bundles_network(tracked_run: TrackedTraining,
                                                 tmp_path: Path) -> None:
    client = MlflowClient(tracked_run.tracking_uri)
    result = tracked_run.result
    version = client.get_model_version("exercise-classifier", result.model_version)
    assert version.run_id == result.mlflow_run_id and version.status == "READY"

    bundle = mlflow.artifacts.download_artifacts(
        run_id=result.mlflow_run_id, artifact_path="bundle", dst_path=str(tmp_path),
        tracking_uri=tracked_run.tracking_uri)
    net, spec, _ = load_bundle(bundle)
    mlflow.set_tracking_uri(tracked_run.tracking_uri)
    logged = mlflow.pytorch.load_model(f"models:/exercise-classifier/{result.model_version}")
    x = torch.rand(spec.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(logged(x), net(x), rtol=1e-4, atol=1e-5)
    info = mlflow.models.get_model_info(f"models:/exercise-classifier/{result.model_version}")
    assert info.signature.inputs.inputs[0].shape == spec.input_shape
    assert np.dtype(info.signature.inputs.inputs[0].type) == np.float32
    assert info.signature.outputs.inputs[0].shape == (1, spec.num_classes)


def test_register_false_logs_the_model_but_no_version(tiny_cfg, tracking_uri: str) -> None:
    result = run(tiny_cfg("logger.register=false", "test=false"))
    assert result.mlflow_run_id and result.model_version is None
    client = MlflowClient(tracking_uri)
    assert client.search_registered_models() == []
    logged = _artifacts(client, result.mlflow_run_id)
    assert "bundle/model_state.pt" in logged
    assert "plots/confusion_val.png" in logged and not any("test" in a for a in logged)
    assert client.get_run(result.mlflow_run_id).outputs.model_outputs, "MLflow model logged"


def test_logger_csv_trains_without_mlflow(tmp_path: Path) -> None:
    cfg = compose_config(["logger=csv"], output_dir=tmp_path)
    assert "tracking_uri" not in cfg.logger
    assert Tracker.from_config(cfg) is None


def test_default_store_is_under_the_project_root(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    cfg = compose_config([], output_dir=tmp_path)
    assert cfg.logger.tracking_uri == f"sqlite:///{cfg.paths.root_dir}/mlruns/mlflow.db"
    assert cfg.logger.experiment_name == "fitlens"
    assert cfg.logger.registered_model == "exercise-classifier" and cfg.logger.register


def test_data_fingerprint_follows_names_and_sizes(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        (tmp_path / folder / "x.jpg").write_bytes(b"12345")
    here = [Sample(tmp_path / "a" / "x.jpg", 0, "squats", "x")]
    moved = [Sample(tmp_path / "b" / "x.jpg", 0, "squats", "x")]
    assert data_fingerprint(here) == data_fingerprint(moved), "location does not matter"
    (tmp_path / "b" / "x.jpg").write_bytes(b"123456")
    assert data_fingerprint(here)[0] != data_fingerprint(moved)[0], "size does"


def test_config_params_are_flat_and_resolved(tmp_path: Path) -> None:
    params = config_params(compose_config(["optimizer.lr=0.005"], output_dir=tmp_path))
    assert params["optimizer.lr"] == "0.005"
    assert params["data.classes"].startswith('["cable_flyes"')
    assert params["scheduler.T_max"] == params["trainer.max_epochs"], "interpolations resolved"
    assert all(isinstance(v, str) and "${" not in v for v in params.values())


def test_per_class_report_from_a_confusion_matrix() -> None:
    matrix = torch.tensor([[3, 1], [0, 4]])
    rows = {r["class"]: r for r in per_class_rows(matrix, ["a", "b"])}
    assert rows["a"]["precision"] == 1.0 and rows["a"]["recall"] == 0.75
    assert rows["b"]["precision"] == 0.8 and rows["b"]["support"] == 4
    assert rows["accuracy"]["f1"] == 0.875


class StopAt(pl.Callback):
    """Raises ``error`` when epoch ``epoch`` starts (after the previous epoch's checkpoint)."""

    def __init__(self, error: str, epoch: int = 1) -> None:
        self.error = {"keyboard": KeyboardInterrupt, "runtime": RuntimeError}[error]
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise self.error("stopped by the test")


def _stop_cfg(tiny_cfg, error: str):
    return tiny_cfg("trainer.max_epochs=3",
                    f"+callbacks.stop={{_target_: {__name__}.StopAt, error: {error}}}")


def test_exception_marks_the_run_failed_and_keeps_the_last_checkpoint(
        tiny_cfg, tracking_uri: str) -> None:
    with pytest.raises(RuntimeError, match="stopped by the test"):
        run(_stop_cfg(tiny_cfg, "runtime"))
    failed = _only_run(tracking_uri)
    assert failed.info.status == "FAILED"
    assert "checkpoints/last.ckpt" in _artifacts(MlflowClient(tracking_uri), failed.info.run_id)
    assert len(MlflowClient(tracking_uri).get_metric_history(failed.info.run_id,
                                                             "val/f1_macro")) == 1


def test_ctrl_c_marks_the_run_killed_and_keeps_the_last_checkpoint(
        tiny_cfg, tracking_uri: str) -> None:
    handler = signal.getsignal(signal.SIGINT)
    try:
        # Lightning stops gracefully on Ctrl-C, then exits (SystemExit).
        with pytest.raises(SystemExit):
            run(_stop_cfg(tiny_cfg, "keyboard"))
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores further Ctrl-C after one
    killed = _only_run(tracking_uri)
    assert killed.info.status == "KILLED"
    assert "checkpoints/last.ckpt" in _artifacts(MlflowClient(tracking_uri), killed.info.run_id)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_store_fails_before_training(tiny_cfg) -> None:
    uri = f"http://127.0.0.1:{_closed_port()}"
    cfg = tiny_cfg(f"logger.tracking_uri={uri}")
    start = time.monotonic()
    with pytest.raises(TrackingStoreError, match=f"logger.tracking_uri={uri}: .*cannot be reach"):
        run(cfg)
    assert time.monotonic() - start < 30
    assert not Path(cfg.paths.output_dir).exists(), "nothing was trained or written"

