"""Promote and resolve registered versions in a real SQLite store.

The version trained by the shared ``tracked_run`` fixture is the real thing (bundle, split,
metrics). Extra versions for choosing between are made with the MLflow client: real runs with
real metrics and statuses, registered from the trained version's model, without training again.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from fitlens.models.checkpoint import load_bundle
from fitlens.tracking.registry import RegistryError, promote, record_export, resolve_model
from tests.conftest import ROOT, TrackedTraining

MODEL = "exercise-classifier"
_names = itertools.count()


def _model_with_versions(tracked: TrackedTraining, scores: list[tuple[float, str]]) -> str:
    """A fresh registered model whose versions come from runs with these (f1, status), on the
    trained run's classes and data; the runs log no bundle of their own."""
    client = MlflowClient(tracked.tracking_uri)
    trained = client.get_run(tracked.result.mlflow_run_id)
    # A plain artifact URI: a models:/ source would be looked up in MLflow's global store.
    source = f"{trained.info.artifact_uri}/bundle"
    experiment = trained.info.experiment_id
    name = f"candidates-{next(_names)}"
    client.create_registered_model(name)
    same = {k: trained.data.tags[k] for k in ("classes", "data_fingerprint")}
    assert json.loads(same["classes"]) == list(tracked.cfg.data.classes), "recorded at start"
    for i, (f1, status) in enumerate(scores):
        run_ = client.create_run(experiment, run_name=f"candidate {i}", tags=same)
        client.log_metric(run_.info.run_id, "best_val/f1_macro", f1)
        client.log_metric(run_.info.run_id, "val/loss", 1 - f1)
        client.log_metric(run_.info.run_id, "test/f1_macro", 1 - f1)
        client.set_terminated(run_.info.run_id, status)
        client.create_model_version(name, source, run_id=run_.info.run_id)
    return name


def test_promote_a_version_moves_the_alias_and_records_why(tracked_run: TrackedTraining) -> None:
    uri = tracked_run.tracking_uri
    name = _model_with_versions(tracked_run, [(0.5, "FINISHED"), (0.7, "FINISHED")])
    first = promote(uri, name, version=1, reason="baseline")
    assert first.previous is None and first.new.version == "1"
    second = promote(uri, name, version=2, alias="champion", reason="better on new photos")
    assert second.previous.version == "1" and second.new.version == "2"

    client = MlflowClient(uri)
    assert str(client.get_model_version_by_alias(name, "champion").version) == "2"
    tags = client.get_model_version(name, "2").tags
    assert tags["champion.reason"] == "better on new photos"
    assert tags["champion.promoted_by"] and tags["champion.promoted_at"].endswith("+00:00")
    assert len(client.search_model_versions(f"name='{name}'")) == 2, "nothing deleted"
    assert not promote(uri, name, version=2).changed


@pytest.mark.parametrize(("metric", "mode", "expected"), [
    (None, "max", "2"), ("val/loss", "min", "2"), ("best_val/f1_macro", "min", "1")])
def test_promote_best_picks_by_metric_among_finished_runs(
        tracked_run: TrackedTraining, metric: str | None, mode: str, expected: str) -> None:
    # Version 3 scores highest but its run failed: never a candidate.
    name = _model_with_versions(
        tracked_run, [(0.4, "FINISHED"), (0.8, "FINISHED"), (0.9, "FAILED")])
    done = promote(tracked_run.tracking_uri, name, best=True, metric=metric, mode=mode)
    assert done.new.version == expected
    assert (metric or "best_val/f1_macro") in done.reason


def test_promote_refuses_what_cannot_be_promoted(tracked_run: TrackedTraining) -> None:
    uri = tracked_run.tracking_uri
    name = _model_with_versions(tracked_run, [(0.5, "FINISHED"), (0.9, "FAILED")])
    with pytest.raises(RegistryError, match="version=2: its run .* ended FAILED"):
        promote(uri, name, version=2)
    with pytest.raises(RegistryError, match="version=7: .* versions: 1, 2"):
        promote(uri, name, version=7)
    with pytest.raises(RegistryError, match="registered model 'nope' not found"):
        promote(uri, "nope", version=1)
    with pytest.raises(RegistryError, match="metric=val/nothing: no comparable version"):
        promote(uri, name, best=True, metric="val/nothing")
    with pytest.raises(ValueError, match="either version=N or best=true"):
        promote(uri, name, version=1, best=True)
    with pytest.raises(ValueError, match="mode='top'"):
        promote(uri, name, best=True, mode="top")
    assert MlflowClient(uri).get_registered_model(name).aliases == {}


