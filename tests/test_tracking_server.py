"""A real ``mlflow server`` (the README's UI command) on a free loopback port: training logs to
it over HTTP, and its REST API shows the run, its metric curve and the registered version."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fitlens.train import run

STARTUP_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 10) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read() or b"{}")


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@contextmanager
def running_mlflow_server(folder: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """``mlflow server`` on a free loopback port with its store in ``folder``, in its own process
    group; its base URL and process. Stopped, with its workers, on the way out."""
    port = _free_port()
    log = (folder / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{folder}/server/mlflow.db",
         "--default-artifact-root", str(folder / "server" / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"mlflow server exited: {(folder / 'server.log').read_text()}")
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2).close()
                break
            except OSError:  # refused, reset or timed out (URLError is one): not up yet
                if time.monotonic() > deadline:
                    pytest.fail(f"mlflow server not up after {STARTUP_TIMEOUT_S}s")
                time.sleep(0.5)
        yield url, process
    finally:
        # The server runs worker processes in its session: stop all of them (a test may have
        # killed them already).
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)
        log.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """``mlflow server`` bound to 127.0.0.1 on a test store; its base URL."""
    with running_mlflow_server(tmp_path) as (url, _):
        yield url


def test_training_run_metrics_and_version_visible_through_the_server(server: str,
                                                                     tiny_cfg) -> None:
    result = run(tiny_cfg("trainer.max_epochs=2", f"logger.tracking_uri={server}"))
    api = f"{server}/api/2.0/mlflow"

    experiment = _get(f"{api}/experiments/get-by-name?experiment_name=fitlens")["experiment"]
    runs = _post(f"{api}/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    assert [r["info"]["run_id"] for r in runs] == [result.mlflow_run_id]
    info = runs[0]["info"]
    assert info["status"] == "FINISHED"
    params = {p["key"]: p["value"] for p in runs[0]["data"]["params"]}
    assert params["trainer.max_epochs"] == "2"

    query = urllib.parse.urlencode({"run_id": result.mlflow_run_id, "metric_key": "val/f1_macro"})
    history = _get(f"{api}/metrics/get-history?{query}")["metrics"]
    assert len(history) == 2

    model = _get(f"{api}/registered-models/get?name=exercise-classifier")["registered_model"]
    versions = {v["version"]: v["run_id"] for v in model["latest_versions"]}
    assert versions == {result.model_version: result.mlflow_run_id}

    query = urllib.parse.urlencode({"run_id": result.mlflow_run_id, "path": "bundle"})
    listed = _get(f"{api}/artifacts/list?{query}")["files"]
    assert {Path(f["path"]).name for f in listed} >= {"model_state.pt", "contract.json"}
