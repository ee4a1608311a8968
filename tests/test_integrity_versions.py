"""Registered versions are immutable and their bundles are data.

A resume from a finished run's checkpoint must not write into that run (whose bundle is version
1's weights); an export must refuse a bundle that changed after its version was logged; and a
bundle's ``model.yaml`` must never import or call anything but the project's own builders.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow import MlflowClient
from omegaconf import OmegaConf

from fitlens.data.datamodule import spec_of
from fitlens.export import pipeline
from fitlens.models.backbones import Backbone, mobilenet_v2
from fitlens.models.checkpoint import (
    CheckpointError,
    check_model_config,
    load_bundle,
    save_bundle,
)
from fitlens.models.classifier import ExerciseNet
from fitlens.tracking.registry import RegistryError, resolve_model
from fitlens.tracking.runs import RESUMED_FROM_TAG
from fitlens.train import run
from tests.conftest import CONF, TINY, compose_config, config_classes, make_images
from tests.test_export_pipeline import export_config
from tests.test_harden_faults import WritesMarker

MODEL = "exercise-classifier"


@dataclass(frozen=True)
class Versions:
    uri: str
    first_run: str
    second_run: str
    #: Version 1's bundle files (name -> bytes) and val/f1_macro history, before the resume.
    bundle_before: dict[str, bytes]
    history_before: list[tuple[int, float]]


def _bundle_files(uri: str, run_id: str, dst: Path) -> dict[str, bytes]:
    folder = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="bundle",
                                                      dst_path=str(dst), tracking_uri=uri))
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _history(client: MlflowClient, run_id: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, "val/f1_macro")]


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> Versions:
    """Version 1 from a one-epoch run, then the README's resume (same job, ckpt_path=its
    last.ckpt) with one more epoch, which registers version 2."""
    base = tmp_path_factory.mktemp("versions")
    uri = f"sqlite:///{base}/mlruns/mlflow.db"
    images = make_images(base / "photos", config_classes())
    job = [*TINY, f"data.root={images}", f"logger.tracking_uri={uri}", "test=false"]
    first = run(compose_config([*job, "trainer.max_epochs=1"], output_dir=base / "first"))
    assert first.model_version == "1"
    client = MlflowClient(uri)
    bundle = _bundle_files(uri, first.mlflow_run_id, base / "before")
    history = _history(client, first.mlflow_run_id)
    checkpoint = base / "first" / "checkpoints" / "last.ckpt"
    second = run(compose_config([*job, "trainer.max_epochs=2", f"ckpt_path={checkpoint}"],
                                output_dir=base / "second"))
    assert second.model_version == "2"
    return Versions(uri, first.mlflow_run_id, second.mlflow_run_id, bundle, history)


def test_resuming_a_finished_run_leaves_its_version_untouched(versions: Versions,
                                                              tmp_path: Path) -> None:
    client = MlflowClient(versions.uri)
    first = client.get_run(versions.first_run)
    second = client.get_run(versions.second_run)
    assert versions.second_run != versions.first_run, "a new run for the resumed job"
    assert second.data.tags[RESUMED_FROM_TAG] == versions.first_run
    assert client.get_model_version(MODEL, "2").run_id == versions.second_run
    assert client.get_model_version(MODEL, "1").run_id == versions.first_run
    # Version 1's run is exactly as it was: status, curve, bundle bytes.
    assert first.info.status == "FINISHED" and second.info.status == "FINISHED"
    assert _history(client, versions.first_run) == versions.history_before
    assert _bundle_files(versions.uri, versions.first_run, tmp_path) == versions.bundle_before
    # The resumed job did continue the training (epoch 1 after the checkpoint's epoch 0).
    epochs = {int(m.value) for m in client.get_metric_history(versions.second_run, "epoch")}
    assert max(epochs) == 1
    # And version 1 still exports: its bundle matches the digest recorded when it was logged.
    resolved = resolve_model(versions.uri, MODEL, version=1, dst=tmp_path / "resolved")
    assert resolved.run_id == versions.first_run


@pytest.mark.parametrize("swap", ["weights", "class order"])
def test_a_bundle_changed_after_registration_is_refused_at_export(
        versions: Versions, tmp_path: Path, swap: str) -> None:
    client = MlflowClient(versions.uri)
    stored = Path(client.get_run(versions.first_run).info.artifact_uri.removeprefix("file://"))
    target = stored / "bundle" / ("model_state.pt" if swap == "weights" else "contract.json")
    original = target.read_bytes()
    try:
        if swap == "weights":  # version 2's weights under version 1's name: the reported case
            other = Path(client.get_run(versions.second_run).info.artifact_uri
                         .removeprefix("file://")) / "bundle" / "model_state.pt"
            target.write_bytes(other.read_bytes())
        else:  # the same weights, the class names reordered: silently wrong answers
            contract = json.loads(original)
            contract["classes"] = contract["classes"][::-1]
            target.write_text(json.dumps(contract))
        with pytest.raises(RegistryError, match=re.escape(
                f"version 1 of '{MODEL}' (run {versions.first_run}): its bundle/")) as info:
            resolve_model(versions.uri, MODEL, version=1, dst=tmp_path / "resolved")
        assert "bundle_sha256=" in str(info.value)
        # The same through the export stage: an expected error (exit 2, no traceback), and
        # nothing reaches the app's folder.
        out = tmp_path / "assets"
        cfg = export_config(f"logger.tracking_uri={versions.uri}", "export.version=1",
                            f"export.out_dir={out}", output_dir=tmp_path / "job")
        with pytest.raises(RegistryError, match="bundle_sha256="):
            pipeline.run(cfg)
        assert not out.exists()
    finally:
        target.write_bytes(original)


# --- the bundle is data ------------------------------------------------------------------------


def _bundle_with(tmp_path: Path, model_yaml: str) -> Path:
    """A real bundle (weights and contract of a tiny network) with ``model.yaml`` replaced."""
    cfg = compose_config(TINY)
    bundle = tmp_path / "bundle"
    net = ExerciseNet(_tiny_backbone(), len(cfg.data.classes))
    save_bundle(net.state_dict(), cfg.model, spec_of(cfg.data), "mobilenet_v2", bundle)
    (bundle / "model.yaml").write_text(model_yaml)
    return bundle


def _tiny_backbone() -> Backbone:
    return mobilenet_v2(pretrained=False)


def _payload(tmp_path: Path, marker: Path) -> Path:
    path = tmp_path / "payload.pt"
    torch.save({"x": WritesMarker(marker)}, path)
    return path


EXPLOITS = {
    # The reported shape: torch.load with weights_only=false unpickles code.
    "torch.load": """