def test_resolve_by_alias_version_or_run_downloads_bundle_and_split(
        tracked_run: TrackedTraining, tmp_path: Path) -> None:
    uri, result = tracked_run.tracking_uri, tracked_run.result
    with pytest.raises(RegistryError, match="no version of 'exercise-classifier' has alias "
                                            "'resolve-test'; run scripts/promote.py"):
        resolve_model(uri, MODEL, alias="resolve-test", dst=tmp_path / "none")
    promote(uri, MODEL, version=result.model_version, alias="resolve-test")

    by_alias = resolve_model(uri, MODEL, alias="resolve-test", dst=tmp_path / "alias")
    by_version = resolve_model(uri, MODEL, version=int(result.model_version),
                               dst=tmp_path / "version")
    by_run = resolve_model(uri, MODEL, run_id=result.mlflow_run_id, dst=tmp_path / "run")
    for resolved in (by_alias, by_version, by_run):
        assert (resolved.version, resolved.run_id) == (result.model_version,
                                                       result.mlflow_run_id)
        assert resolved.metrics["test/f1_macro"] == pytest.approx(
            result.test_metrics["test/f1_macro"])
        assert resolved.split_csv.read_text() == Path(tracked_run.cfg.data.split_csv).read_text()

    net, spec, _ = load_bundle(by_alias.bundle_dir)
    assert spec.classes == tuple(tracked_run.cfg.data.classes)
    trained = torch.load(result.best_checkpoint, map_location="cpu", weights_only=True)
    torch.testing.assert_close(net.head[1].weight, trained["state_dict"]["net.head.1.weight"])


def test_resolve_errors_name_what_is_missing(tracked_run: TrackedTraining, tmp_path: Path) -> None:
    uri = tracked_run.tracking_uri
    with pytest.raises(ValueError, match="exactly one of alias, version, run_id"):
        resolve_model(uri, MODEL, alias="champion", version=1, dst=tmp_path)
    with pytest.raises(RegistryError, match="registered model 'nope' not found"):
        resolve_model(uri, "nope", version=1, dst=tmp_path)
    with pytest.raises(RegistryError, match="version=99: model 'exercise-classifier' has no"):
        resolve_model(uri, MODEL, version=99, dst=tmp_path)
    # Registered from a run that logged no bundle (made with the client, not by training).
    name = _model_with_versions(tracked_run, [(0.5, "FINISHED")])
    with pytest.raises(RegistryError, match="has no bundle/ artifact"):
        resolve_model(uri, name, version=1, dst=tmp_path)


def test_record_export_attaches_files_and_hash_to_the_version(
        tracked_run: TrackedTraining, tmp_path: Path) -> None:
    uri = tracked_run.tracking_uri
    resolved = resolve_model(uri, MODEL, version=tracked_run.result.model_version,
                             dst=tmp_path / "src")
    onnx = tmp_path / "exercise_classifier.onnx"
    onnx.write_bytes(b"not really onnx")
    meta = tmp_path / "model_meta.json"
    meta.write_text("{}")
    digest = hashlib.sha256(onnx.read_bytes()).hexdigest()
    record_export(uri, resolved, [onnx, meta], digest)

    client = MlflowClient(uri)
    exported = {a.path for a in client.list_artifacts(resolved.run_id, "export")}
    assert exported == {"export/exercise_classifier.onnx", "export/model_meta.json"}
    tags = client.get_model_version(MODEL, resolved.version).tags
    assert tags["exported_onnx_sha256"] == digest and tags["exported_at"].endswith("+00:00")


def test_promote_command_prints_previous_and_new_champion(tracked_run: TrackedTraining,
                                                          tmp_path: Path) -> None:
    name = _model_with_versions(tracked_run, [(0.5, "FINISHED"), (0.6, "FINISHED")])
    env = {**os.environ, "FITLENS_ROOT": str(tmp_path)}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "promote.py"),
             f"logger.tracking_uri={tracked_run.tracking_uri}",
             f"logger.registered_model={name}", *args],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    promote(tracked_run.tracking_uri, name, version=1, reason="first")
    out = cli("best=true")
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"previous {name}@champion: version 1" in out.stdout
    assert f"new      {name}@champion: version 2" in out.stdout
    assert f"models:/{name}@champion now resolves to version 2" in out.stdout
    missing = cli("version=5")
    assert missing.returncode == 2 and "version=5: model" in missing.stdout
    assert list(tmp_path.iterdir()) == [], "a registry command leaves no files behind"
