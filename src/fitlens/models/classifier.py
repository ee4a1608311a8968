"""The network (Normalize -> backbone features -> head) and the LightningModule that trains it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)

from fitlens.contract import InputSpec
from fitlens.models.backbones import Backbone

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


class ExerciseNet(nn.Module):
    """Takes the contract's input (RGB, 0..1, NCHW) and returns logits.

    The backbone's normalisation is a layer here, so the exported graph carries it and no consumer
    has to know mean/std.
    """

    def __init__(self, backbone: Backbone, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(backbone.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(backbone.std).view(1, 3, 1, 1))
        self.features = backbone.features
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(backbone.num_features,
                                                                 num_classes))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled features of contract input (normalisation included)."""
        return self.features((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def _metrics(num_classes: int, prefix: str) -> MetricCollection:
    return MetricCollection({
        "acc": MulticlassAccuracy(num_classes, average="micro"),
        "f1_macro": MulticlassF1Score(num_classes, average="macro"),
    }, prefix=prefix)


class ExerciseClassifier(pl.LightningModule):
    """Trains :class:`ExerciseNet`; the optimizer and scheduler arrive as partials from config."""

    def __init__(
        self,
        backbone: Backbone,
        classes: Sequence[str],
        image_size: int,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        label_smoothing: float = 0.0,
        class_weighting: bool = False,
        freeze_backbone_epochs: int = 0,
        backbone_lr_scale: float = 1.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"model.label_smoothing={label_smoothing}: expected 0 <= x < 1")
        if freeze_backbone_epochs < 0:
            raise ValueError(
                f"model.freeze_backbone_epochs={freeze_backbone_epochs}: expected an integer >= 0")
        self.spec = InputSpec(classes=tuple(str(c) for c in classes), size=int(image_size),
                              mean=backbone.mean, std=backbone.std)
        self.backbone_name = backbone.name
        self.net = ExerciseNet(backbone, self.spec.num_classes, dropout)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.label_smoothing = label_smoothing
        self.class_weighting = class_weighting
        self.freeze_backbone_epochs = freeze_backbone_epochs
        if backbone_lr_scale <= 0:
            raise ValueError(f"model.backbone_lr_scale={backbone_lr_scale}: expected > 0")
        self.backbone_lr_scale = backbone_lr_scale
        n = self.spec.num_classes
        self.register_buffer("class_weights", torch.ones(n))
        self.train_metrics = _metrics(n, "train/")
        self.val_metrics = _metrics(n, "val/")
        self.test_metrics = _metrics(n, "test/")
        self.test_per_class = MulticlassAccuracy(n, average=None)
        self.val_confusion = MulticlassConfusionMatrix(n)
        self.test_confusion = MulticlassConfusionMatrix(n)
        #: Filled by each evaluation epoch, read by tracking (plots, reports).
        self.confusion: dict[str, torch.Tensor] = {}
        self.test_outputs: dict[str, torch.Tensor] = {}
        self._test_probs: list[torch.Tensor] = []
        self._test_labels: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        if self.class_weighting and stage == "fit" and datamodule is not None:
            counts = datamodule.class_counts("train").float()
            # Inverse frequency, mean 1, so the loss scale matches the unweighted loss.
            weights = counts.sum() / (len(counts) * counts.clamp(min=1))
            self.class_weights.copy_(weights)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        weight = self.class_weights if self.class_weighting else None
        return nn.functional.cross_entropy(logits, y, weight=weight,
                                           label_smoothing=self.label_smoothing)

    def on_train_epoch_start(self) -> None:
        frozen = self.current_epoch < self.freeze_backbone_epochs
        for p in self.net.features.parameters():
            p.requires_grad_(not frozen)
        # Frozen means frozen: BatchNorm statistics stay the pretrained ones too. Lightning keeps
        # submodule modes across epochs, so the mode is set both ways.
        self.net.features.train(not frozen)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = self._loss(logits, y)
        self.train_metrics.update(logits, y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def on_train_epoch_end(self) -> None:
        self.log_dict(self.train_metrics.compute())
        self.train_metrics.reset()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val/loss", self._loss(logits, y), on_step=False, on_epoch=True,
                 batch_size=len(y))
        self.val_metrics.update(logits, y)
        self.val_confusion.update(logits, y)

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute())
        self.val_metrics.reset()
        self.confusion["val"] = self.val_confusion.compute().cpu()
        self.val_confusion.reset()

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("test/loss", self._loss(logits, y), on_step=False, on_epoch=True,
                 batch_size=len(y))
        for metric in (self.test_metrics, self.test_per_class, self.test_confusion):
            metric.update(logits, y)
        self._test_probs.append(logits.softmax(dim=1).detach().cpu())
        self._test_labels.append(y.detach().cpu())

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute())
        per_class = self.test_per_class.compute()
        self.log_dict({f"test/acc_{name}": per_class[i]
                       for i, name in enumerate(self.spec.classes)})
        self.confusion["test"] = self.test_confusion.compute().cpu()
        self.test_outputs = {"probs": torch.cat(self._test_probs),
                             "labels": torch.cat(self._test_labels)}
        for metric in (self.test_metrics, self.test_per_class, self.test_confusion):
            metric.reset()
        self._test_probs, self._test_labels = [], []

    def configure_optimizers(self) -> Any:
        # Pretrained features move slower than the new head (backbone_lr_scale < 1): a full
        # learning rate on them wipes out what ImageNet taught within an epoch on 60 photos.
        # "name" makes Lightning's LearningRateMonitor log lr-<Optimizer>/backbone and /head.
        groups = [{"name": "backbone", "params": list(self.net.features.parameters()),
                   "lr_scale": self.backbone_lr_scale},
                  {"name": "head", "params": [p for n, p in self.named_parameters()
                                              if not n.startswith("net.features.")],
                   "lr_scale": 1.0}]
        optimizer = self.optimizer_factory(groups)
        for group in optimizer.param_groups:
            group["lr"] *= group["lr_scale"]
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
