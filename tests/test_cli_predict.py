"""predict's closing summary and ``--save``: predictions.csv and one picture per photo, with a
pose model's skeleton and person box mapped back onto the photo."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from fitlens.contract import InputSpec, Resize
from fitlens.export.metadata import build_metadata, sha256_file, write_metadata
from fitlens.pictures import BOX_COLOUR, SKELETON_COLOUR, input_to_photo
from scripts.predict import main as predict_main
from tests.test_predict import COLOURS, colour_model

#: The hand-built pose model's landmarks, in model-input pixels of a 64 px letterbox: both
#: shoulders seen (their skeleton edge must be drawn), the left elbow barely (no edge to it).
SIZE = 64
SEEN = {11: (8.0, 24.0, 0.9), 12: (56.0, 24.0, 0.9), 13: (8.0, 40.0, 0.2)}
BOX = (4.0, 20.0, 60.0, 44.0)
GREY = (100, 100, 100)


def pose_model(folder: Path) -> Path:
    """An exported-model folder whose graph scores colours like ``colour_model`` and also outputs
    fixed ``keypoints`` [N, 33, 3] and ``person_box`` [N, 4], as a pose model's metadata says."""
    folder.mkdir(parents=True, exist_ok=True)
    keypoints = np.zeros((1, 33, 3), np.float32)
    for i, point in SEEN.items():
        keypoints[0, i] = point
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input", "axes"], ["mean"], keepdims=0),
         helper.make_node("Mul", ["mean", "scale"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
         # A [N, 1] zero per photo, broadcast onto the constants: batch-sized outputs.
         helper.make_node("ReduceMean", ["logits", "one"], ["any"], keepdims=1),
         helper.make_node("Mul", ["any", "zero"], ["zeros"]),
         helper.make_node("Unsqueeze", ["zeros", "two"], ["zeros3"]),
         helper.make_node("Add", ["zeros3", "kp"], ["keypoints"]),
         helper.make_node("Add", ["zeros", "box"], ["person_box"])],
        "pose",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("keypoints", TensorProto.FLOAT, ["batch", 33, 3]),
         helper.make_tensor_value_info("person_box", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3]),
         helper.make_tensor("scale", TensorProto.FLOAT, [], [10.0]),
         helper.make_tensor("one", TensorProto.INT64, [1], [1]),
         helper.make_tensor("two", TensorProto.INT64, [1], [2]),
         helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
         helper.make_tensor("kp", TensorProto.FLOAT, [1, 33, 3], keypoints.ravel().tolist()),
         helper.make_tensor("box", TensorProto.FLOAT, [1, 4], list(BOX))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.checker.check_model(model, full_check=True)
    path = folder / "pose.onnx"
    onnx.save_model(model, str(path))
    spec = InputSpec(classes=COLOURS, size=SIZE, resize_mode="letterbox")
    write_metadata(build_metadata(spec, model_file=path.name, model_name="pose_colour",
                                  sha256=sha256_file(path), opset=18, threshold=0.5,
                                  registered_model="pose", version="1", run_id=None, metrics={},
                                  pose_outputs=True), folder / "model_meta.json")
    return folder


def _near(pixel: tuple[int, ...], colour: tuple[int, int, int], tolerance: int = 60) -> bool:
    return sum(abs(int(a) - int(b)) for a, b in zip(pixel, colour, strict=False)) < tolerance


def test_summary_and_saved_predictions(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    model = colour_model(tmp_path / "colour")
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (30, 20), (250, 10, 0)).save(photos / "red.png")
    Image.new("RGB", (30, 20), (128, 128, 128)).save(photos / "grey.png")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 nope")
    saved = tmp_path / "saved"

    assert predict_main([str(photos), "--model-dir", str(model), "--save", str(saved)]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("3 photo(s): 1 classified, 1 not sure, 0 none of the known "
                           "exercises, 1 skipped, ") and " ms per photo; saved to " in last
    with (saved / "predictions.csv").open(newline="") as fh:
        rows = {Path(r["file"]).name: r for r in csv.DictReader(fh)}
    assert rows["red.png"]["answer"] == "exercise" and rows["red.png"]["label"] == "red"
    assert rows["red.png"]["top1"] == "red" and float(rows["red.png"]["top1_probability"]) > 0.9
    assert rows["grey.png"]["answer"] == "not_sure" and rows["grey.png"]["label"] == ""
    assert rows["broken.jpg"]["answer"] == "skipped" and rows["broken.jpg"]["skipped"]
    assert sorted(p.name for p in saved.glob("*.jpg")) == ["grey.jpg", "red.jpg"]

    assert predict_main([str(photos), "--model-dir", str(model), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["summary"]["skipped"] == 1, "stdout stays pure JSON"
    assert captured.err.startswith("3 photo(s): 1 classified")


def test_input_pixels_map_back_through_reduce_and_letterbox() -> None:
    resize = Resize(64, "letterbox", max_side=2048)
    # 5000x2500 is reduced by 3 to 1667x834, then letterboxed to 64x32 at top 16.
    corners = input_to_photo(np.array([[0.0, 16.0], [64.0, 48.0]]), resize, 5000, 2500)
    np.testing.assert_allclose(corners, [[0, 0], [5001, 2502]])
    stretch = input_to_photo(np.array([[32.0, 32.0]]), Resize(64, "stretch"), 640, 320)
    np.testing.assert_allclose(stretch, [[320, 160]])


def test_a_pose_models_skeleton_and_box_are_drawn_on_the_photo(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = pose_model(tmp_path / "pose")
    photo = tmp_path / "photos" / "lifter.png"
    photo.parent.mkdir()
    Image.new("RGB", (256, 128), GREY).save(photo)
    saved = tmp_path / "saved"

    assert predict_main([str(photo), "--model-dir", str(model), "--save", str(saved)]) == 0
    capsys.readouterr()
    picture = Image.open(saved / "lifter.jpg").convert("RGB")
    assert picture.width == 256 and picture.height > 128, "the caption goes under the photo"
    # Letterbox 256x128 -> 64x32 at top 16: photo = 4 * (x, y - 16).
    assert _near(picture.getpixel((128, 32)), SKELETON_COLOUR), "shoulder to shoulder"
    assert _near(picture.getpixel((32, 32)), SKELETON_COLOUR), "the left shoulder's dot"
    assert _near(picture.getpixel((32, 64)), GREY), "no edge to a barely visible elbow"
    assert _near(picture.getpixel((128, 17)), BOX_COLOUR), "the box's top edge"
    assert _near(picture.getpixel((17, 64)), BOX_COLOUR), "the box's left edge"
    assert _near(picture.getpixel((128, 80)), GREY), "inside the box, nothing drawn"
    caption = np.asarray(picture)[128:]
    assert (caption.min(axis=2) < 128).any(), "the answer is written under the photo"
