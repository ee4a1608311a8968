"""Training throughput: our Lightning pipeline against a bare PyTorch loop, and the data loader
alone against the model step alone.

Every loop here is built from the same composed config by :func:`fitlens.train.build`, so it
gets the same network, loss settings, DataLoader (files, augmentations, batch size, workers) and
optimizer (``configure_optimizers``). Each loop stamps the clock when a batch arrives and when
training ends; an epoch lasts from its first batch to the next epoch's first batch (or the end),
so the epoch-end work (scheduler, checkpoint, logging) counts. The first epoch is warm-up (set-up,
first-touch allocation, loader start-up); images/s is the median over the remaining epochs of
all repeats, which one stalled epoch on a shared machine cannot move. All images are training
images (no val/test hold-out, no validation loop): every loop does the same work per epoch.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fitlens.bench.configs import compose_config
from fitlens.bench.timing import median, time_calls
from fitlens.models.backbones import IMAGENET_MEAN, IMAGENET_STD, Backbone
from fitlens.train import build

#: Every image trains, nothing validates, all layers train from the first step (freezing would
#: make early epochs cheaper in one loop's eyes only), no progress bar drawing on the terminal.
COMMON = ("data.val_fraction=0", "data.test_fraction=0", "+trainer.limit_val_batches=0",
          "model.freeze_backbone_epochs=0", "+trainer.enable_progress_bar=false")
#: Lightning as a training loop only: no callbacks, logger or checkpoints.
FRAMEWORK_ONLY = ("callbacks=none", "~logger", "+trainer.enable_checkpointing=false")
#: Our defaults: checkpointing (last.ckpt every epoch), early stopping, LR monitor, CSV logger.
#: Without validation the monitored metric never appears; early stopping must not fail on that.
DEFAULTS = ("logger=csv", "+callbacks.early_stopping.strict=false")

VARIANTS = {
    "bare": "bare PyTorch loop",
    "lightning": "Lightning, no callbacks/logger/checkpointing",
    "lightning_defaults": "Lightning with our default callbacks + CSV logger",
}

#: (epoch, perf_counter when a batch arrived, images in it); a final (epochs, end, 0) closes
#: the last epoch.
Stamp = tuple[int, float, int]


@dataclass(frozen=True)
class ThroughputSettings:
    epochs: int = 3
    repeats: int = 3
    loader_workers: tuple[int, ...] = (0, 1, 2)
    step_repeats: int = 10
    #: Epochs per run of the fixed-cost probe (:class:`FrameworkCost`), milliseconds each.
    cost_epochs: int = 30


def epochs_timed(stamps: Sequence[Stamp], skip_epochs: int = 1) -> list[tuple[int, float]]:
    """(images, seconds) of each epoch from ``skip_epochs`` on, from its first batch to the
    next epoch's first batch (or the closing stamp)."""
    starts: dict[int, float] = {}
    images: dict[int, int] = {}
    for epoch, t, n in stamps:
        starts.setdefault(epoch, t)
        images[epoch] = images.get(epoch, 0) + n
    timed = [(images[e], starts[after] - starts[e])
             for e, after in itertools.pairwise(sorted(starts)) if e >= skip_epochs]
    if not timed:
        raise ValueError(f"no complete epoch after {skip_epochs} warm-up epoch(s); run more "
                         "epochs")
    return timed


def epoch_rates(stamps: Sequence[Stamp], skip_epochs: int = 1) -> list[float]:
    return [n / seconds for n, seconds in epochs_timed(stamps, skip_epochs)]


class BatchClock(pl.Callback):
    """Stamps the clock in ``on_train_batch_start`` (once the loader has delivered) and in
    ``on_train_end``."""

    def __init__(self) -> None:
        self.stamps: list[Stamp] = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        self.stamps.append((trainer.current_epoch, time.perf_counter(), len(batch[1])))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stamps.append((trainer.max_epochs, time.perf_counter(), 0))


def _optimizer_and_scheduler(model: pl.LightningModule) -> tuple[torch.optim.Optimizer, Any]:
    configured = model.configure_optimizers()
    if isinstance(configured, dict):
        return configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    return configured, None


