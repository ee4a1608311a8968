"""``promote best=true`` chooses honestly: by a selection metric (out-of-fold, else validation),
never by a test metric, and only among versions trained on the same classes and data.

Most versions here are made with the MLflow client in a real SQLite store: runs with the tags a
training run records (``classes``, ``data_fingerprint``), real metrics and statuses. The last
tests train for real: a cross-validation job, and a run on other photos.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from fitlens.tracking.registry import (
    MODEL_RUN_TAG,
    RegistryError,
    promote,
    resolve_model,
)
from fitlens.tracking.store import connect, experiment_id
from fitlens.train import run
from tests.conftest import ROOT, config_classes, make_images

CLASSES = ["a", "b", "none"]
_names = itertools.count()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One real SQLite store for the tests below (each uses its own model): a new store's
    schema takes seconds to create."""
    return f"sqlite:///{tmp_path_factory.mktemp('select')}/mlflow.db"


@pytest.fixture
def model() -> str:
    return f"candidates-{next(_names)}"


def _versions(uri: str, name: str, *versions: dict) -> MlflowClient:
    """Register one version of ``name`` per dict: its run's ``metrics``, ``status`` (FINISHED),
    ``data`` fingerprint ("A") and ``classes`` (CLASSES), as a fitlens training run records
    them."""
    client = connect(uri)
    experiment = experiment_id(client, "select", None)
    if not client.search_registered_models(f"name='{name}'"):
        client.create_registered_model(name)
    for spec in versions:
        tags = {"classes": json.dumps(spec.get("classes", CLASSES)),
                "data_fingerprint": spec.get("data", "A")}
        run_ = client.create_run(experiment, tags=tags)
        for key, value in spec["metrics"].items():
            client.log_metric(run_.info.run_id, key, value)
        client.set_terminated(run_.info.run_id, spec.get("status", "FINISHED"))
        client.create_model_version(name, f"{run_.info.artifact_uri}/model",
                                    run_id=run_.info.run_id)
    return client


def test_best_ranks_by_out_of_fold_metric_never_by_test(store: str, model: str) -> None:
    _versions(store, model,
              {"metrics": {"oof/f1_macro": 0.60, "test/f1_macro": 0.90}},
              {"metrics": {"oof/f1_macro": 0.70, "test/f1_macro": 0.50}},
              {"metrics": {"oof/f1_macro": 0.65, "test/f1_macro": 0.95}})
    done = promote(store, model, best=True)
    assert done.new.version == "2", "the best out-of-fold score, the worst test score"
    selection = done.selection
    assert selection.metric == "oof/f1_macro" and selection.reference_role == "newest version"
    assert [v.version for v in selection.compared] == ["2", "3", "1"]
    assert "oof/f1_macro=0.7000" in done.reason and "test" not in done.reason

    with pytest.raises(ValueError, match="metric=test/f1_macro: test metrics are reported, "
                                         "never used to choose"):
        promote(store, model, best=True, metric="test/f1_macro", alias="other")
    with pytest.raises(ValueError, match="mode=min: the default selection metrics"):
        promote(store, model, best=True, mode="min", alias="other")
    assert "other" not in MlflowClient(store).get_registered_model(model).aliases


def test_versions_on_other_data_or_classes_are_not_compared(store: str, model: str) -> None:
    _versions(store, model,
              {"metrics": {"oof/f1_macro": 0.50}},
              {"metrics": {"oof/f1_macro": 0.99}, "data": "B"},
              {"metrics": {"oof/f1_macro": 0.99}, "classes": ["a", "b"]},
              {"metrics": {"oof/f1_macro": 0.70}},
              {"metrics": {"oof/f1_macro": 0.99}, "status": "FAILED"},
              {"metrics": {"oof/f1_macro": math.nan}},
              {"metrics": {"oof/f1_macro": 0.98}, "data": "B"})
    promote(store, model, version=1)
    done = promote(store, model, best=True)
    assert done.new.version == "4" and done.previous.version == "1"
    selection = done.selection
    assert (selection.reference.version, selection.reference_role) == ("1", "champion")
    assert [v.version for v in selection.compared] == ["4", "1"]
    reasons = {info.version: why for info, why in selection.excluded}
    assert reasons == {"2": "other data (data_fingerprint B)",
                       "3": "other classes ['a', 'b']",
                       "5": "its run ended FAILED",
                       "6": "oof/f1_macro is nan",
                       "7": "other data (data_fingerprint B)"}


def test_without_a_champion_the_newest_version_sets_the_data(store: str, model: str) -> None:
    _versions(store, model,
              {"metrics": {"oof/f1_macro": 0.90}},
              {"metrics": {"oof/f1_macro": 0.60}, "data": "B"},
              {"metrics": {"oof/f1_macro": 0.50}, "data": "B"})
    done = promote(store, model, best=True)
    assert done.new.version == "2", "version 1 scores higher, on other photos"
    assert done.selection.reference.version == "3"


