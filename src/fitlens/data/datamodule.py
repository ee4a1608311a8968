"""LightningDataModule over ``<root>/<class>/*.{jpg,jpeg,png,webp}`` with a group split."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from fitlens.contract import InputSpec, Resize
from fitlens.data.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    ImageLoadError,
    fit_to_input,
    load_rgb,
    to_chw_float,
)
from fitlens.data.splits import (
    SPLITS,
    Sample,
    assign_splits,
    check_duplicates,
    check_split,
    collect_samples,
    find_images,
    find_reject_images,
    ignored_files,
    read_split_csv,
    warn_ignored,
    write_split_csv,
)

log = logging.getLogger(__name__)

Transform = Callable[[Image.Image], Image.Image]


class ImageDataset(Dataset):
    """Samples -> (CHW float 0..1 tensor, label).

    ``augment`` (PIL -> PIL) runs first; the contract's resize always runs last, so whatever the
    augmentations do, the model sees ``size x size`` exactly as at inference.
    """

    def __init__(self, samples: Sequence[Sample], resize: Resize | int,
                 augment: Sequence[Transform] = (),
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.samples = list(samples)
        self.resize = resize
        self.augment = list(augment)
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[index]
        img = load_rgb(sample.path, self.max_pixels)
        for transform in self.augment:
            img = transform(img)
        x = to_chw_float(fit_to_input(img, self.resize))
        return torch.from_numpy(x), sample.label


class RejectBalancedSampler(Sampler[int]):
    """Each epoch: every known photo once, plus a fresh random draw of ``per_epoch`` reject
    photos, shuffled together. Hundreds of "other" photos would otherwise swamp a hundred known
    ones and cost most of every epoch's compute; over epochs the draw still covers them all.
    """

    def __init__(self, known: Sequence[int], reject: Sequence[int], per_epoch: int,
                 seed: int) -> None:
        self.known, self.reject = list(known), list(reject)
        self.per_epoch = min(per_epoch, len(self.reject))
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this before each epoch: a new draw, reproducible under the seed."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        rng = random.Random(f"{self.seed}:{self.epoch}")
        order = self.known + rng.sample(self.reject, self.per_epoch)
        rng.shuffle(order)
        return iter(order)

    def __len__(self) -> int:
        return len(self.known) + self.per_epoch


def data_spec(classes: Sequence[str], image_size: int, resize: str = "stretch",
              fill: Sequence[int] = (0, 0, 0), reject_root: str | Path | None = None,
              reject_class: str = "none") -> InputSpec:
    """The contract the data defines (classes, reject class, size, resize); mean/std are the
    backbone's. Validates them, naming the ``data.*`` setting."""
    return InputSpec(classes=tuple(str(c) for c in classes), size=int(image_size),
                     resize_mode=str(resize), fill=tuple(int(v) for v in fill),
                     reject_class=None if reject_root is None else str(reject_class))


def spec_of(data_cfg: Mapping[str, Any]) -> InputSpec:
    """:func:`data_spec` of a ``data`` config, without building the DataModule."""
    return data_spec(data_cfg["classes"], data_cfg["image_size"], data_cfg.get("resize",
                                                                               "stretch"),
                     data_cfg.get("fill", (0, 0, 0)), data_cfg.get("reject_root"),
                     data_cfg.get("reject_class", "none"))


