"""The export stage end to end: registered version -> app assets -> back into MLflow.

``shared_export`` runs the real entry point (``scripts/export.py``, int8 included) once per test
session on the tiny trained model, registered and promoted in a temporary MLflow store; the tests
here and in test_predict.py read what it wrote.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict
from PIL import Image

from fitlens.cli import user_message
from fitlens.contract import Resize
from fitlens.data.images import preprocess
from fitlens.export import pipeline
from fitlens.export.fixtures import FIXTURES, read_index, write_fixtures
from fitlens.export.metadata import read_metadata, sha256_file, validate_metadata
from fitlens.export.onnx import ParityResult, image_probabilities, onnx_outputs, session_for
from fitlens.export.pipeline import (
    ExportSettings,
    export_bundle,
    load_split,
    run,
)
from fitlens.export.quantize import QuantizationRefused
from fitlens.export.threshold import ThresholdSettings, choose_threshold
from fitlens.predict import Predictor
from fitlens.tracking.registry import (
    BUNDLE_ARTIFACT,
    EXPORT_ARTIFACT,
    SPLIT_ARTIFACT,
    RegistryError,
    promote,
)
from fitlens.tracking.store import connect
from tests.conftest import CONF, ROOT, config_classes
from tests.test_export_onnx import FIXTURE_DIR, TinyModel, tiny_model, tiny_onnx

MODEL_NAME = "exercise-classifier"
RUN_TEST_ACC = 0.875


@dataclass(frozen=True)
class SharedExport:
    model: TinyModel
    out_dir: Path
    tracking_uri: str
    run_id: str
    fixtures_dir: Path
    stdout: str


_EXPORTS: dict[Path, SharedExport] = {}
TARGET_PRECISION = 0.5


def register(uri: str, model: TinyModel, *, promote_to: str | None = "champion") -> str:
    """Log the bundle and split as a training run does, register version 1, promote it."""
    client = connect(uri)
    store = Path(uri.removeprefix("sqlite:///")).parent
    exp = client.create_experiment("fitlens", artifact_location=(store / "artifacts").as_uri())
    run_id = client.create_run(exp).info.run_id
    client.log_artifacts(run_id, str(model.bundle), BUNDLE_ARTIFACT)
    assert model.split_csv.name == SPLIT_ARTIFACT
    client.log_artifact(run_id, str(model.split_csv))
    client.log_metric(run_id, "test/acc", RUN_TEST_ACC)
    client.log_metric(run_id, "val/acc", 0.5)
    client.set_terminated(run_id)
    client.create_registered_model(MODEL_NAME)
    client.create_model_version(MODEL_NAME, f"runs:/{run_id}/{BUNDLE_ARTIFACT}", run_id)
    if promote_to:
        promote(uri, MODEL_NAME, version=1, alias=promote_to)
    return run_id


def fixtures_at(folder: Path, size: int) -> Path:
    """The committed fixture images with tensors recomputed at ``size`` (the tiny model's)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in FIXTURES:
        shutil.copy(FIXTURE_DIR / name, folder / name)
    write_fixtures(folder, config_classes(), size=size)
    return folder


def other_photos(folder: Path) -> Path:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)).save(
            folder / f"other_{i}.jpg")
    (folder / "unreadable.jpg").write_bytes(b"\xff\xd8 cut off")
    return folder


def shared_export(tmp_path_factory: pytest.TempPathFactory) -> SharedExport:
    key = tmp_path_factory.getbasetemp()
    if key not in _EXPORTS:
        model = tiny_model(tmp_path_factory)
        base = tmp_path_factory.mktemp("export")
        uri = f"sqlite:///{base}/mlruns/mlflow.db"
        run_id = register(uri, model)
        fixtures = fixtures_at(base / "fixtures", model.spec.size)
        done = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "export.py"), f"logger.tracking_uri={uri}",
             f"export.out_dir={base / 'assets'}", f"export.fixtures_dir={fixtures}",
             f"export.expected_dir={base / 'expected'}",
             f"export.other_dir={other_photos(base / 'other')}", "export.quantize=int8",
             # 12 test images: one flipped image is 8 points, so the gate is tested elsewhere.
             "export.max_drop=0.5", f"threshold.target_precision={TARGET_PRECISION}",
             f"hydra.run.dir={base / 'job'}"],
            capture_output=True, text=True, check=False, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        _EXPORTS[key] = SharedExport(model, base / "assets", uri, run_id, fixtures, done.stdout)
    return _EXPORTS[key]


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> SharedExport:
    return shared_export(tmp_path_factory)