backbone:
  _target_: fitlens.models.backbones.mobilenet_v2
net:
  _target_: torch.load
  f: {payload}
  weights_only: false
""",
    "os.system as the network": """
backbone:
  _target_: fitlens.models.backbones.mobilenet_v2
net:
  _target_: os.system
  _args_: ["touch {marker}"]
""",
    "os.system as the backbone": """
backbone:
  _target_: os.system
  _args_: ["touch {marker}"]
""",
    "os.system nested in a network argument": """
backbone:
  _target_: fitlens.models.backbones.mobilenet_v2
net:
  _target_: fitlens.models.classifier.ExerciseNet
  _partial_: true
  dropout:
    _target_: os.system
    _args_: ["touch {marker}"]
""",
    "_args_ on an allowed builder": """
backbone:
  _target_: fitlens.models.backbones.mobilenet_v2
  _args_: [true]
""",
    "_partial_ on the backbone": """
backbone:
  _target_: fitlens.models.backbones.mobilenet_v2
  _partial_: true
""",
    "_recursive_ off": """
backbone:
  _target_: fitlens.models.backbones.mobilenet_v2
net:
  _target_: fitlens.models.classifier.ExerciseNet
  _partial_: true
  _recursive_: false
""",
    "a resolver in a value": """
backbone:
  _target_: fitlens.models.backbones.mobilenet_v2
net:
  _target_: fitlens.models.classifier.ExerciseNet
  _partial_: true
  dropout: ${{oc.env:HOME}}
""",
}


@pytest.mark.parametrize("exploit", list(EXPLOITS))
def test_a_bundle_model_yaml_that_would_run_code_is_refused_unexecuted(
        tmp_path: Path, exploit: str) -> None:
    marker = tmp_path / "code_ran"
    text = EXPLOITS[exploit].format(payload=_payload(tmp_path, marker), marker=marker)
    bundle = _bundle_with(tmp_path, text)
    with pytest.raises(CheckpointError, match=re.escape(f"{bundle / 'model.yaml'}: ")) as info:
        load_bundle(bundle)
    assert "refused before anything in it is imported or run" in str(info.value)
    assert not marker.exists()


def test_the_projects_own_model_configs_pass_the_check(tmp_path: Path) -> None:
    for model in sorted(p.stem for p in (CONF / "model").glob("*.yaml")):
        check_model_config(OmegaConf.create(OmegaConf.to_container(
            compose_config([f"model={model}"]).model, resolve=True)), saved=True)
    # The pose model's part has its own place: a pose builder elsewhere is refused.
    pose_cfg = OmegaConf.to_container(compose_config(["model=pose_fusion"]).model, resolve=True)
    pose_cfg["net"]["pose"] = pose_cfg["pose"]
    with pytest.raises(CheckpointError, match="net.pose._target_"):
        check_model_config(OmegaConf.create(pose_cfg))
    # A real bundle still loads and gives the network it saved.
    cfg = compose_config(TINY)
    net = ExerciseNet(_tiny_backbone(), len(cfg.data.classes)).eval()
    bundle = save_bundle(net.state_dict(), cfg.model, spec_of(cfg.data), "mobilenet_v2",
                         tmp_path / "bundle")
    loaded, _, _ = load_bundle(bundle)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))
