"""``scripts/evaluate.py`` on an exported ONNX file, on the champion version and on a training
checkpoint: the table, the confusion matrix, the per-class CSV and the per-photo answers."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf
from PIL import Image

from fitlens.tracking.registry import promote
from tests.conftest import TrackedTraining
from tests.test_cli_errors import run_entry
from tests.test_predict import colour_model


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _photo(path: Path, rgb: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 16), rgb).save(path)


def test_an_onnx_file_on_labelled_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    model = colour_model(tmp_path / "model", threshold=0.9)
    images, other = tmp_path / "photos", tmp_path / "other"
    _photo(images / "red" / "r1.png", (250, 10, 0))
    _photo(images / "red" / "r2.png", (120, 110, 110))  # red by a hair: "not sure"
    _photo(images / "green" / "g1.png", (0, 250, 10))
    _photo(images / "blue" / "b1.png", (250, 0, 20))  # looks red: a wrong answer
    _photo(other / "o1.png", (0, 0, 250))  # another exercise taken for "blue"
    _photo(other / "nested" / "o2.png", (128, 128, 128))
    (other / "broken.jpg").write_bytes(b"\xff\xd8 nope")
    out = tmp_path / "eval"

    ran = run_entry("scripts/evaluate.py", [
        f"evaluate.onnx={model / 'colour.onnx'}", f"evaluate.images={images}",
        f"evaluate.other={other}", f"hydra.run.dir={out}"], monkeypatch, capsys)

    assert ran.code == 0, ran.err
    result = json.loads((out / "metrics.json").read_text())
    assert result["threshold"] == 0.9 and result["threshold_source"] == "model_meta.json"
    assert result["evaluated"] == 6 and len(result["skipped"]) == 1
    assert result["metrics"]["acc"] == pytest.approx(3 / 4)
    assert result["metrics"]["acc_blue"] == 0 and result["metrics"]["acc_red"] == 1
    assert result["answers"] == {"known": {"right": 2, "wrong": 1, "not_sure": 1,
                                           "not_one_i_know": 0},
                                 "other": {"accepted": 1, "not_sure": 1, "not_one_i_know": 0}}
    matrix = {r["true \\ predicted"]: r for r in _csv(out / "confusion.csv")}
    assert list(matrix) == ["red", "green", "blue", "other"]
    assert matrix["blue"]["red"] == "1" and matrix["other"]["blue"] == "1"
    per_class = {r["class"]: r for r in _csv(out / "per_class.csv")}
    assert per_class["red"]["recall"] == "1.0" and per_class["blue"]["support"] == "1"
    answers = {Path(r["file"]).name: r["answer"] for r in _csv(out / "predictions.csv")}
    assert answers == {"r1.png": "exercise", "r2.png": "not_sure", "g1.png": "exercise",
                       "b1.png": "exercise", "o1.png": "exercise", "o2.png": "not_sure"}
    assert (out / "confusion.png").is_file()
    assert "acc_red" in ran.out and f"folder     {out}" in ran.out

    # A file the metadata does not describe is refused, naming both.
    (model / "other.onnx").write_bytes((model / "colour.onnx").read_bytes())
    ran = run_entry("scripts/evaluate.py", [f"evaluate.onnx={model / 'other.onnx'}",
                                            f"evaluate.images={images}",
                                            f"hydra.run.dir={tmp_path / 'refused'}"],
                    monkeypatch, capsys)
    assert ran.code == 2 and "describes colour.onnx, not this file" in ran.err


def test_the_champion_and_a_checkpoint_on_the_test_split(
        tracked_run: TrackedTraining, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracked_run.tracking_uri)
    result = tracked_run.result
    promote(tracked_run.tracking_uri, "exercise-classifier", version=result.model_version)
    client = MlflowClient(tracked_run.tracking_uri)
    # As an export records itself on the version's run: the threshold evaluate must use.
    (tmp_path / "model_meta.json").write_text(json.dumps({"threshold": 0.42}))
    client.log_artifact(result.mlflow_run_id, str(tmp_path / "model_meta.json"), "export")
    champion = tmp_path / "champion"

    ran = run_entry("scripts/evaluate.py", ["evaluate.log_to_run=true",
                                            f"hydra.run.dir={champion}"], monkeypatch, capsys)

    assert ran.code == 0, ran.err
    scores = json.loads((champion / "metrics.json").read_text())
    # The app's preprocessing on the registered bundle gives the training run's test scores.
    assert scores["metrics"]["acc"] == pytest.approx(result.test_metrics["test/acc"])
    assert scores["metrics"]["f1_macro"] == pytest.approx(result.test_metrics["test/f1_macro"])
    assert scores["photos"] == "the test split of its training run"
    assert (scores["threshold"], scores["threshold_source"]) == (
        0.42, "its export's model_meta.json")
    logged = {a.path for a in client.list_artifacts(result.mlflow_run_id, "eval/champion")}
    assert {f"eval/champion/{name}" for name in ("metrics.json", "confusion.png",
                                                  "per_class.csv")} <= logged
    metrics = client.get_run(result.mlflow_run_id).data.metrics
    assert metrics["eval/acc"] == pytest.approx(scores["metrics"]["acc"])

    # The best checkpoint, in a run folder as train.py leaves it (.hydra/config.yaml, split.csv).
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    checkpoint = run_dir / "checkpoints" / Path(result.best_checkpoint).name
    shutil.copy(result.best_checkpoint, checkpoint)
    shutil.copy(Path(result.output_dir) / "split.csv", run_dir / "split.csv")
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(tracked_run.cfg, run_dir / ".hydra" / "config.yaml")
    ran = run_entry("scripts/evaluate.py", [f"evaluate.checkpoint={checkpoint}",
                                            f"hydra.run.dir={tmp_path / 'checkpoint'}"],
                    monkeypatch, capsys)
    assert ran.code == 0, ran.err
    again = json.loads((tmp_path / "checkpoint" / "metrics.json").read_text())
    assert again["run_id"] == result.mlflow_run_id and again["threshold"] == 0
    for name in ("acc", "f1_macro"):  # threshold-free: the same weights, the same photos
        assert again["metrics"][name] == pytest.approx(scores["metrics"][name])
