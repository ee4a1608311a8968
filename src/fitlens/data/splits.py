"""Finding the samples, splitting them by group, and checking the split.

Photos of one exercise variant share a person, a set and a pose, so a split by file would put
near-duplicates on both sides and inflate every score. Everything here splits by *group* (a regex
over the file name), per class, deterministically under a seed. A split made elsewhere
(``data.split_file``) or thinned by skipped files is checked (:func:`check_split`,
:func:`check_duplicates`): a photo or group in two splits, a class with nothing to train on, and
one photo under two labels are errors; what only weakens the scores is a warning.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import random
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

from fitlens.data.images import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
CSV_FIELDS = ("file", "class", "group", "split")
#: How many files a warning or error lists before it only counts the rest.
LISTED = 10


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int
    class_name: str
    group: str


def find_images(root: str | Path, classes: Sequence[str],
                suffixes: Sequence[str] = IMAGE_SUFFIXES) -> dict[str, list[Path]]:
    """Map each class to its image files under ``root/<class>/``, checking the folders.

    The folder set must equal the configured class list: a missing, extra or empty folder is a
    configuration error, not something to guess around.
    """
    root = Path(root)
    expected = f"expected <root>/<class>/*{{{','.join(suffixes)}}} for classes {list(classes)}"
    if not root.is_dir():
        raise FileNotFoundError(f"data.root={root}: folder does not exist; {expected}")
    folders = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if not folders:
        raise FileNotFoundError(f"data.root={root}: no class folders found; {expected}")
    missing = [c for c in classes if c not in folders]
    if missing:
        raise FileNotFoundError(
            f"data.root={root}: no folder for configured class(es) {missing}; {expected}")
    unknown = sorted(folders - set(classes))
    if unknown:
        raise ValueError(
            f"data.root={root}: folder(s) {unknown} are not in data.classes={list(classes)}; "
            "add them to data.classes or move them out of the data root")
    wanted = {s.lower() for s in suffixes}
    found: dict[str, list[Path]] = {}
    for name in classes:
        files = sorted(p for p in (root / name).iterdir()
                       if p.is_file() and p.suffix.lower() in wanted)
        if not files:
            raise FileNotFoundError(
                f"{root / name}: class folder has no images; expected files ending in "
                f"{', '.join(suffixes)}")
        found[name] = files
    return found


def find_reject_images(root: str | Path,
                       suffixes: Sequence[str] = IMAGE_SUFFIXES) -> list[Path]:
    """Every image under ``root`` (sub-folders included): photos of exercises that are none of
    the classes, the reject output's training data."""
    root = Path(root)
    off = "set data.reject_root=null to train without a reject class"
    if not root.is_dir():
        raise FileNotFoundError(
            f"data.reject_root={root}: folder does not exist; expected photos of other exercises "
            f"(bash scripts/setup.sh links ./data/other to ../shared/data/other), or {off}")
    wanted = {s.lower() for s in suffixes}
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in wanted
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise FileNotFoundError(
            f"data.reject_root={root}: no images; expected files ending in {', '.join(suffixes)} "
            f"(photos of exercises that are none of the classes), or {off}")
    return files


def _listing(items: Sequence[object]) -> str:
    shown = ", ".join(str(i) for i in items[:LISTED])
    return shown + (f", ... ({len(items) - LISTED} more)" if len(items) > LISTED else "")


def ignored_files(folder: str | Path, suffixes: Sequence[str] = IMAGE_SUFFIXES,
                  nested: bool = False) -> list[Path]:
    """Files under ``folder`` that the data set leaves out: other suffixes, and (unless
    ``nested``, as for the reject photos) anything in sub-folders. Hidden files are left out
    silently (``.DS_Store``)."""
    folder = Path(folder)
    wanted = {s.lower() for s in suffixes}
    found = []
    for path in sorted(folder.rglob("*")):
        parts = path.relative_to(folder).parts
        if not path.is_file() or any(part.startswith(".") for part in parts):
            continue
        if path.suffix.lower() not in wanted or (len(parts) > 1 and not nested):
            found.append(path)
    return found


