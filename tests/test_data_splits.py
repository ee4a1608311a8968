from __future__ import annotations

import csv
from pathlib import Path

import pytest

from fitlens.data.splits import (
    assign_splits,
    collect_samples,
    find_images,
    group_of,
    read_split_csv,
    write_split_csv,
)
from tests.conftest import make_images

CLASSES = ["a", "b", "c"]
PATTERN = r"^fedb__(?P<group>.+)__\d+$"


@pytest.fixture
def samples(tmp_path: Path):
    root = make_images(tmp_path / "d", CLASSES, variants=7, per_variant=2, size=(8, 8))
    return collect_samples(find_images(root, CLASSES), CLASSES, PATTERN)


def test_group_of_uses_named_group_and_defaults_to_one_group_per_file() -> None:
    assert group_of(Path("fedb__Air_Squat__1.jpg"), PATTERN) == "Air_Squat"
    assert group_of(Path("x/photo 1 é.jpg"), None) == "photo 1 é"
    with pytest.raises(ValueError, match="does not match data.group_pattern"):
        group_of(Path("IMG_0001.jpg"), PATTERN)


def test_split_is_deterministic_and_no_group_is_in_two_splits(samples) -> None:
    first = assign_splits(samples, seed=3, val_fraction=0.2, test_fraction=0.2)
    again = assign_splits(samples, seed=3, val_fraction=0.2, test_fraction=0.2)
    other = assign_splits(samples, seed=4, val_fraction=0.2, test_fraction=0.2)
    assert first == again
    assert first != other
    # Every group maps to one split, and every class has a held-out group in val and test.
    for name in CLASSES:
        splits = {first[s.group] for s in samples if s.class_name == name}
        assert splits == {"train", "val", "test"}


def test_k_fold_test_sets_partition_the_groups(samples) -> None:
    groups = {s.group for s in samples}
    tests = []
    for fold in range(5):
        split = assign_splits(samples, seed=0, val_fraction=0.2, test_fraction=0.2, folds=5,
                              fold=fold)
        assert set(split) == groups
        tests.append({g for g, s in split.items() if s == "test"})
        assert all(split[g] != "test" for g in groups - tests[-1])
    assert set().union(*tests) == groups
    assert sum(len(t) for t in tests) == len(groups)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"folds": 1}, "data.folds=1"),
    ({"folds": 5, "fold": 5}, "data.fold=5"),
    ({"val_fraction": 1.5}, "data.val_fraction=1.5"),
])
def test_bad_split_settings_name_the_setting(samples, kwargs, message) -> None:
    args = {"seed": 0, "val_fraction": 0.2, "test_fraction": 0.2, **kwargs}
    with pytest.raises(ValueError, match=message):
        assign_splits(samples, **args)


def test_split_csv_round_trip(samples, tmp_path: Path) -> None:
    split = assign_splits(samples, seed=0, val_fraction=0.2, test_fraction=0.2)
    path = tmp_path / "split.csv"
    write_split_csv(samples, split, path)
    rows = list(csv.DictReader(path.open()))
    assert set(rows[0]) == {"file", "class", "group", "split"}
    again, split_again = read_split_csv(path, CLASSES)
    assert [s.path for s in again] == [s.path for s in samples]
    assert split_again == split


def test_folder_checks(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="folder does not exist"):
        find_images(tmp_path / "nope", CLASSES)
    (tmp_path / "empty_root").mkdir()
    with pytest.raises(FileNotFoundError, match="no class folders found"):
        find_images(tmp_path / "empty_root", CLASSES)
    root = make_images(tmp_path / "d", ["a", "b"], variants=1, size=(8, 8))
    with pytest.raises(FileNotFoundError, match=r"no folder for configured class\(es\) \['c'\]"):
        find_images(root, CLASSES)
    (root / "c").mkdir()
    with pytest.raises(FileNotFoundError, match="class folder has no images"):
        find_images(root, CLASSES)
    make_images(root, ["c", "zz"], variants=1, size=(8, 8))
    with pytest.raises(ValueError, match=r"folder\(s\) \['zz'\] are not in data.classes"):
        find_images(root, CLASSES)


def test_symlinked_class_folder_and_unusual_names_are_found(tmp_path: Path) -> None:
    real = make_images(tmp_path / "real", CLASSES, variants=1, size=(8, 8))
    root = tmp_path / "linked"
    root.mkdir()
    for name in CLASSES:
        (root / name).symlink_to(real / name, target_is_directory=True)
    (real / "a" / "fedb__a_v0__0.jpg").rename(real / "a" / "fedb__Kniebeuge mit Ü__0.JPG")
    files = find_images(root, CLASSES)
    assert any(p.name == "fedb__Kniebeuge mit Ü__0.JPG" for p in files["a"])
    assert sum(len(v) for v in files.values()) == 6
