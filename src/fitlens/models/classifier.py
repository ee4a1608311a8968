"""The network (Normalize -> backbone features -> head) and the LightningModule that trains it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from fitlens.contract import InputSpec
from fitlens.metrics import confusion, scores
from fitlens.models.backbones import Backbone

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


class ExerciseNet(nn.Module):
    """Takes the contract's input (RGB, 0..1, NCHW) and returns logits.

    The backbone's normalisation is a layer here, so the exported graph carries it and no consumer
    has to know mean/std. ``features`` (the pretrained part, frozen or fine-tuned) and ``head``
    are what the classifier trains; every network it trains has both.
    """

    def __init__(self, backbone: Backbone, num_outputs: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(backbone.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(backbone.std).view(1, 3, 1, 1))
        self.features = backbone.features
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(backbone.num_features,
                                                                 num_outputs))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled features of contract input (normalisation included)."""
        return self.features((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


NetFactory = Callable[..., nn.Module]
#: gradient: the optimizer config steps every batch (fine-tuning, or a head on frozen features);
#: lbfgs: the head is fitted to convergence on frozen features each epoch (a linear probe).
HEAD_SOLVERS = ("gradient", "lbfgs")


def build(net: NetFactory, backbone: Backbone, num_outputs: int,
          pose: nn.Module | None = None) -> nn.Module:
    """The network from its builder and parts (a pose model only for the nets that take one)."""
    parts = {} if pose is None else {"pose": pose}
    return net(backbone=backbone, num_outputs=num_outputs, **parts)


class ExerciseClassifier(pl.LightningModule):
    """Trains a network built by ``net(backbone=..., num_outputs=...[, pose=...])`` (an
    :class:`ExerciseNet`, or the pose fusion net with its frozen ``pose`` model); the contract
    ``spec`` comes from the data, the optimizer and scheduler arrive as partials from config."""

    def __init__(
        self,
        backbone: Backbone,
        net: NetFactory,
        spec: InputSpec,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        label_smoothing: float = 0.0,
        class_weighting: bool = False,
        freeze_backbone_epochs: int = 0,
        backbone_lr_scale: float = 1.0,
        pose: nn.Module | None = None,
        head_solver: str = "gradient",
        head_c: float = 1.0,
    ) -> None:
        super().__init__()
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"model.label_smoothing={label_smoothing}: expected 0 <= x < 1")
        if freeze_backbone_epochs < 0:
            raise ValueError(
                f"model.freeze_backbone_epochs={freeze_backbone_epochs}: expected an integer >= 0")
        if backbone_lr_scale <= 0:
            raise ValueError(f"model.backbone_lr_scale={backbone_lr_scale}: expected > 0")
        if head_solver not in HEAD_SOLVERS:
            raise ValueError(f"model.head_solver={head_solver!r}: expected one of "
                             f"{list(HEAD_SOLVERS)}")
        if head_c <= 0:
            raise ValueError(f"model.head_c={head_c}: expected > 0 (inverse L2 strength)")
        self.head_solver = head_solver
        self.head_c = head_c
        # lbfgs: the head is fitted to convergence on the frozen features of every training
        # view seen so far (:meth:`_fit_head`), not stepped batch by batch.
        self.automatic_optimization = head_solver == "gradient"
        self._bank: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.spec = dataclasses.replace(spec, mean=backbone.mean, std=backbone.std)
        self.backbone_name = backbone.name
        self.net = build(net, backbone, self.spec.num_outputs, pose)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.label_smoothing = label_smoothing
        self.class_weighting = class_weighting
        self.freeze_backbone_epochs = freeze_backbone_epochs
        self.backbone_lr_scale = backbone_lr_scale
        self.register_buffer("class_weights", torch.ones(self.spec.num_outputs))
        #: Filled by each evaluation epoch, read by tracking (plots, reports, out-of-fold):
        #: per split, the ``[outputs, outputs]`` confusion matrix and the probabilities/labels.
        self.confusion: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, dict[str, torch.Tensor]] = {}
        self._collected: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    @property
    def test_outputs(self) -> dict[str, torch.Tensor]:
        return self.outputs.get("test", {})

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
        self._epoch_start = len(self._bank)
        frozen = self.current_epoch < self.freeze_backbone_epochs
        for p in self.net.features.parameters():
            p.requires_grad_(not frozen)
        # Frozen means frozen: BatchNorm statistics stay the pretrained ones too. Lightning keeps
        # submodule modes across epochs, so the mode is set both ways.
        self.net.features.train(not frozen)

    def _collect(self, split: str, logits: torch.Tensor, y: torch.Tensor) -> None:
        self._collected.setdefault(split, []).append(
            (logits.detach().float().softmax(dim=1).cpu(), y.detach().cpu()))

    def _log_scores(self, split: str) -> None:
        """The scores of :mod:`fitlens.metrics` over the epoch's photos, logged as
        ``<split>/<score>``; the probabilities stay available in :attr:`outputs`."""
        batches = self._collected.pop(split, [])
        if not batches:
            return
        probs = torch.cat([p for p, _ in batches])
        labels = torch.cat([y for _, y in batches])
        self.outputs[split] = {"probs": probs, "labels": labels}
        if split != "train":
            self.confusion[split] = torch.from_numpy(
                confusion(probs.numpy(), labels.numpy(), self.spec.num_outputs))
        values = scores(probs.numpy(), labels.numpy(), self.spec.classes)
        self.log_dict({f"{split}/{k}": float(v) for k, v in values.items()})

    def on_fit_start(self) -> None:
        if self.head_solver == "lbfgs" and self.trainer.max_epochs is not None \
                and self.trainer.max_epochs > self.freeze_backbone_epochs:
            raise ValueError(
                f"model.head_solver=lbfgs fits the head on frozen features, but "
                f"model.freeze_backbone_epochs={self.freeze_backbone_epochs} < "
                f"trainer.max_epochs={self.trainer.max_epochs}; freeze for every epoch, or use "
                "model.head_solver=gradient to fine-tune")

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor],
                      index: int) -> torch.Tensor | None:
        x, y = batch
        if self.head_solver == "lbfgs":
            with torch.no_grad():
                self._bank.append((self.net.embed(x), y))
            # The last batch of the epoch: fit before this epoch's validation runs.
            if index == self.trainer.num_training_batches - 1:
                self._fit_head()
            return None
        logits = self(x)
        loss = self._loss(logits, y)
        self._collect("train", logits, y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def _fit_head(self) -> None:
        """Multinomial logistic regression on every training view so far, as scikit-learn's
        ``LogisticRegression(C=head_c)`` with class weights: L-BFGS to convergence, warm-started
        from the previous epoch. With frozen features the problem is convex, so this reaches
        what batch-by-batch gradient steps only approach."""
        features = torch.cat([f for f, _ in self._bank])
        labels = torch.cat([y for _, y in self._bank])
        for layer in self.net.head:
            if hasattr(layer, "fit"):  # BlockStandardize: statistics of the training views
                layer.fit(features)
        linear = next(m for m in reversed(self.net.head) if isinstance(m, nn.Linear))
        weights = (self.class_weights if self.class_weighting
                   else torch.ones_like(self.class_weights))[labels]
        optimizer = self.optimizers()
        self.net.head.eval()  # the objective must be deterministic: no dropout

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            losses = nn.functional.cross_entropy(self.net.head(features), labels,
                                                 reduction="none",
                                                 label_smoothing=self.label_smoothing)
            loss = (weights * losses).sum() / weights.sum()
            loss = loss + linear.weight.pow(2).sum() / (2 * self.head_c * weights.sum())
            self.manual_backward(loss)
            return loss

        optimizer.step(closure=closure)
        # This epoch's views, for the train scores and loss.
        recent = self._bank[self._epoch_start:]
        with torch.no_grad():
            y = torch.cat([y for _, y in recent])
            logits = self.net.head(torch.cat([f for f, _ in recent]))
        self.net.head.train()
        self._collect("train", logits, y)
        self.log("train/loss", self._loss(logits, y), on_step=False, on_epoch=True,
                 batch_size=len(y))

    def on_train_epoch_end(self) -> None:
        self._log_scores("train")

    def _evaluate(self, split: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        x, y = batch
        logits = self(x)
        self.log(f"{split}/loss", self._loss(logits, y), on_step=False, on_epoch=True,
                 batch_size=len(y))
        self._collect(split, logits, y)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        self._evaluate("val", batch)

    def on_validation_epoch_end(self) -> None:
        self._log_scores("val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        self._evaluate("test", batch)

    def on_test_epoch_end(self) -> None:
        self._log_scores("test")

    def configure_optimizers(self) -> Any:
        if self.head_solver == "lbfgs":
            linear = next(m for m in reversed(self.net.head) if isinstance(m, nn.Linear))
            return torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=500,
                                     history_size=20, line_search_fn="strong_wolfe")
        # Pretrained features move slower than the new head (backbone_lr_scale < 1): a full
        # learning rate on them wipes out what ImageNet taught within an epoch on 60 photos.
        # "name" makes Lightning's LearningRateMonitor log lr-<Optimizer>/backbone and /head.
        # Parameters frozen for good (a pose model's) belong to neither group.
        groups = [{"name": "backbone", "params": list(self.net.features.parameters()),
                   "lr_scale": self.backbone_lr_scale},
                  {"name": "head", "params": [p for n, p in self.net.named_parameters()
                                              if not n.startswith("features.")
                                              and p.requires_grad],
                   "lr_scale": 1.0}]
        optimizer = self.optimizer_factory(groups)
        for group in optimizer.param_groups:
            group["lr"] *= group["lr_scale"]
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