@pytest.fixture(scope="module")
def meta(export: SharedExport) -> dict:
    return read_metadata(export.out_dir / "model_meta.json")


def export_config(*overrides: str, output_dir: Path) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="export", overrides=list(overrides))
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def kept(export: SharedExport) -> Path:
    """The complete export, in the export job's folder."""
    return export.out_dir.parent / "job" / "export"


def test_export_writes_the_app_assets_and_nothing_else(export: SharedExport, meta: dict) -> None:
    # The app's folder holds what ships; the complete export stays in the job's folder.
    assert meta["model_file"] == f"fitness_resnet18-{meta['sha256'][:12]}.onnx"
    assert sorted(p.name for p in export.out_dir.iterdir()) == [meta["model_file"],
                                                                "model_meta.json"]
    assert meta["variants"] == {}
    assert sorted(p.name for p in kept(export).iterdir()) == [
        "expected_probabilities.json", meta["model_file"], "fitness_resnet18_int8.onnx",
        "model_meta.json"]
    for line in ("fitlens export", "parity", "threshold", "held out", "int8",
                 "other exercises answered", " test photos (max drop"):
        assert line in export.stdout


def test_metadata_describes_the_model(export: SharedExport, meta: dict) -> None:
    spec = validate_metadata(meta, "model_meta.json")
    assert list(spec.classes) == config_classes() and spec.size == 32
    assert meta["model_name"] == "resnet18"
    assert meta["sha256"] == sha256_file(export.out_dir / meta["model_file"])
    assert meta["opset"] == 18
    assert meta["input"]["shape"] == [1, 3, 32, 32] and meta["input"]["batch"] == "dynamic"
    assert meta["input"]["normalization"] == "inside_model"
    assert meta["source"] == {"registered_model": MODEL_NAME, "version": "1",
                              "run_id": export.run_id}
    metrics = meta["metrics"]
    assert metrics["test/acc"] == RUN_TEST_ACC and "val/acc" not in metrics
    assert 0 <= metrics["export/other_accepted_at_threshold"] <= 1.0
    # The threshold is the one the validation split (plus export.other_dir: this model has no
    # reject class) gives the exported file.
    session = session_for(export.out_dir / meta["model_file"])
    val = export.model.samples["val"]
    probs, _ = image_probabilities(session, [s.path for s in val], Resize(32))
    other, _ = image_probabilities(session, sorted((export.out_dir.parent / "other").glob(
        "other_*.jpg")), Resize(32))
    choice = choose_threshold(np.concatenate([probs, other]),
                              np.array([s.label for s in val] + [6] * len(other)), 6,
                              ThresholdSettings(TARGET_PRECISION), "val")
    assert meta["threshold"] == choice.threshold
    point = meta["operating_point"]
    assert point["met"] == choice.met and point["target_precision"] == TARGET_PRECISION
    assert point["chosen_on"]["precision_lower"] == choice.point.precision_lower
    assert point["chosen_on"]["other"] == 5 and "validation split" in point["chosen_on"]["photos"]
    assert point["held_out"]["photos"] == "test split"
    test = export.model.samples["test"]
    test_probs, _ = image_probabilities(session, [s.path for s in test], Resize(32))
    assert point["held_out"]["known"] == len(test)
    assert metrics["export/test_acc"] == np.mean(test_probs.argmax(1) ==
                                                 [s.label for s in test])


def test_int8_variant_is_listed_and_usable(export: SharedExport, meta: dict) -> None:
    complete = read_metadata(kept(export) / "model_meta.json")
    assert {k: v for k, v in complete.items() if k != "variants"} == \
        {k: v for k, v in meta.items() if k != "variants"}
    variant = complete["variants"]["int8"]
    path = kept(export) / variant["model_file"]
    assert variant["sha256"] == sha256_file(path) and variant["size_bytes"] == path.stat().st_size
    assert variant["size_bytes"] < (export.out_dir / meta["model_file"]).stat().st_size / 3
    assert 0 < variant["threshold"] <= 1 and "static QDQ" in variant["quantization"]
    assert set(variant["metrics"]) == {"export/test_acc", "export/test_f1_macro"}
    predictor = Predictor(kept(export), variant="int8")
    assert predictor.threshold == variant["threshold"]
    predictor.predict_file(export.model.samples["test"][0].path)