def warn_ignored(ignored: Sequence[Path], where: str, expected: str) -> None:
    if ignored:
        log.warning("%s: %d file(s) ignored (expected %s): %s", where, len(ignored), expected,
                    _listing(ignored))


def group_of(path: Path, pattern: str | None) -> str:
    """The group key of a file: the regex's ``group`` (or first) capture over the file stem.

    ``pattern=None`` makes every file its own group.
    """
    if pattern is None:
        return path.stem
    match = re.search(pattern, path.stem)
    if match is None:
        raise ValueError(
            f"{path}: file name does not match data.group_pattern={pattern!r}; every file needs "
            "a group (set data.group_pattern=null for one group per file)")
    if "group" in match.groupdict():
        return match.group("group")
    return match.group(1) if match.groups() else match.group(0)


def collect_samples(files: dict[str, list[Path]], classes: Sequence[str],
                    group_pattern: str | None) -> list[Sample]:
    return [Sample(path, classes.index(name), name, f"{name}/{group_of(path, group_pattern)}")
            for name in classes for path in files[name]]


def _holdout_count(n_groups: int, fraction: float) -> int:
    """Groups to hold out of ``n_groups``: at least one, as long as one stays behind."""
    if fraction <= 0 or n_groups < 2:
        return 0
    return max(1, min(n_groups - 1, round(n_groups * fraction)))


def assign_splits(samples: Sequence[Sample], *, seed: int, val_fraction: float,
                  test_fraction: float, folds: int | None = None,
                  fold: int = 0) -> dict[str, str]:
    """Map each group to ``train``/``val``/``test``, class by class.

    Without ``folds``: ``test_fraction`` and ``val_fraction`` of each class's groups are held out.
    With ``folds=k``: each class's shuffled groups are dealt round-robin into k folds; fold
    ``fold`` is the test set and ``val_fraction`` of the remaining groups is validation, so
    ``fold=0..k-1`` is a group k-fold cross-validation.
    """
    if folds is not None:
        if folds < 2:
            raise ValueError(f"data.folds={folds}: expected null or an integer >= 2")
        if not 0 <= fold < folds:
            raise ValueError(f"data.fold={fold}: expected 0 <= fold < data.folds={folds}")
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise ValueError(f"data.{name}={value}: expected a fraction in [0, 1)")
    groups_by_class: dict[str, list[str]] = defaultdict(list)
    for s in samples:
        if s.group not in groups_by_class[s.class_name]:
            groups_by_class[s.class_name].append(s.group)
    split_of: dict[str, str] = {}
    for name in sorted(groups_by_class):
        groups = sorted(groups_by_class[name])
        random.Random(f"{seed}:{name}").shuffle(groups)
        if folds is None:
            n_test = _holdout_count(len(groups), test_fraction)
            test, rest = groups[:n_test], groups[n_test:]
        else:
            test = [g for i, g in enumerate(groups) if i % folds == fold]
            rest = [g for i, g in enumerate(groups) if i % folds != fold]
        n_val = _holdout_count(len(rest), val_fraction)
        split_of.update({g: "test" for g in test})
        split_of.update({g: "val" for g in rest[:n_val]})
        split_of.update({g: "train" for g in rest[n_val:]})
    return split_of


