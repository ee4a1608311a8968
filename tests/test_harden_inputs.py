"""Bad input, end to end: broken photos in the data set (``data.on_bad_file``), phone photos
rotated by EXIF, a decompression bomb at the default limit, odd file names and symlinked folders
through a real fit. Loader- and folder-level cases are in test_data_images.py and
test_data_splits.py, config typos and invalid values in test_train.py (README: Bad input and
faults)."""

from __future__ import annotations

import csv
import io
import logging
import shutil
from pathlib import Path

import onnx
import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from onnx import TensorProto, helper
from PIL import Image

from fitlens.contract import InputSpec
from fitlens.data.images import ImageLoadError, load_rgb
from fitlens.export.metadata import build_metadata, sha256_file, write_metadata
from fitlens.predict import Predictor
from fitlens.train import run

EXIF_ORIENTATION = 0x0112
#: Orientation 6: the camera stored the pixels turned; a viewer rotates them 90 degrees clockwise.
ROTATE_CW_ON_DISPLAY = 6


def _break_some_files(root: Path) -> dict[str, Path]:
    """One broken file of each kind, in two class folders, next to the good photos."""
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    good = sorted(folders[0].glob("*.jpg"))[0].read_bytes()
    bad = {"empty": folders[0] / "fedb__broken_a__0.jpg",
           "truncated": folders[1] / "fedb__broken_b__0.jpg",
           "text": folders[1] / "fedb__broken_c__0.jpg"}
    bad["empty"].write_bytes(b"")
    bad["truncated"].write_bytes(good[:len(good) // 2])
    bad["text"].write_text("not a photo\n")
    return bad


def test_on_bad_file_error_lists_every_bad_file_and_stops_before_training(
        tiny_cfg, image_root: Path) -> None:
    bad = _break_some_files(image_root)
    cfg = tiny_cfg("logger=csv")
    with pytest.raises(ImageLoadError) as info:
        run(cfg)
    message = str(info.value)
    assert "3 unreadable image(s)" in message and "data.on_bad_file=skip" in message
    for path in bad.values():
        assert str(path) in message
    assert "empty file" in message and "corrupt or truncated" in message
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists(), "no training started"


def test_on_bad_file_skip_reports_count_and_files_and_trains_on_the_rest(
        tiny_cfg, image_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = _break_some_files(image_root)
    cfg = tiny_cfg("data.on_bad_file=skip")
    datamodule = instantiate(cfg.data, _convert_="all")
    with caplog.at_level(logging.WARNING, logger="fitlens.data.datamodule"):
        datamodule.setup("fit")
    assert {p for p, _ in datamodule.skipped} == set(bad.values())
    assert all(reason for _, reason in datamodule.skipped)
    (warning,) = [r.getMessage() for r in caplog.records
                  if r.getMessage().startswith("data.on_bad_file=skip")]
    assert "skipped 3 unreadable image(s)" in warning
    assert all(str(path) in warning for path in bad.values())
    used = {s.path for split in datamodule.samples.values() for s in split}
    assert used.isdisjoint(bad.values()) and len(used) == 48
    with open(cfg.data.split_csv, encoding="utf-8") as fh:
        assert not {Path(r["file"]) for r in csv.DictReader(fh)} & set(bad.values())
    x, _ = next(iter(datamodule.train_dataloader()))
    assert tuple(x.shape[1:]) == (3, 32, 32)


def test_invalid_on_bad_file_value_names_the_setting(tiny_cfg) -> None:
    with pytest.raises(InstantiationException,
                       match="data.on_bad_file='ignore': expected 'error' or 'skip'"):
        run(tiny_cfg("data.on_bad_file=ignore", "logger=csv"))


# --- a phone photo rotated by EXIF is classified as the upright photo -------------------------

HALVES = ("top", "bottom", "left")


def halves_model(folder: Path, size: int = 16) -> Path:
    """An exported-model folder that tells where the bright half of the image is: logits are
    10 x the mean of the top, bottom and left halves. Unlike a colour model, it sees rotation."""
    folder.mkdir(parents=True, exist_ok=True)
    half = size // 2
    regions = {"top": ([0, 0], [half, size]), "bottom": ([half, 0], [size, size]),
               "left": ([0, 0], [size, half])}
    nodes, inits = [], [helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3]),
                        helper.make_tensor("scale", TensorProto.FLOAT, [], [10.0])]
    for name, (starts, ends) in regions.items():
        inits += [helper.make_tensor(f"{name}_s", TensorProto.INT64, [2], starts),
                  helper.make_tensor(f"{name}_e", TensorProto.INT64, [2], ends)]
        nodes += [helper.make_node("Slice", ["input", f"{name}_s", f"{name}_e", "axes"],
                                   [f"{name}_x"]),
                  helper.make_node("ReduceMean", [f"{name}_x"], [f"{name}_m"], keepdims=0,
                                   axes=[1, 2, 3]),
                  helper.make_node("Unsqueeze", [f"{name}_m", "one"], [f"{name}_c"])]
    inits.append(helper.make_tensor("one", TensorProto.INT64, [1], [1]))
    nodes += [helper.make_node("Concat", [f"{n}_c" for n in HALVES], ["mean"], axis=1),
              helper.make_node("Mul", ["mean", "scale"], ["logits"]),
              helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    graph = helper.make_graph(
        nodes, "halves",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model, full_check=True)
    path = folder / "halves.onnx"
    onnx.save_model(model, str(path))
    meta = build_metadata(InputSpec(classes=HALVES, size=size), model_file=path.name,
                          model_name="halves", sha256=sha256_file(path), opset=17,
                          threshold=0.5, registered_model="halves", version="1", run_id=None,
                          metrics={})
    write_metadata(meta, folder / "model_meta.json")
    return folder


def test_exif_rotated_photo_is_predicted_as_the_upright_one(tmp_path: Path) -> None:
    upright = Image.new("RGB", (48, 32), (0, 0, 0))
    upright.paste((255, 255, 255), (0, 0, 48, 16))  # bright top half
    # What the phone stored: the pixels turned back, so a viewer's 90-degree turn shows `upright`.
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATE_CW_ON_DISPLAY
    upright.save(tmp_path / "upright.jpg", quality=95)
    stored.save(tmp_path / "phone photo.jpg", quality=95, exif=exif.tobytes())
    stored.save(tmp_path / "no exif.jpg", quality=95)

    predictor = Predictor(halves_model(tmp_path / "model"))
    straight = predictor.predict_file(tmp_path / "upright.jpg")
    phone = predictor.predict_file(tmp_path / "phone photo.jpg")
    assert straight.label == phone.label == "top"
    for (c1, p1), (c2, p2) in zip(straight.top, phone.top, strict=True):
        assert c1 == c2 and p1 == pytest.approx(p2, abs=1e-2)
    # The same pixels without the EXIF tag are a different picture: the check can fail.
    assert predictor.predict_file(tmp_path / "no exif.jpg").top[0][0] == "left"


def test_palette_png_with_transparency_is_composited_over_white(tmp_path: Path) -> None:
    img = Image.new("P", (8, 8), 1)
    img.putpalette([0, 0, 0, 200, 0, 0] + [0, 0, 0] * 254)
    img.save(tmp_path / "p.png", transparency=1)
    assert load_rgb(tmp_path / "p.png").getpixel((3, 3)) == (255, 255, 255)


def test_decompression_bomb_is_refused_at_the_default_limit(tmp_path: Path) -> None:
    """A few hundred kB that would decode to 81 megapixels (over the 64 MP default)."""
    path = tmp_path / "bomb.png"
    buffer = io.BytesIO()
    Image.new("1", (9000, 9000)).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    assert path.stat().st_size < 1_000_000
    with pytest.raises(ImageLoadError, match=r"9000x9000 = 81000000 pixels is over the limit"):
        load_rgb(path)


# --- unusual names and symlinked class folders, through a real fit ---------------------------


def test_names_with_spaces_and_non_ascii_and_symlinked_folders_train(tiny_cfg, image_root: Path,
                                                                     tmp_path: Path) -> None:
    renamed = []
    for path in sorted(image_root.glob("squats/*.jpg")):
        group, n = path.stem.split("__")[1:]
        new = path.with_name(f"fedb__{group} Kniebeuge Ü ß 深蹲__{n}.JPG")
        path.rename(new)
        renamed.append(new)
    elsewhere = tmp_path / "elsewhere" / "pullup"
    elsewhere.parent.mkdir()
    shutil.move(image_root / "pullup", elsewhere)
    (image_root / "pullup").symlink_to(elsewhere, target_is_directory=True)

    cfg = tiny_cfg()
    result = run(cfg)
    assert result.mlflow_run_id and "test/acc" in result.test_metrics
    with (Path(cfg.paths.output_dir) / "split.csv").open(encoding="utf-8") as fh:
        files = {Path(r["file"]) for r in csv.DictReader(fh)}
    assert set(renamed) <= files
    assert sum(1 for f in files if f.parent == image_root / "pullup") == 8