def test_expected_probabilities_are_the_models_outputs_on_the_fixtures(
        export: SharedExport, meta: dict) -> None:
    expected = json.loads((export.out_dir.parent / "expected" /
                           "expected_probabilities.json").read_text())
    assert expected["model_sha256"] == meta["sha256"]
    assert expected["model_file"] == meta["model_file"] and expected["resize"]["size"] == 32
    index = {e["file"]: e for e in read_index(export.fixtures_dir)["fixtures"]}
    assert [f["file"] for f in expected["fixtures"]] == list(index)
    session = session_for(export.out_dir / meta["model_file"])
    resize = validate_metadata(meta, "meta").resize
    for entry in expected["fixtures"]:
        _, probs = onnx_outputs(session, preprocess(export.fixtures_dir / entry["file"], resize))
        np.testing.assert_allclose(entry["probabilities"], probs[0], atol=1e-7)


def test_export_is_recorded_on_the_version_and_its_run(export: SharedExport,
                                                       meta: dict) -> None:
    client = connect(export.tracking_uri)
    version = client.get_model_version(MODEL_NAME, "1")
    assert version.tags["exported_onnx_sha256"] == meta["sha256"]
    assert version.tags["exported_at"].startswith("20")
    logged = {Path(a.path).name for a in client.list_artifacts(export.run_id, EXPORT_ARTIFACT)}
    assert logged == {p.name for p in kept(export).iterdir()}


def test_no_champion_alias_is_a_clear_error(tmp_path: Path,
                                            tmp_path_factory: pytest.TempPathFactory) -> None:
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    register(uri, tiny_model(tmp_path_factory), promote_to=None)
    out = tmp_path / "assets"
    cfg = export_config(f"logger.tracking_uri={uri}", f"export.out_dir={out}",
                        output_dir=tmp_path / "job")
    with pytest.raises(RegistryError, match="no version of 'exercise-classifier' has alias "
                                            "'champion'; run scripts/promote.py") as info:
        run(cfg)
    assert not out.exists()
    # scripts/export.py prints it as one "error: <message>" line, exit status 2 (fitlens.cli).
    assert user_message(info.value) is not None


def test_a_refused_int8_leaves_the_previous_export_in_place(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    model, fp32 = tiny_model(tmp_path_factory), tiny_onnx(tmp_path_factory)

    def exported(net: object, dest: Path, **_: object) -> ParityResult:
        shutil.copy(fp32, dest)  # the real export is tested above; this test is about the end
        return ParityResult(images=1, tolerance=1e-4, max_abs_diff=0.0, max_logit_diff=0.0)

    def calibrated_on_black(fp32_path: Path, dest: Path, calibration: list[Path],
                            resize: Resize) -> Path:
        black = tmp_path / "black.png"
        Image.new("RGB", (resize.size, resize.size)).save(black)
        return real_quantize(fp32_path, dest, [black], resize)

    real_quantize = pipeline.quantize_int8
    monkeypatch.setattr(pipeline, "export_onnx", exported)
    monkeypatch.setattr(pipeline, "quantize_int8", calibrated_on_black)
    out = tmp_path / "assets"
    out.mkdir()
    (out / "model_meta.json").write_text("previous")
    settings = ExportSettings(out_dir=out, fixtures_dir=fixtures_at(tmp_path / "fx", 32),
                              quantize="int8", threshold=ThresholdSettings(0.5))

    with pytest.raises(QuantizationRefused, match="export.max_drop=0.01"):
        export_bundle(model.bundle, model.split_csv, settings)
    assert [p.name for p in out.iterdir()] == ["model_meta.json"]
    assert (out / "model_meta.json").read_text() == "previous"


def test_split_photos_are_found_under_data_root_after_a_move(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    model = tiny_model(tmp_path_factory)
    photos = model.samples["train"][0].path.parents[1]
    moved = tmp_path / "split.csv"
    moved.write_text(model.split_csv.read_text().replace(str(photos), "/gone/photos"))
    nowhere = ExportSettings(out_dir=tmp_path, fixtures_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="not found.*export.data_root=None"):
        load_split(moved, model.spec, nowhere)
    settings = ExportSettings(out_dir=tmp_path, fixtures_dir=tmp_path, data_root=photos)
    splits = load_split(moved, model.spec, settings)
    assert {k: len(v) for k, v in splits.items()} == {k: len(v)
                                                      for k, v in model.samples.items()}
    with pytest.raises(FileNotFoundError, match="export.split_file"):
        load_split(None, model.spec, settings)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("quantize", "int4", "export.quantize='int4'"),
    ("max_drop", 1.5, "export.max_drop=1.5"),
    ("parity_tol", 0.0, "export.parity_tol=0.0"),
])
def test_settings_are_checked(field: str, value: object, message: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        ExportSettings(out_dir=tmp_path, fixtures_dir=tmp_path, **{field: value})
