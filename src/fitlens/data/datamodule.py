"""LightningDataModule over ``<root>/<class>/*.{jpg,jpeg,png,webp}`` with a group split."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from fitlens.contract import InputSpec
from fitlens.data.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    ImageLoadError,
    load_rgb,
    resize_for_model,
    to_chw_float,
)
from fitlens.data.splits import (
    SPLITS,
    Sample,
    assign_splits,
    collect_samples,
    find_images,
    read_split_csv,
    write_split_csv,
)

log = logging.getLogger(__name__)

Transform = Callable[[Image.Image], Image.Image]


class ImageDataset(Dataset):
    """Samples -> (CHW float 0..1 tensor, label).

    ``augment`` (PIL -> PIL) runs first; the contract's resize always runs last, so whatever the
    augmentations do, the model sees ``size x size`` exactly as at inference.
    """

    def __init__(self, samples: Sequence[Sample], size: int, augment: Sequence[Transform] = (),
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.samples = list(samples)
        self.size = size
        self.augment = list(augment)
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[index]
        img = load_rgb(sample.path, self.max_pixels)
        for transform in self.augment:
            img = transform(img)
        x = to_chw_float(resize_for_model(img, self.size))
        return torch.from_numpy(x), sample.label


class ExerciseDataModule(pl.LightningDataModule):
    """Finds, checks and splits the images; writes the split CSV into the run's folder."""

    def __init__(
        self,
        root: str,
        classes: Sequence[str],
        image_size: int = 224,
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
        self.root = Path(root)
        # Validates the class list and size; mean/std belong to the backbone, not the data.
        self.spec = InputSpec(classes=tuple(str(c) for c in classes), size=int(image_size))
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

    @property
    def classes(self) -> tuple[str, ...]:
        return self.spec.classes

    def setup(self, stage: str | None = None) -> None:
        if self.samples:
            return
        if self.split_file:
            samples, split_of = read_split_csv(self.split_file, self.classes)
        else:
            files = find_images(self.root, self.classes, self.suffixes)
            samples = collect_samples(files, self.classes, self.group_pattern)
            split_of = assign_splits(samples, seed=self.seed, val_fraction=self.val_fraction,
                                     test_fraction=self.test_fraction, folds=self.folds,
                                     fold=self.fold)
        samples = self._drop_bad_files(samples)
        if self.split_csv:
            write_split_csv(samples, split_of, Path(self.split_csv))
        self.samples = {name: [s for s in samples if split_of[s.group] == name]
                        for name in SPLITS}
        if not self.samples["train"]:
            raise ValueError(f"data.root={self.root}: the split left no training images")
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

    def class_counts(self, split: str = "train") -> torch.Tensor:
        labels = np.array([s.label for s in self.samples[split]], dtype=np.int64)
        return torch.from_numpy(np.bincount(labels, minlength=len(self.classes)))

    def dataset(self, split: str) -> ImageDataset:
        augment = self.augment if split == "train" else ()
        return ImageDataset(self.samples[split], self.spec.size, augment, self.max_pixels)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(self.dataset(split), batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
