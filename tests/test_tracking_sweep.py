"""A ``-m`` sweep through the real entry point: one parent run, a child run per job, and at the
end a table of the jobs and only the best job's model registered (``logger.register=best``)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import mlflow
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

    # Only the best job's model is registered, when the sweep ends.
    client = MlflowClient(tracking_uri)
    (version,) = client.search_model_versions("name='exercise-classifier'")
    returned = {r.info.run_id: json.loads(r.data.tags["fitlens.sweep.job"]) for r in children}
    best = max(children, key=lambda r: (returned[r.info.run_id]["metric"],
                                        -returned[r.info.run_id]["num"]))
    assert version.run_id == best.info.run_id == best.data.tags["fitlens.model_run_id"]
    assert {j["metric"] for j in returned.values()} == {
        r.data.metrics["best_val/f1_macro"] for r in children}, "what each job returned"

    # The parent carries the best job's params, metric and version.
    parent = client.get_run(parent.info.run_id)
    assert parent.data.params == best.data.params
    assert parent.data.tags["best.model_version"] == str(version.version)
    assert parent.data.tags["best.run_id"] == best.info.run_id
    assert parent.data.tags["best.overrides"] == f"optimizer.lr={best.data.params['optimizer.lr']}"
    assert parent.data.metrics["best/val/f1_macro"] == returned[best.info.run_id]["metric"]

    # The table: one row per job with what it returned, the best marked.
    lines = out.stdout[out.stdout.index(f"sweep {parent.info.run_id}: 2 job(s)"):].splitlines()
    assert lines[0].endswith("best = higher val/f1_macro (the value each job returned)")
    assert lines[1].split() == ["job", "val/f1_macro", "MLflow", "run", "overrides"]
    by_job = sorted(children, key=lambda r: returned[r.info.run_id]["num"])
    for line, child in zip(lines[2:4], by_job, strict=True):
        recorded = returned[child.info.run_id]
        mark = ["best"] if child is best else []
        lr = child.data.params["optimizer.lr"]
        assert line.split() == [str(recorded["num"]), f"{recorded['metric']:.4f}", *mark,
                                child.info.run_id, f"optimizer.lr={lr}"]
    assert lines[4] == (f"registered exercise-classifier version {version.version}: the model of "
                        f"job {returned[best.info.run_id]['num']} (run {best.info.run_id})")
    table = mlflow.artifacts.load_text(f"{parent.info.artifact_uri}/sweep_jobs.txt")
    assert table.splitlines() == lines[:5]
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
    # It failed before its run started; the table still shows it, and nothing is registered.
    lines = out.stdout[out.stdout.index(f"sweep {parent.info.run_id}: 1 job(s)"):].splitlines()
    assert lines[2].split() == ["0", "-", "failed", "-"]
    assert lines[3] == ("no job finished with a model and a finite val/f1_macro: no best job, "
                        "nothing registered by the sweep")
    assert MlflowClient(tracking_uri).search_registered_models() == []


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
