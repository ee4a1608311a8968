"""Faults: kill -9 and resume, parallel jobs on one SQLite store, corrupt or malicious model files,
and the UI's default binding. (Tracking server down: test_tracking_runs.py and
test_tracking_sweep.py.)"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from mlflow import MlflowClient
from omegaconf import OmegaConf

from fitlens.data.datamodule import spec_of
from fitlens.export.metadata import MetadataError, read_metadata, sha256_file, write_metadata
from fitlens.models.checkpoint import CheckpointError, load_bundle, safe_load
from fitlens.predict import Predictor
from fitlens.train import run
from tests.conftest import ROOT, TINY, compose_config
from tests.test_predict import colour_model

#: Where the stalled training announces that it is stuck mid-epoch (read by the test).
STALL_MARKER_ENV = "FITLENS_TEST_STALL_MARKER"


class StallMidEpoch(pl.Callback):
    """After the first batch of epoch ``epoch``, touches the marker file and hangs: the test
    then kills the process with SIGKILL, mid-epoch, after the previous epoch's checkpoint."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.current_epoch == self.epoch:
            Path(os.environ[STALL_MARKER_ENV]).touch()
            time.sleep(600)


def _train(args: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    """``python train.py`` as a user runs it, in its own folder, with this repo importable."""
    environ = {**os.environ, "FITLENS_ROOT": str(cwd), "PYTHONWARNINGS": "ignore",
               "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), **env}
    cwd.mkdir(parents=True, exist_ok=True)
    log = (cwd / "train.log").open("a")
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=environ,
                            stdout=log, stderr=subprocess.STDOUT)


def _finish(process: subprocess.Popen, cwd: Path, timeout: float = 300) -> None:
    assert process.wait(timeout=timeout) == 0, (cwd / "train.log").read_text()[-3000:]


def _runs(uri: str) -> list:
    client = MlflowClient(uri)
    return client.search_runs([client.get_experiment_by_name("fitlens").experiment_id])


@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_continues_the_same_run(
        tmp_path: Path, image_root: Path, tracking_uri: str) -> None:
    job = [*TINY, f"data.root={image_root}", "trainer.max_epochs=3", "logger.register=false",
           "test=false"]
    first, marker = tmp_path / "first", tmp_path / "stalled"
    process = _train([*job, "hydra.run.dir=.", "+callbacks.stall._target_="
                      f"{__name__}.StallMidEpoch", "+callbacks.stall.epoch=2"], first,
                     **{STALL_MARKER_ENV: str(marker)})
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert process.poll() is None, (first / "train.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "training never reached epoch 2"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    (killed,) = _runs(tracking_uri)
    assert killed.info.status == "RUNNING", "kill -9 leaves no chance to end the run"

    # The README's resume command: the same job, plus the checkpoint to resume.
    checkpoint = first / "checkpoints" / "last.ckpt"
    second = tmp_path / "second"
    _finish(_train([*job, "hydra.run.dir=.", f"ckpt_path={checkpoint}"], second), second)

    (resumed,) = _runs(tracking_uri)
    assert resumed.info.run_id == killed.info.run_id and resumed.info.status == "FINISHED"
    client = MlflowClient(tracking_uri)
    epochs = [int(m.value) for m in client.get_metric_history(resumed.info.run_id, "epoch")]
    val = client.get_metric_history(resumed.info.run_id, "val/f1_macro")
    assert sorted(set(epochs)) == [0, 1, 2], "epochs 0-1 before the kill, 2 after resuming"
    assert len(val) == 3 and len({m.step for m in val}) == 3, "one validation per epoch"
    log = (second / "train.log").read_text()
    assert re.search(r"Restored all states from the checkpoint|Restoring states", log), log[-2000:]
    assert resumed.data.tags["resume.output_dir"] == str(second)
    assert resumed.data.tags["output_dir"] == str(first)


@pytest.mark.slow
def test_two_trainings_at_once_on_one_new_sqlite_store(tmp_path: Path, image_root: Path,
                                                      tracking_uri: str) -> None:
    """Both create the store's schema at the same moment (serialised by a lock file), then log
    side by side. (No checkpoints, so no model logging: that is minutes of CPU here, and
    registering is MLflow's own transaction.)"""
    job = [*TINY, f"data.root={image_root}", "test=false", "callbacks=none", "hydra.run.dir=."]
    folders = [tmp_path / "a", tmp_path / "b"]
    processes = [_train(job, folder) for folder in folders]
    for process, folder in zip(processes, folders, strict=True):
        _finish(process, folder)
    runs = _runs(tracking_uri)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags["output_dir"] for r in runs} == {str(f) for f in folders}
    client = MlflowClient(tracking_uri)
    for r in runs:
        assert len(client.get_metric_history(r.info.run_id, "val/f1_macro")) == 1
        assert r.data.params["trainer.max_epochs"] == "1"


class WritesMarker:
    """Unpickling this runs ``Path(marker).touch()``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def _malicious_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {"net.w": torch.zeros(1)}, "payload": WritesMarker(marker)}, path)
    return path


def test_a_checkpoint_that_would_run_code_is_refused_unexecuted(tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    path = _malicious_checkpoint(tmp_path / "evil.ckpt", marker)
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        safe_load(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the file really is a payload: plain pickle runs it
    assert marker.exists()


def test_resuming_from_a_malicious_checkpoint_stops_before_training(tiny_cfg,
                                                                    tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    path = _malicious_checkpoint(tmp_path / "last.ckpt", marker)
    cfg = tiny_cfg(f"ckpt_path={path}")
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        run(cfg)
    assert not marker.exists()
    assert not Path(cfg.paths.output_dir).exists(), "nothing was trained or written"


def _damaged(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / "model_state.pt"
    torch.save({"net.w": torch.randn(64, 64)}, path)
    data = path.read_bytes()
    damaged = {"truncated": data[:len(data) // 2], "random": random.Random(0).randbytes(len(data)),
               "empty": b"", "text": b"version https://git-lfs.github.com/spec/v1\n"}[kind]
    path.write_bytes(damaged)
    return path


def test_random_bytes_are_a_clear_checkpoint_error(tmp_path: Path) -> None:
    """Random bytes break the unpickler in many ways (IndexError, KeyError, ...): all the same
    clear error. Seeded, so a failure reproduces."""
    path = tmp_path / "model_state.pt"
    for seed in range(200):
        path.write_bytes(random.Random(seed).randbytes(2048))
        with pytest.raises(CheckpointError, match=re.escape(f"{path}: not a loadable PyTorch")):
            safe_load(path)


@pytest.mark.parametrize("kind", ["truncated", "random", "empty", "text"])
def test_a_damaged_checkpoint_is_a_clear_error(tmp_path: Path, kind: str, tiny_cfg) -> None:
    path = _damaged(tmp_path, kind)
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: not a loadable PyTorch")):
        safe_load(path)
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        run(tiny_cfg(f"ckpt_path={path}"))


def test_a_damaged_bundle_names_its_weights_file(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    cfg = compose_config(TINY)
    OmegaConf.save(cfg.model, bundle / "model.yaml", resolve=True)
    (bundle / "contract.json").write_text(json.dumps(spec_of(cfg.data).to_dict()))
    _damaged(bundle, "truncated")
    with pytest.raises(CheckpointError, match="model_state.pt"):
        load_bundle(bundle)


@pytest.mark.parametrize("damage", [
    lambda data: data[:len(data) // 2],
    lambda data: b"\x00" * len(data),
    lambda data: b"not an onnx file\n",
], ids=["truncated", "zeroed", "text"])
def test_a_damaged_onnx_file_is_a_clear_error(tmp_path: Path, damage,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Even when its metadata's SHA-256 matches (copied, re-hashed, or damaged at export)."""
    from scripts.predict import main as predict_main

    folder = colour_model(tmp_path / "model")
    model = folder / "colour.onnx"
    model.write_bytes(damage(model.read_bytes()))
    meta = read_metadata(folder / "model_meta.json")
    meta["sha256"] = sha256_file(model)
    write_metadata(meta, folder / "model_meta.json")
    with pytest.raises(MetadataError, match=re.escape(f"{model}: onnxruntime cannot load")):
        Predictor(folder)
    assert predict_main([str(tmp_path), "--model-dir", str(folder)]) == 2
    assert f"error: {model}: onnxruntime cannot load" in capsys.readouterr().err


def test_readme_ui_command_binds_to_loopback() -> None:
    """The UI serves the whole store unauthenticated: only this machine, unless asked."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("**The UI**", 1)[1].split("**", 1)[0]
    (command,) = re.findall(r"^mlflow (?:ui|server) .*$", section, flags=re.MULTILINE)
    assert re.search(r"--host 127\.0\.0\.1(\s|$)", command), command