def lightning_stamps(cfg: DictConfig, loader: DataLoader | None = None) -> list[Stamp]:
    """Fit as ``fitlens.train.run`` does (``build`` then ``Trainer.fit``), with a clock; on
    ``loader`` instead of the datamodule's if given."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, model, trainer = build(cfg)
    clock = BatchClock()
    trainer.callbacks.append(clock)
    if loader is None:
        trainer.fit(model, datamodule=datamodule)
    else:
        trainer.fit(model, train_dataloaders=loader)
    return clock.stamps


def bare_stamps(cfg: DictConfig, loader: DataLoader | None = None) -> list[Stamp]:
    """The same model, loader, loss and optimizer in a hand-written loop.

    The loss is the classifier's (class weights, label smoothing); our ``training_step`` also
    updates accuracy/macro-F1 and logs, which belongs to the pipeline's cost, not to this loop.
    """
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, model, _ = build(cfg)  # the trainer is built and left unused
    if loader is None:
        datamodule.setup("fit")
        loader = datamodule.train_dataloader()
    optimizer, scheduler = _optimizer_and_scheduler(model)
    model.train()
    stamps: list[Stamp] = []
    epochs = int(cfg.trainer.max_epochs)
    for epoch in range(epochs):
        for x, y in loader:
            stamps.append((epoch, time.perf_counter(), len(y)))
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x), y, weight=model.class_weights,
                                               label_smoothing=model.label_smoothing)
            loss.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
    stamps.append((epochs, time.perf_counter(), 0))
    return stamps


@dataclass(frozen=True)
class FrameworkOverhead:
    backbone: str
    image_size: int
    batch_size: int
    train_images: int
    epochs: int
    repeats: int
    #: images/s of every measured epoch per variant (repeats interleave the variants).
    images_per_s: dict[str, list[float]] = field(default_factory=dict)

    def median(self, variant: str) -> float:
        return median(self.images_per_s[variant])

    def overhead(self, variant: str) -> float:
        """``1 - variant/bare`` on the medians: the share of throughput the variant loses."""
        return 1 - self.median(variant) / self.median("bare")

    def to_dict(self) -> dict[str, Any]:
        return {"backbone": self.backbone, "image_size": self.image_size,
                "batch_size": self.batch_size, "train_images": self.train_images,
                "epochs": self.epochs, "warmup_epochs": 1, "repeats": self.repeats,
                "variants": {k: {"description": VARIANTS[k], "images_per_s": v,
                                 "median_images_per_s": self.median(k),
                                 **({"overhead_vs_bare": self.overhead(k)} if k != "bare"
                                    else {})}
                             for k, v in self.images_per_s.items()}}


def framework_overhead(conf_dir: Path, overrides: Sequence[str], workdir: Path,
                       settings: ThroughputSettings) -> FrameworkOverhead:
    """Bare loop, Lightning, Lightning with defaults: ``settings.repeats`` interleaved rounds."""
    base = [*overrides, *COMMON, f"trainer.max_epochs={settings.epochs}"]
    configs = {
        "bare": compose_config(conf_dir, "train", [*base, *FRAMEWORK_ONLY], workdir / "bare"),
        "lightning": compose_config(conf_dir, "train", [*base, *FRAMEWORK_ONLY],
                                    workdir / "lightning"),
        "lightning_defaults": compose_config(conf_dir, "train", [*base, *DEFAULTS],
                                             workdir / "lightning_defaults"),
    }
    runs = {"bare": bare_stamps, "lightning": lightning_stamps,
            "lightning_defaults": lightning_stamps}
    result: dict[str, list[float]] = {k: [] for k in runs}
    train_images = 0
    for _ in range(settings.repeats):
        for name, loop in runs.items():
            stamps = loop(configs[name])
            train_images = sum(n for epoch, _, n in stamps if epoch == 0)
            result[name] += epoch_rates(stamps)
    cfg = configs["bare"]
    return FrameworkOverhead(
        backbone=str(cfg.model.backbone._target_).rsplit(".", 1)[-1],
        image_size=int(cfg.data.image_size), batch_size=int(cfg.data.batch_size),
        train_images=train_images, epochs=settings.epochs, repeats=settings.repeats,
        images_per_s=result)


def pooling_backbone(pretrained: bool = False, weights_path: str | None = None) -> Backbone:
    """A backbone with next to no compute (global average pooling of the 3 channels), so that
    only the training loop's own cost is left to time. Takes the builders' arguments, ignored."""
    return Backbone("pooling", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), 3,
                    IMAGENET_MEAN, IMAGENET_STD)


@dataclass(frozen=True)
class FrameworkCost:
    """What Lightning adds per epoch, timed where neither compute nor image decoding drowns it.

    The same three loops run our ExerciseClassifier (metrics, logging, optimizer, callbacks)
    with :func:`pooling_backbone` on in-memory batches of the real shape and the real number
    of steps per epoch. An epoch then takes milliseconds, so many epochs fit in seconds and
    their median holds still on a shared machine. The framework's work per step and per epoch
    does not depend on the network, so ``extra_ms / real epoch time`` is the overhead at full
    size, with a noise floor far below what timing the full model can resolve here.
    """

    steps_per_epoch: int
    #: Milliseconds of every measured epoch per variant.
    epoch_ms: dict[str, list[float]] = field(default_factory=dict)

    def extra_ms(self, variant: str) -> float:
        return median(self.epoch_ms[variant]) - median(self.epoch_ms["bare"])

    def to_dict(self) -> dict[str, Any]:
        return {"steps_per_epoch": self.steps_per_epoch, "epoch_ms": self.epoch_ms,
                "median_epoch_ms": {k: median(v) for k, v in self.epoch_ms.items()},
                "extra_ms_per_epoch": {k: self.extra_ms(k) for k in self.epoch_ms
                                       if k != "bare"}}


def framework_cost(conf_dir: Path, overrides: Sequence[str], workdir: Path,
                   settings: ThroughputSettings) -> FrameworkCost:
    """The three loops of :func:`framework_overhead` without compute (see FrameworkCost)."""
    base = [*overrides, *COMMON, f"trainer.max_epochs={settings.cost_epochs}",
            f"model.backbone._target_={__name__}.pooling_backbone"]
    configs = {name: compose_config(conf_dir, "train", [*base, *extra], workdir / name)
               for name, extra in (("bare", FRAMEWORK_ONLY), ("lightning", FRAMEWORK_ONLY),
                                   ("lightning_defaults", DEFAULTS))}
    cfg = configs["bare"]
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    images, size = len(datamodule.samples["train"]), int(cfg.data.image_size)
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.rand(images, 3, size, size, generator=generator),
                         torch.randint(0, len(datamodule.classes), (images,),
                                       generator=generator))
    loader = DataLoader(data, batch_size=int(cfg.data.batch_size), shuffle=True)
    runs = {"bare": bare_stamps, "lightning": lightning_stamps,
            "lightning_defaults": lightning_stamps}
    epoch_ms: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(settings.repeats):
        for name, loop in runs.items():
            epoch_ms[name] += [seconds * 1000 for _, seconds in
                               epochs_timed(loop(configs[name], loader))]
    return FrameworkCost(steps_per_epoch=len(loader), epoch_ms=epoch_ms)


@dataclass(frozen=True)
class InputPipeline:
    #: DataLoader alone (decode + augment + resize + collate), images/s by num_workers.
    loader_images_per_s: dict[int, float]
    #: forward + backward + optimizer step on a batch already in memory, images/s.
    step_images_per_s: float
    batch_size: int

    def loader_share(self, workers: int = 0) -> float:
        """Fraction of a serial (workers=0) step that is spent waiting for data."""
        load = 1 / self.loader_images_per_s[workers]
        return load / (load + 1 / self.step_images_per_s)

    def to_dict(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size,
                "loader_images_per_s": {str(k): v for k, v in self.loader_images_per_s.items()},
                "step_images_per_s": self.step_images_per_s,
                "loader_is_bottleneck": {str(k): v < self.step_images_per_s
                                         for k, v in self.loader_images_per_s.items()},
                **({"loader_share_workers0": self.loader_share(0)}
                   if 0 in self.loader_images_per_s else {})}


def _loader_stamps(batches: Iterable[Any], epochs: int) -> list[Stamp]:
    stamps: list[Stamp] = []
    for epoch in range(epochs):
        for _, y in batches:
            stamps.append((epoch, time.perf_counter(), len(y)))
    stamps.append((epochs, time.perf_counter(), 0))
    return stamps


def input_pipeline(conf_dir: Path, overrides: Sequence[str], workdir: Path,
                   settings: ThroughputSettings) -> InputPipeline:
    """The loader on its own for each worker count, and the model step on its own."""
    loader_rates: dict[int, float] = {}
    for workers in settings.loader_workers:
        cfg = compose_config(conf_dir, "train", [*overrides, *COMMON, *FRAMEWORK_ONLY,
                                                 f"data.num_workers={workers}"],
                             workdir / f"loader_w{workers}")
        datamodule = instantiate(cfg.data, _convert_="all")
        datamodule.setup("fit")
        loader = datamodule.train_dataloader()
        loader_rates[workers] = median(epoch_rates(_loader_stamps(loader, settings.epochs)))
    cfg = compose_config(conf_dir, "train", [*overrides, *COMMON, *FRAMEWORK_ONLY],
                         workdir / "step")
    pl.seed_everything(cfg.seed, verbose=False)
    datamodule, model, _ = build(cfg)
    datamodule.setup("fit")
    x, y = next(iter(datamodule.train_dataloader()))
    optimizer, _ = _optimizer_and_scheduler(model)
    model.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y, weight=model.class_weights,
                                    label_smoothing=model.label_smoothing).backward()
        optimizer.step()

    timing = time_calls(step, warmup=2, repeats=settings.step_repeats)
    return InputPipeline(loader_images_per_s=loader_rates, step_images_per_s=len(y) / timing.p50,
                         batch_size=int(cfg.data.batch_size))
