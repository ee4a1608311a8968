"""The tracking store misbehaves: an empty or damaged SQLite database, a server that dies during
training. Each is a clear error naming the file or the setting, within a bounded time, and
nothing is lost: the database file is never replaced, the last checkpoint stays on disk."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from fitlens.tracking.store import TrackingStoreError, connect
from fitlens.train import run
from tests.test_tracking_server import running_mlflow_server

#: A dead server must fail the job within this (MLflow's defaults: minutes per request).
DEAD_SERVER_BOUND_S = 60


def _damage(db: Path, kind: str) -> None:
    data = db.read_bytes()
    if kind == "empty":
        db.write_bytes(b"")
    elif kind == "random":
        db.write_bytes(random.Random(0).randbytes(len(data)))
    elif kind == "truncated":
        db.write_bytes(data[:len(data) // 2])
    else:  # one page in the middle overwritten: a valid header, a broken b-tree
        db.write_bytes(data[:8192] + b"\xff" * 4096 + data[12288:])


@pytest.fixture(scope="module")
def store_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real store's database with something in it (creating one takes seconds)."""
    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    connect(f"sqlite:///{db}").create_experiment("fitlens")
    return db.read_bytes()


@pytest.mark.parametrize("kind", ["empty", "random", "truncated", "page"])
def test_an_empty_or_damaged_store_is_a_clear_error_and_is_kept(tmp_path: Path, kind: str,
                                                               store_file: bytes) -> None:
    db = tmp_path / "mlruns" / "mlflow.db"
    uri = f"sqlite:///{db}"
    db.parent.mkdir()
    db.write_bytes(store_file)
    _damage(db, kind)
    damaged = db.read_bytes()
    with pytest.raises(TrackingStoreError,
                       match=re.escape(f"logger.tracking_uri={uri}: {db}: ")) as info:
        connect(uri)
    assert ("empty (0 bytes)" if kind == "empty" else "SQLite database") in str(info.value)
    assert "restore it from a backup" in str(info.value)
    assert db.read_bytes() == damaged, "the file is left as it was, never re-created"


class KillServerAt(pl.Callback):
    """Kills the tracking server (its process group) when epoch ``epoch`` starts, after the
    previous epoch's checkpoint: the server dies mid-training. Records when, for the test."""

    killed_at: dict[int, float] = {}

    def __init__(self, pgid: int, epoch: int = 1) -> None:
        self.pgid, self.epoch = pgid, epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch and self.pgid not in self.killed_at:
            os.killpg(self.pgid, signal.SIGKILL)
            self.killed_at[self.pgid] = time.monotonic()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """``mlflow server`` on a free loopback port, in its own process group, and its process."""
    with running_mlflow_server(tmp_path) as started:
        yield started


@pytest.mark.slow
def test_a_server_that_dies_mid_training_fails_the_job_in_bounded_time(
        server: tuple[str, subprocess.Popen], tiny_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    url, process = server
    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
                "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(key, raising=False)  # MLflow's defaults, unless fitlens bounds them
    cfg = tiny_cfg("trainer.max_epochs=3", f"logger.tracking_uri={url}", "test=false",
                   f"+callbacks.kill_server={{_target_: {__name__}.KillServerAt, "
                   f"pgid: {process.pid}}}")
    checkpoint = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    with pytest.raises(TrackingStoreError) as info:
        run(cfg)
    waited = time.monotonic() - KillServerAt.killed_at[process.pid]
    assert waited < DEAD_SERVER_BOUND_S, f"gave up after {waited:.0f} s"
    print(f"gave up {waited:.1f} s after the server died")
    message = str(info.value)
    assert message.startswith(f"logger.tracking_uri={url}: the MLflow tracking store stopped "
                              "answering during run ")
    assert f"ckpt_path={checkpoint}" in message and "stays RUNNING" in message
    # What was trained is on disk, and it is epoch 0's (the server died as epoch 1 began).
    assert torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"] == 0
