"""A ``-m`` sweep through the real entry point: one parent run, a child run per job."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from mlflow import MlflowClient

from tests.conftest import ROOT, TINY


def _train(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "FITLENS_ROOT": str(tmp_path), "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=900)


def _runs(uri: str) -> list:
    client = MlflowClient(uri)
    return client.search_runs([client.get_experiment_by_name("fitlens").experiment_id])


def test_sweep_is_a_parent_run_with_one_child_per_job(tmp_path: Path, image_root: Path,
                                                      tracking_uri: str) -> None:
    out = _train(["-m", *TINY, f"data.root={image_root}", "optimizer.lr=1e-3,1e-4",
                  f"logger.tracking_uri={tracking_uri}"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]

    runs = _runs(tracking_uri)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(runs) == 3
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep"] == "true"
    assert "optimizer.lr=1e-3,1e-4" in parent.info.run_name
    children = [r for r in runs if r is not parent]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert {r.info.status for r in children} == {"FINISHED"}
    assert sorted(float(r.data.params["optimizer.lr"]) for r in children) == [1e-4, 1e-3]
    assert all("optimizer.lr=" in r.info.run_name for r in children)
    assert all(r.data.tags["output_dir"].startswith(str(tmp_path / "outputs" / "multiruns"))
               for r in children)

    client = MlflowClient(tracking_uri)
    versions = client.search_model_versions("name='exercise-classifier'")
    assert {v.run_id for v in versions} == {r.info.run_id for r in children}
    # One store for the whole sweep: nothing in the jobs' folders, no default ./mlruns/0.
    assert [p.name for p in (tmp_path / "mlruns").iterdir() if p.is_dir()] == ["artifacts"]
    assert not [p for p in (tmp_path / "outputs").rglob("*") if "mlruns" in p.name]


def test_failed_job_fails_the_parent(tmp_path: Path, image_root: Path,
                                     tracking_uri: str) -> None:
    out = _train(["-m", *TINY, f"data.root={image_root}", "optimizer.lr=-1",
                  f"logger.tracking_uri={tracking_uri}"], tmp_path)
    assert out.returncode != 0 and "optimizer.lr=-1" in out.stderr
    (parent,) = _runs(tracking_uri)
    assert parent.data.tags["sweep"] == "true" and parent.info.status == "FAILED"


def test_unreachable_store_stops_the_sweep_before_any_job(tmp_path: Path,
                                                          image_root: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{s.getsockname()[1]}"
    out = _train(["-m", *TINY, f"data.root={image_root}", "optimizer.lr=1e-3,1e-4",
                  f"logger.tracking_uri={uri}"], tmp_path)
    assert out.returncode != 0
    assert f"logger.tracking_uri={uri}: the MLflow tracking store cannot be" in out.stderr
    assert not list(tmp_path.glob("outputs/multiruns/*/0")), "no job started"
