"""Splits that lie: a photo or group in two splits, a class with nothing to train or test on,
one photo under two labels, files the loader silently left out; with and without a reject class.
The real DataModule on generated photos (no training, except where scores are the point)."""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import pytest
from hydra.utils import instantiate
from PIL import Image

from fitlens.data.datamodule import ExerciseDataModule
from fitlens.train import run
from tests.conftest import config_classes

SPLITS_LOGGER = "fitlens.data.splits"


def _datamodule(cfg) -> ExerciseDataModule:
    return instantiate(cfg.data, _convert_="all")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _write(rows: list[dict[str, str]], path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "class", "group", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def split_rows(tiny_cfg) -> list[dict[str, str]]:
    """The split the DataModule makes of the generated photos, as split.csv rows."""
    cfg = tiny_cfg()
    _datamodule(cfg).setup()
    return _rows(Path(cfg.data.split_csv))


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == SPLITS_LOGGER and r.levelno == logging.WARNING]


# --- data.split_file ---------------------------------------------------------------------------


def test_a_test_photo_listed_again_as_training_is_refused(tiny_cfg, split_rows, tmp_path):
    test_row = next(r for r in split_rows if r["split"] == "test")
    line = split_rows.index(test_row) + 2
    leaked = {**test_row, "group": "someone else", "split": "train"}
    path = _write([*split_rows, leaked], tmp_path / "split.csv")
    with pytest.raises(ValueError, match=f"data.split_file={path}, line {len(split_rows) + 2}: "
                                         f"{test_row['file']} is listed again \\(first on line "
                                         f"{line}\\)"):
        _datamodule(tiny_cfg(f"data.split_file={path}")).setup()


def test_a_group_in_two_splits_is_refused(tiny_cfg, split_rows, tmp_path):
    rows = [dict(r) for r in split_rows]
    first, second = [i for i, r in enumerate(rows) if r["group"] == rows[0]["group"]][:2]
    rows[second]["split"] = "test" if rows[first]["split"] != "test" else "train"
    path = _write(rows, tmp_path / "split.csv")
    with pytest.raises(ValueError, match=f"line {second + 2}: group '{rows[0]['group']}' is in "
                                         f"split '{rows[second]['split']}' here but in "
                                         f"'{rows[first]['split']}' on line {first + 2}"):
        _datamodule(tiny_cfg(f"data.split_file={path}")).setup()


def test_a_split_file_missing_a_class_is_refused(tiny_cfg, split_rows, tmp_path):
    path = _write([r for r in split_rows if r["class"] != "squats"], tmp_path / "split.csv")
    with pytest.raises(ValueError, match=r"no training photos for class\(es\) \['squats'\] "
                                         r"\(squats: 0 val, 0 test\)"):
        _datamodule(tiny_cfg(f"data.split_file={path}")).setup()


def test_a_class_without_test_photos_is_named_and_gets_no_score(
        tiny_cfg, split_rows, tmp_path, caplog):
    """Its test accuracy is left out, not recorded as 0.0 (a real tiny fit and test)."""
    path = _write([r for r in split_rows if not (r["class"] == "squats" and r["split"] == "test")],
                  tmp_path / "split.csv")
    with caplog.at_level(logging.WARNING, logger=SPLITS_LOGGER):
        result = run(tiny_cfg(f"data.split_file={path}", "logger=csv"))
    (warning,) = [w for w in _warnings(caplog) if "no test photos" in w]
    assert "['squats']" in warning and "test scores are not recorded" in warning
    assert "test/acc_squats" not in result.test_metrics
    assert "test/acc_pullup" in result.test_metrics
    logged = Path(result.output_dir) / "csv" / "metrics.csv"
    assert "test/acc_squats" not in logged.read_text().splitlines()[0]


# --- photos on disk ----------------------------------------------------------------------------


def test_every_photo_of_a_class_skipped_is_an_error_naming_it(tiny_cfg, image_root):
    for photo in (image_root / "pullup").iterdir():
        photo.write_bytes(b"")
    with pytest.raises(ValueError, match=r"no training photos for class\(es\) \['pullup'\]"):
        _datamodule(tiny_cfg("data.on_bad_file=skip")).setup()


def test_a_class_a_fold_lacks_is_a_warning_and_one_it_cannot_train_on_an_error(
        tiny_cfg, image_root, caplog):
    """Group k-fold: a class with fewer variants than folds is missing from some folds' test
    split (still valid folds); with a single variant, its own fold has nothing to train it on."""
    for photo in (image_root / "squats").glob("fedb__squats_v[23]__*.jpg"):
        photo.unlink()
    with caplog.at_level(logging.WARNING, logger=SPLITS_LOGGER):
        for fold in range(3):
            _datamodule(tiny_cfg("data.folds=3", f"data.fold={fold}", "data.val_fraction=0")
                        ).setup()
    (warning,) = _warnings(caplog)
    assert "no test photos for class(es) ['squats']" in warning
    for photo in (image_root / "squats").glob("fedb__squats_v1__*.jpg"):
        photo.unlink()
    with pytest.raises(ValueError, match=r"no training photos for class\(es\) \['squats'\] "
                                         r"\(squats: 0 val, 2 test\)"):
        _datamodule(tiny_cfg("data.folds=5", "data.fold=0", "data.val_fraction=0")).setup()