class ExerciseDataModule(pl.LightningDataModule):
    """Finds, checks and splits the images, checks the split (:func:`check_split`,
    :func:`check_duplicates`); writes the split CSV into the run's folder. Files the data set
    leaves out are listed in a warning and kept in :attr:`ignored`.

    With ``reject_root`` the photos there (exercises that are none of the classes) become one
    more output, ``reject_class``, split by group like the rest; each training epoch sees every
    known photo and ``reject_ratio`` times as many reject photos (:class:`RejectBalancedSampler`).
    """

    def __init__(
        self,
        root: str,
        classes: Sequence[str],
        image_size: int = 224,
        resize: str = "stretch",
        fill: Sequence[int] = (0, 0, 0),
        reject_root: str | None = None,
        reject_class: str = "none",
        reject_ratio: float = 1.0,
        group_pattern: str | None = None,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        folds: int | None = None,
        fold: int = 0,
        seed: int = 42,
        batch_size: int = 16,
        num_workers: int = 0,
        augment: Sequence[Transform] = (),
        on_bad_file: str = "error",
        split_file: str | None = None,
        split_csv: str | None = "split.csv",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        suffixes: Sequence[str] = IMAGE_SUFFIXES,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size={batch_size}: expected an integer >= 1")
        if num_workers < 0:
            raise ValueError(f"data.num_workers={num_workers}: expected an integer >= 0")
        if on_bad_file not in ("error", "skip"):
            raise ValueError(f"data.on_bad_file={on_bad_file!r}: expected 'error' or 'skip'")
        if not reject_ratio > 0:
            raise ValueError(f"data.reject_ratio={reject_ratio}: expected > 0 (reject photos "
                             "per known photo in each training epoch)")
        self.root = Path(root)
        self.reject_root = None if reject_root is None else Path(reject_root)
        self.spec = data_spec(classes, image_size, resize, fill, reject_root, reject_class)
        self.reject_ratio = reject_ratio
        self.group_pattern = group_pattern
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.folds, self.fold, self.seed = folds, fold, seed
        self.batch_size, self.num_workers = batch_size, num_workers
        self.augment = list(augment)
        self.on_bad_file = on_bad_file
        self.split_file = split_file
        self.split_csv = split_csv
        self.max_pixels = max_pixels
        self.suffixes = tuple(suffixes)
        self.samples: dict[str, list[Sample]] = {}
        self.skipped: list[tuple[Path, str]] = []
        self.ignored: list[Path] = []

    @property
    def classes(self) -> tuple[str, ...]:
        """The known classes (the reject class is not one of them)."""
        return self.spec.classes

    def setup(self, stage: str | None = None) -> None:
        if self.samples:
            return
        outputs = self.spec.output_classes
        if self.split_file:
            samples, split_of = read_split_csv(self.split_file, outputs)
            source = f"data.split_file={self.split_file}"
        else:
            files = find_images(self.root, self.classes, self.suffixes)
            suffixes = f"*{{{','.join(self.suffixes)}}}"
            self.ignored = [p for name in self.classes
                            for p in ignored_files(self.root / name, self.suffixes)]
            warn_ignored(self.ignored, f"data.root={self.root}",
                         f"<root>/<class>/{suffixes}, no sub-folders")
            if self.reject_root is not None:
                files[str(self.spec.reject_class)] = find_reject_images(self.reject_root,
                                                                        self.suffixes)
                ignored = ignored_files(self.reject_root, self.suffixes, nested=True)
                warn_ignored(ignored, f"data.reject_root={self.reject_root}", suffixes)
                self.ignored += ignored
            samples = collect_samples(files, outputs, self.group_pattern)
            split_of = assign_splits(samples, seed=self.seed, val_fraction=self.val_fraction,
                                     test_fraction=self.test_fraction, folds=self.folds,
                                     fold=self.fold)
            source = f"data.root={self.root}"
        samples = self._drop_bad_files(samples)
        check_split(samples, split_of, outputs, source)
        check_duplicates(samples, split_of, source)
        if self.split_csv:
            write_split_csv(samples, split_of, Path(self.split_csv))
        self.samples = {name: [s for s in samples if split_of[s.group] == name]
                        for name in SPLITS}
        log.info("split: %s", {k: len(v) for k, v in self.samples.items()})

    def _drop_bad_files(self, samples: list[Sample]) -> list[Sample]:
        """Decode every file once before training, so a broken photo fails now, not at epoch 7."""
        bad: list[tuple[Path, str]] = []
        for s in samples:
            try:
                load_rgb(s.path, self.max_pixels)
            except ImageLoadError as exc:
                bad.append((s.path, exc.reason))
        if bad and self.on_bad_file == "error":
            listing = "\n".join(f"  {p}: {why}" for p, why in bad)
            raise ImageLoadError(
                bad[0][0], f"{len(bad)} unreadable image(s) under data.root={self.root}:\n"
                f"{listing}\nfix or remove them, or set data.on_bad_file=skip")
        if bad:
            log.warning("data.on_bad_file=skip: skipped %d unreadable image(s): %s", len(bad),
                        ", ".join(str(p) for p, _ in bad))
        self.skipped = bad
        bad_paths = {p for p, _ in bad}
        return [s for s in samples if s.path not in bad_paths]

    def _reject_per_epoch(self) -> int:
        known = sum(s.label < self.spec.num_classes for s in self.samples["train"])
        return max(1, round(known * self.reject_ratio))

    def class_counts(self, split: str = "train") -> torch.Tensor:
        """Photos per output in ``split``; for training, the reject output counts what one
        epoch draws, which is what the loss sees."""
        labels = np.array([s.label for s in self.samples[split]], dtype=np.int64)
        counts = np.bincount(labels, minlength=self.spec.num_outputs)
        if split == "train" and self.spec.reject_class is not None:
            reject = self.spec.num_classes
            counts[reject] = min(counts[reject], self._reject_per_epoch())
        return torch.from_numpy(counts)

    def dataset(self, split: str) -> ImageDataset:
        augment = self.augment if split == "train" else ()
        return ImageDataset(self.samples[split], self.spec.resize, augment, self.max_pixels)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.dataset(split)
        sampler = None
        if shuffle and self.spec.reject_class is not None:
            labels = [s.label for s in dataset.samples]
            reject = self.spec.num_classes
            sampler = RejectBalancedSampler(
                [i for i, y in enumerate(labels) if y != reject],
                [i for i, y in enumerate(labels) if y == reject],
                self._reject_per_epoch(), self.seed)
        return DataLoader(dataset, batch_size=self.batch_size,
                          shuffle=shuffle and sampler is None, sampler=sampler,
                          num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