def test_mixed_metrics_are_compared_like_with_like(store: str, model: str) -> None:
    _versions(store, model,
              {"metrics": {"oof/f1_macro": 0.60, "best_val/f1_macro": 0.95}},
              {"metrics": {"oof/f1_macro": 0.70, "best_val/f1_macro": 0.50}})
    assert promote(store, model, best=True).new.version == "2", "OOF first, when all have it"

    # Version 3 has no OOF score: all three are ranked by the validation score they share.
    _versions(store, model, {"metrics": {"best_val/f1_macro": 0.80}})
    done = promote(store, model, best=True, alias="by-val")
    assert done.selection.metric == "best_val/f1_macro" and done.new.version == "1"

    # Version 4 has only an OOF score: no metric is shared, and it says so.
    _versions(store, model, {"metrics": {"oof/f1_macro": 0.65}})
    with pytest.raises(RegistryError, match=r"no selection metric is carried by all 4 comparable "
                       r"versions.*\(oof/f1_macro: versions 1, 2, 4; best_val/f1_macro: "
                       r"versions 1, 2, 3\); rank the versions that have one with "
                       r"metric=oof/f1_macro"):
        promote(store, model, best=True, alias="none-shared")
    done = promote(store, model, best=True, metric="oof/f1_macro", alias="by-oof")
    assert done.new.version == "2"
    assert [(i.version, why) for i, why in done.selection.excluded] == [
        ("3", "has no oof/f1_macro")]


def _promote_cli(uri: str, model: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "promote.py"), f"logger.tracking_uri={uri}",
         f"logger.registered_model={model}", *args],
        cwd=cwd, env={**os.environ, "FITLENS_ROOT": str(cwd)}, capture_output=True, text=True,
        timeout=120)


def test_promote_command_prints_what_it_compared(store: str, model: str, tmp_path: Path) -> None:
    client = _versions(store, model,
                       {"metrics": {"oof/f1_macro": 0.60, "test/f1_macro": 0.90}},
                       {"metrics": {"oof/f1_macro": 0.70}},
                       {"metrics": {"oof/f1_macro": 0.99}, "data": "B"})
    promote(store, model, version=1)
    runs = {str(v.version): v.run_id for v in client.search_model_versions(f"name='{model}'")}

    out = _promote_cli(store, model, tmp_path, "best=true")
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[:3] == [
        "compared: the versions with the classes and data of version 1 (the champion)",
        "  classes ['a', 'b', 'none'], data_fingerprint A",
        "  ranked by oof/f1_macro (max); test/f1_macro is shown for information, never used to "
        "choose"]
    assert lines[3].split() == ["version", "oof/f1_macro", "test/f1_macro", "(not", "used)",
                                "run"]
    assert lines[4].split() == ["2", "0.7000", "-", runs["2"], "chosen"]
    assert lines[5].split() == ["1", "0.6000", "0.9000", runs["1"], "current", "champion"]
    assert lines[6:8] == ["not compared:", "  version 3: other data (data_fingerprint B)"]
    assert f"new      {model}@champion: version 2" in out.stdout

    refused = _promote_cli(store, model, tmp_path, "best=true",
                           "metric=test/f1_macro")
    assert refused.returncode == 2
    assert "metric=test/f1_macro: test metrics are reported, never used to choose" in " ".join(
        refused.stdout.split())
    assert list(tmp_path.iterdir()) == [], "a registry command leaves no files behind"


def test_cross_validation_registers_one_version_that_best_ranks_by_oof(
        tiny_cfg, tracking_uri: str, tmp_path: Path) -> None:
    result = run(tiny_cfg("experiment=cv5", "cv.folds=2"))
    client = MlflowClient(tracking_uri)
    (version,) = client.search_model_versions("name='exercise-classifier'")
    refit = client.get_run(version.run_id)
    assert refit.info.run_name == "refit" and version.run_id == result.mlflow_run_id
    assert "oof/f1_macro" in refit.data.metrics and "best_val/f1_macro" not in refit.data.metrics
    parent = client.get_run(refit.data.tags["mlflow.parentRunId"])
    assert parent.data.tags[MODEL_RUN_TAG] == refit.data.tags[MODEL_RUN_TAG] == refit.info.run_id

    # A later run on other photos (one more per variant) is never compared with it.
    photos = make_images(tmp_path / "other_photos", config_classes(), per_variant=3)
    other = run(tiny_cfg(f"data.root={photos}"))
    assert other.model_version == "2"
    promote(tracking_uri, "exercise-classifier", version=1)
    done = promote(tracking_uri, "exercise-classifier", best=True)
    assert done.selection.metric == "oof/f1_macro"
    assert [v.version for v in done.selection.compared] == ["1"] and not done.changed
    ((excluded, why),) = done.selection.excluded
    assert excluded.version == "2" and why.startswith("other data (data_fingerprint ")
    resolved = resolve_model(tracking_uri, "exercise-classifier", alias="champion",
                             dst=tmp_path / "champion")
    assert resolved.oof_csv is not None and resolved.metrics["oof/f1_macro"] == pytest.approx(
        result.oof_metrics["oof/f1_macro"])