def test_one_photo_in_two_classes_is_an_error(tiny_cfg, image_root):
    photo = sorted((image_root / "squats").iterdir())[0]
    copy = image_root / "pullup" / "fedb__pullup_v9__0.jpg"
    shutil.copy(photo, copy)
    with pytest.raises(ValueError, match="1 photo\\(s\\) are in more than one class") as info:
        _datamodule(tiny_cfg()).setup()
    assert f"{photo} (squats)" in str(info.value) and f"{copy} (pullup)" in str(info.value)


def test_one_photo_in_two_splits_is_a_warning(tiny_cfg, image_root, caplog):
    cfg = tiny_cfg()
    datamodule = _datamodule(cfg)
    datamodule.setup()
    test_photo = datamodule.samples["test"][0].path
    train_photo = next(s.path for s in datamodule.samples["train"]
                       if s.class_name == datamodule.samples["test"][0].class_name)
    shutil.copy(test_photo, train_photo)  # a copy under the name of a training photo
    with caplog.at_level(logging.WARNING, logger=SPLITS_LOGGER):
        _datamodule(tiny_cfg()).setup()
    (warning,) = _warnings(caplog)
    assert "1 photo(s) are in more than one split" in warning
    assert f"{test_photo} (test)" in warning and f"{train_photo} (train)" in warning


def test_files_the_loader_leaves_out_are_counted_and_listed(tiny_cfg, image_root, caplog):
    folder = image_root / "squats"
    (folder / "notes.txt").write_text("not a photo")
    Image.new("RGB", (8, 8)).save(folder / "old.gif")
    (folder / "more").mkdir()
    Image.new("RGB", (8, 8)).save(folder / "more" / "fedb__squats_v7__0.jpg")
    (folder / ".DS_Store").write_bytes(b"\0")
    with caplog.at_level(logging.WARNING, logger=SPLITS_LOGGER):
        datamodule = _datamodule(tiny_cfg())
        datamodule.setup()
    ignored = {folder / "notes.txt", folder / "old.gif", folder / "more" / "fedb__squats_v7__0.jpg"}
    assert set(datamodule.ignored) == ignored
    (warning,) = _warnings(caplog)
    assert f"data.root={image_root}: 3 file(s) ignored" in warning
    assert all(str(p) in warning for p in ignored)


# --- with a reject class -----------------------------------------------------------------------


def _other_photos(folder: Path, variants: int) -> Path:
    for v in range(variants):
        sub = folder / ("nested" if v % 2 else "")
        sub.mkdir(parents=True, exist_ok=True)
        for n in range(2):
            Image.new("RGB", (24, 20), (v * 30, 200 - v * 20, n * 90)).save(
                sub / f"fedb__Other_{v}__{n}.jpg")
    return folder


def test_the_reject_class_is_checked_like_the_rest(tiny_cfg, image_root, tmp_path, caplog):
    other = _other_photos(tmp_path / "other", variants=1)
    (other / "readme.md").write_text("photos of other exercises")
    with caplog.at_level(logging.WARNING, logger=SPLITS_LOGGER):
        datamodule = _datamodule(tiny_cfg(f"data.reject_root={other}"))
        datamodule.setup()
    assert datamodule.ignored == [other / "readme.md"]
    messages = _warnings(caplog)
    assert any(f"data.reject_root={other}: 1 file(s) ignored" in m for m in messages)
    # One variant of other photos: it trains, and the test split has no "none" photos.
    assert any("no test photos for class(es) ['none']" in m for m in messages)
    # A photo of another exercise that is also a squat: one photo, two labels.
    shutil.copy(sorted((image_root / "squats").iterdir())[0], other / "fedb__Other_9__0.jpg")
    with pytest.raises(ValueError, match=r"more than one class .*\(squats\).*\(none\)|"
                                         r"more than one class .*\(none\).*\(squats\)"):
        _datamodule(tiny_cfg(f"data.reject_root={other}")).setup()


def test_a_reject_class_with_no_training_photos_is_an_error(tiny_cfg, tmp_path):
    other = _other_photos(tmp_path / "other", variants=3)
    cfg = tiny_cfg(f"data.reject_root={other}")
    _datamodule(cfg).setup()
    rows = [r for r in _rows(Path(cfg.data.split_csv))
            if not (r["class"] == "none" and r["split"] == "train")]
    path = _write(rows, tmp_path / "split.csv")
    assert {r["class"] for r in rows} == {*config_classes(), "none"}
    with pytest.raises(ValueError, match=r"no training photos for class\(es\) \['none'\]"):
        _datamodule(tiny_cfg(f"data.reject_root={other}", f"data.split_file={path}")).setup()
