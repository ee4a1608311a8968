"""predict: the exported model, the app's preprocessing and threshold, on good and bad files.

Most tests use a hand-built "colour" model (three classes: the image's mean red, green or blue),
whose answers are known; one runs the real exported model through the command line.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from PIL import Image

from fitlens.contract import InputSpec
from fitlens.export.metadata import (
    MetadataError,
    build_metadata,
    read_metadata,
    sha256_file,
    write_metadata,
)
from fitlens.predict import Predictor, format_text, iter_images, to_json
from scripts.predict import main as predict_main
from tests.conftest import ROOT

COLOURS = ("red", "green", "blue")


def colour_model(folder: Path, size: int = 16, scale: float = 10.0,
                 threshold: float = 0.9) -> Path:
    """An exported-model folder whose ONNX graph scores each class by the mean of its channel:
    logits = scale * mean(x[:, c]), probabilities = softmax(logits)."""
    folder.mkdir(parents=True, exist_ok=True)
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input", "axes"], ["mean"], keepdims=0),
         helper.make_node("Mul", ["mean", "scale"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "colour",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3]),
         helper.make_tensor("scale", TensorProto.FLOAT, [], [scale])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.checker.check_model(model, full_check=True)
    path = folder / "colour.onnx"
    onnx.save_model(model, str(path))
    meta = build_metadata(InputSpec(classes=COLOURS, size=size), model_file=path.name,
                          model_name="colour", sha256=sha256_file(path), opset=18,
                          threshold=threshold, registered_model="colour", version="1",
                          run_id=None, metrics={})
    write_metadata(meta, folder / "model_meta.json")
    return folder


def _solid(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (30, 20)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return colour_model(tmp_path_factory.mktemp("colour"))


@pytest.fixture(scope="module")
def predictor(model_dir: Path) -> Predictor:
    return Predictor(model_dir)


def test_confident_answer_with_ranked_top_k(predictor: Predictor, tmp_path: Path) -> None:
    p = predictor.predict_file(_solid(tmp_path / "red.png", (255, 40, 0)), top_k=3)
    assert [c for c, _ in p.top] == ["red", "green", "blue"]
    probs = [prob for _, prob in p.top]
    assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1, abs=1e-6)
    assert p.confident and p.label == "red"
    assert len(predictor.predict_file(tmp_path / "red.png", top_k=1).top) == 1


def test_below_threshold_is_not_sure(predictor: Predictor, tmp_path: Path) -> None:
    p = predictor.predict_file(_solid(tmp_path / "grey.png", (128, 128, 128)))
    assert not p.confident and p.label is None and p.top[0][1] < predictor.threshold
    assert "not sure (best 33.3% < threshold 90.0%)" in format_text(
        predictor.predict_paths([tmp_path / "grey.png"]))


def test_directory_is_walked_and_bad_files_are_skipped(predictor: Predictor,
                                                       tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    _solid(photos / "a_red.jpg", (250, 0, 0))
    _solid(photos / "nested" / "b_blue.PNG", (0, 0, 250))
    _solid(photos / ".hidden" / "c.png", (0, 250, 0))
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (photos / "empty.png").write_bytes(b"")
    (photos / "notes.txt").write_text("ignored: not an image suffix")
    missing = tmp_path / "missing.jpg"

    result = predictor.predict_paths([photos, missing])

    assert [(p.path.name, p.label) for p in result.predictions] == [("a_red.jpg", "red"),
                                                                     ("b_blue.PNG", "blue")]
    skipped = {s.path.name: s.reason for s in result.skipped}
    assert set(skipped) == {"broken.jpg", "empty.png", "missing.jpg"}
    assert "empty file" in skipped["empty.png"] and "cannot be read" in skipped["missing.jpg"]
    text = format_text(result)
    assert "broken.jpg: skipped" in text and "a_red.jpg: red  [red " in text


def test_named_files_are_tried_whatever_their_suffix(tmp_path: Path) -> None:
    odd = tmp_path / "photo.dat"
    Image.new("RGB", (8, 8), (0, 200, 0)).save(odd, format="PNG")
    assert list(iter_images([odd])) == [odd]


def test_json_output_and_exit_codes(model_dir: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    good = _solid(tmp_path / "green.png", (0, 255, 0))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"garbage")

    assert predict_main([str(good), str(bad), "--model-dir", str(model_dir), "--json",
                         "--top-k", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == {"file": "colour.onnx", "sha256": sha256_file(model_dir / "colour.onnx"),
                            "variant": None, "registered_model": "colour", "version": "1"}
    assert out["threshold"] == 0.9
    (pred,) = out["predictions"]
    assert pred["file"] == str(good) and pred["label"] == "green" and pred["confident"]
    assert [t["class"] for t in pred["top"]] == ["green", "red"]
    assert out["skipped"] == [{"file": str(bad), "reason": out["skipped"][0]["reason"]}]

    assert predict_main([str(bad), "--model-dir", str(model_dir)]) == 1
    assert "bad.jpg: skipped" in capsys.readouterr().out
    assert predict_main([str(good), "--model-dir", str(tmp_path / "nowhere")]) == 2
    assert "model_meta.json: not found" in capsys.readouterr().err


def test_model_that_does_not_match_its_metadata_is_refused(model_dir: Path,
                                                           tmp_path: Path) -> None:
    copy = colour_model(tmp_path / "copy")
    (copy / "colour.onnx").write_bytes((model_dir / "colour.onnx").read_bytes() + b"\0")
    with pytest.raises(MetadataError, match="SHA-256 differs"):
        Predictor(copy)
    with pytest.raises(MetadataError, match="no variant 'int8'.*export.quantize=int8"):
        Predictor(model_dir, variant="int8")
    (copy / "colour.onnx").unlink()
    with pytest.raises(MetadataError, match="names colour.onnx, which is not in"):
        Predictor(copy)


def test_variant_is_loaded_with_its_own_threshold(model_dir: Path, tmp_path: Path) -> None:
    folder = colour_model(tmp_path / "variants")
    meta = read_metadata(folder / "model_meta.json")
    meta["variants"] = {"int8": {"model_file": "colour.onnx", "sha256": meta["sha256"],
                                 "threshold": 0.5}}
    write_metadata(meta, folder / "model_meta.json")
    predictor = Predictor(folder, variant="int8")
    assert predictor.threshold == 0.5 and predictor.variant == "int8"
    grey = predictor.predict_file(_solid(tmp_path / "reddish.png", (140, 120, 120)))
    assert grey.top[0][0] == "red" and grey.confident


# --- any file in, only documented outcomes out -------------------------------------------------

_MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I", "I;16", "F", "YCbCr"]
_FORMATS = ["PNG", "JPEG", "WEBP", "TIFF", "GIF", "BMP"]


@st.composite
def image_files(draw: st.DrawFn) -> bytes:
    mode = draw(st.sampled_from(_MODES))
    width, height = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    seed = draw(st.integers(0, 2**16))
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    img = Image.fromarray(rgb).convert(mode)
    buffer = io.BytesIO()
    try:
        img.save(buffer, format=draw(st.sampled_from(_FORMATS)))
    except (OSError, ValueError, KeyError):
        buffer = io.BytesIO()
        img.save(buffer, format="TIFF")  # TIFF stores every mode
    data = buffer.getvalue()
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]  # truncated download
    return data


# PIL warns about the truncated and corrupt files this feeds it; that is the point.
@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(st.binary(max_size=512), image_files()),
       suffix=st.sampled_from([".jpg", ".png", ".webp", ".tif", ""]))
def test_any_file_gives_a_result_or_a_reported_skip(predictor: Predictor, data: bytes,
                                                    suffix: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(data)
        result = predictor.predict_paths([path], top_k=3)
    assert len(result.predictions) + len(result.skipped) == 1
    for p in result.predictions:
        probs = [prob for _, prob in p.top]
        assert len(p.top) == 3 and sum(probs) == pytest.approx(1, abs=1e-5)
        assert probs == sorted(probs, reverse=True)
    for s in result.skipped:
        assert s.path == path and s.reason
    json.dumps(to_json(result, predictor))


# --- the real exported model, through the command line -----------------------------------------


def test_cli_on_the_exported_model(tmp_path_factory: pytest.TempPathFactory) -> None:
    from tests.test_export_pipeline import shared_export

    export = shared_export(tmp_path_factory)
    photos = [s.path for s in export.model.samples["test"]]
    broken = tmp_path_factory.mktemp("bad") / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really")
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "predict.py"), "--json",
         "--model-dir", str(export.out_dir), *map(str, photos), str(broken)],
        capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    meta = read_metadata(export.out_dir / "model_meta.json")
    assert out["threshold"] == meta["threshold"]
    assert len(out["predictions"]) == len(photos)
    assert out["skipped"][0]["file"] == str(broken)
    right = [p["top"][0]["class"] == s.class_name
             for p, s in zip(out["predictions"], export.model.samples["test"], strict=True)]
    # The tiny model is right on most of its test photos, as the export measured.
    assert np.mean(right) == pytest.approx(meta["metrics"]["export/test_acc"])