def write_split_csv(samples: Sequence[Sample], split_of: dict[str, str], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for s in samples:
            writer.writerow({"file": str(s.path), "class": s.class_name, "group": s.group,
                             "split": split_of[s.group]})


def read_split_csv(path: str | Path, classes: Sequence[str]) -> tuple[list[Sample], dict[str, str]]:
    """Reuse an earlier run's split (``data.split_file=.../split.csv``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data.split_file={path}: file does not exist")
    samples: list[Sample] = []
    split_of: dict[str, str] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or set(CSV_FIELDS) - set(reader.fieldnames):
            raise ValueError(f"data.split_file={path}: expected columns {list(CSV_FIELDS)}, "
                             f"got {reader.fieldnames}")
        first_line: dict[str, int] = {}
        group_line: dict[str, int] = {}
        for line, row in enumerate(reader, start=2):
            where = f"data.split_file={path}, line {line}"
            if row["class"] not in classes or row["split"] not in SPLITS:
                raise ValueError(
                    f"{where}: class {row['class']!r} must be one of "
                    f"{list(classes)} and split {row['split']!r} one of {list(SPLITS)}")
            file = str(PurePath(row["file"]))
            if file in first_line:
                raise ValueError(
                    f"{where}: {row['file']} is listed again (first on line {first_line[file]}); "
                    "each photo belongs to exactly one row, in one split")
            first_line[file] = line
            group, split = row["group"], row["split"]
            if split_of.setdefault(group, split) != split:
                raise ValueError(
                    f"{where}: group {group!r} is in split {split!r} here but in "
                    f"{split_of[group]!r} on line {group_line[group]}; the photos of one group "
                    "(one exercise variant) must all be in one split")
            group_line.setdefault(group, line)
            samples.append(Sample(Path(row["file"]), list(classes).index(row["class"]),
                                  row["class"], group))
    return samples, split_of


def check_split(samples: Sequence[Sample], split_of: dict[str, str], classes: Sequence[str],
                source: str) -> None:
    """Every output class needs training photos (error); a class without photos in a held-out
    split that has photos is only a warning: with few variants per class that is what a group
    split (a 1-variant class, a k-fold fold) gives, and the class's scores there are left out
    rather than recorded as 0.0."""
    counts = {name: dict.fromkeys(SPLITS, 0) for name in classes}
    for s in samples:
        counts[s.class_name][split_of[s.group]] += 1
    untrained = [name for name in classes if not counts[name]["train"]]
    if untrained:
        held_out = ", ".join(f"{n}: {counts[n]['val']} val, {counts[n]['test']} test"
                             for n in untrained)
        raise ValueError(
            f"{source}: no training photos for class(es) {untrained} ({held_out}); every class "
            "needs some: check data.split_file, the files data.on_bad_file=skip left out, and "
            "the class folders")
    for split in ("val", "test"):
        if any(c[split] for c in counts.values()):
            missing = [name for name in classes if not counts[name][split]]
            if missing:
                log.warning("%s: no %s photos for class(es) %s; their %s scores are not "
                            "recorded", source, split, missing, split)


def check_duplicates(samples: Sequence[Sample], split_of: dict[str, str], source: str) -> None:
    """Identical files (by SHA-256): under two classes an error (one photo, two labels), in
    two splits of one class a warning (a training photo scored again as held out)."""
    by_digest: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_digest[hashlib.sha256(s.path.read_bytes()).hexdigest()].append(s)
    copies = [group for group in by_digest.values() if len(group) > 1]
    labelled_twice = [g for g in copies if len({s.class_name for s in g}) > 1]
    if labelled_twice:
        raise ValueError(
            f"{source}: {len(labelled_twice)} photo(s) are in more than one class (identical "
            "files): " + _listing([" = ".join(f"{s.path} ({s.class_name})" for s in g)
                                   for g in labelled_twice]) + "; a photo shows one exercise: "
            "remove the wrong copies")
    leaked = [g for g in copies if len({split_of[s.group] for s in g}) > 1]
    if leaked:
        log.warning("%s: %d photo(s) are in more than one split (identical files under "
                    "different groups), so held-out scores see training photos: %s", source,
                    len(leaked), _listing([" = ".join(f"{s.path} ({split_of[s.group]})"
                                                      for s in g) for g in leaked]))
