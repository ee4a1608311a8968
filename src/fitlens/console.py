"""What a person watching a fit sees, and the same table kept in the run folder.

One line per epoch, on the console and in the job's log file, readable without a terminal:
epoch, training loss, validation loss, accuracy and macro-F1, the head's learning rate and the
epoch's seconds; ``*`` marks a new best of the monitored metric. When the fit ends, one line says
why it ended (early stopping and on what, or max_epochs) and which epoch was best. The rows, with
every train/val score, are ``results.csv`` in the run folder (rewritten after every epoch, so a
crashed run keeps them) and ``curves.png`` when the fit ends. On a terminal a bar shows the
running epoch and its loss; in a log file it would be carriage returns, so there is none.

An epoch's row is written when the epoch is closed (at the next epoch's start, or the end of the
fit): Lightning aggregates the epoch's training metrics only after the epoch-end hooks.
"""

from __future__ import annotations

import csv
import logging
import math
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm

from fitlens.tracking.plots import curves_png

log = logging.getLogger(__name__)

RESULTS_FILE = "results.csv"
CURVES_FILE = "curves.png"
#: Columns of the epoch line; the monitored metric is added when it is not one of them.
SHOWN = ("train/loss", "val/loss", "val/acc", "val/f1_macro")
#: The optimizer parameter group whose learning rate is shown (the new head's: the backbone's is
#: a fixed fraction of it, model.backbone_lr_scale).
LR_GROUP = "head"


@dataclass
class FitHistory:
    """The epochs of one fit, as the console showed them."""

    rows: list[dict[str, float]] = field(default_factory=list)
    #: The metric that picks the best epoch and its mode (None: no checkpoint monitors one).
    monitor: str | None = None
    mode: str = "max"
    #: Why the fit ended, in words.
    stop_reason: str | None = None
    seconds: float = 0.0

    @property
    def best(self) -> dict[str, float] | None:
        """The row of the best epoch by ``monitor`` (the first of equals, as the checkpoint)."""
        scored = [r for r in self.rows if self.monitor in r and math.isfinite(r[self.monitor])]
        if not scored:
            return None
        sign = -1 if self.mode == "min" else 1
        return max(scored, key=lambda r: (sign * r[self.monitor], -r["epoch"]))

    @property
    def last(self) -> dict[str, float] | None:
        return self.rows[-1] if self.rows else None


def _scalars(metrics: Mapping[str, Any], prefixes: tuple[str, ...]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if k.startswith(prefixes)}


def _head_lr(trainer: pl.Trainer) -> float | None:
    if not trainer.optimizers:
        return None
    groups = trainer.optimizers[0].param_groups
    group = next((g for g in groups if g.get("name") == LR_GROUP), groups[0])
    return float(group["lr"])


def _format(value: float | None, name: str) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if name == "lr":
        return f"{value:.1e}"
    if name == "seconds":
        return f"{value:.1f}s"
    return f"{value:.4f}" if name.endswith("loss") else f"{value:.3f}"


class EpochTable(pl.Callback):
    """One line per epoch on the console (module docstring); ``results.csv`` and ``curves.png``
    in the Trainer's ``default_root_dir`` (the run folder). Rank zero only."""

    def __init__(self) -> None:
        self.history = FitHistory()
        self._folder: Path | None = None
        self._columns: list[str] = list(SHOWN)
        self._open: dict[str, float] | None = None
        self._val: dict[str, float] = {}
        self._best: float | None = None
        self._epoch_started = 0.0
        self._fit_started = 0.0

    # --- the fit --------------------------------------------------------------------------

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self._fit_started = time.monotonic()
        self._folder = Path(trainer.default_root_dir)
        checkpoint = next((c for c in trainer.checkpoint_callbacks
                           if isinstance(c, ModelCheckpoint) and c.monitor), None)
        watcher = checkpoint or next(iter(trainer.early_stopping_callbacks), None)
        if watcher is not None:
            self.history.monitor, self.history.mode = watcher.monitor, watcher.mode
            if watcher.monitor not in self._columns:
                self._columns.append(watcher.monitor)
        what = ("fast_dev_run, one batch of each split" if trainer.fast_dev_run
                else "no epoch limit" if trainer.max_epochs in (None, -1)
                else f"up to {trainer.max_epochs} epoch{'s' if trainer.max_epochs > 1 else ''}")
        if trainer.current_epoch:
            what += f", resuming after epoch {trainer.current_epoch}"
        best = (f"; * = best {self.history.monitor} so far ({self.history.mode})"
                if self.history.monitor else "")
        log.info("training: %s%s", what, best)
        log.info("%s", self._line({c: c for c in ("epoch", *self._columns, "lr", "seconds")}))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self._close_epoch(trainer)
        self._epoch_started = time.monotonic()
        self._open = {"epoch": float(trainer.current_epoch + 1), "lr": _head_lr(trainer)}

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            self._val = _scalars(trainer.callback_metrics, ("val/",))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and self._open is not None:
            self._open["seconds"] = time.monotonic() - self._epoch_started

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self._close_epoch(trainer)
        self.history.seconds = time.monotonic() - self._fit_started
        self.history.stop_reason = self._stop_reason(trainer)
        best = self.history.best
        monitor = self.history.monitor
        note = (f"; best {monitor} {_format(best[monitor], monitor)} at epoch "
                f"{int(best['epoch'])}" if best and monitor else "")
        log.info("%s%s", self.history.stop_reason, note)
        self._draw()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        if trainer.is_global_zero and self._folder is not None:
            self._draw()

    # --- rows -----------------------------------------------------------------------------

    def _close_epoch(self, trainer: pl.Trainer) -> None:
        """The open epoch's row, now that Lightning has aggregated its training metrics."""
        row, self._open = self._open, None
        if row is None:
            return
        row.update(_scalars(trainer.callback_metrics, ("train/",)))
        row.update(self._val)
        self._val = {}
        monitor, improved = self.history.monitor, False
        if monitor in row and math.isfinite(row[monitor]):
            value = row[monitor]
            if self._best is None or (value < self._best if self.history.mode == "min"
                                      else value > self._best):
                self._best, improved = value, True
        self.history.rows.append(row)
        epochs = "" if trainer.max_epochs in (None, -1) else f"/{trainer.max_epochs}"
        shown = {"epoch": f"{int(row['epoch'])}{epochs}",
                 **{c: _format(row.get(c), c) for c in (*self._columns, "lr", "seconds")}}
        log.info("%s%s", self._line(shown), "  *" if improved else "")
        self._write()

    def _line(self, cells: Mapping[str, str]) -> str:
        widths = {"epoch": 7, "lr": 8, "seconds": 7}
        return "  ".join(str(cells[c]).rjust(max(widths.get(c, 0), len(c)))
                         for c in ("epoch", *self._columns, "lr", "seconds"))

    def _write(self) -> None:
        if self._folder is None:
            return
        keys = ["epoch", "seconds", "lr"]
        for row in self.history.rows:
            keys += [k for k in row if k not in keys]
        self._folder.mkdir(parents=True, exist_ok=True)
        with (self._folder / RESULTS_FILE).open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            for row in self.history.rows:
                writer.writerow({k: (int(v) if k == "epoch" else f"{v:.6g}")
                                 for k, v in row.items() if v is not None})

    def _draw(self) -> None:
        if self._folder is not None and self.history.rows:
            curves_png(self.history.rows, self._folder / CURVES_FILE)

    def _stop_reason(self, trainer: pl.Trainer) -> str:
        done = int(self.history.rows[-1]["epoch"]) if self.history.rows else 0
        if trainer.fast_dev_run:
            return "fast_dev_run: one batch of each split ran, no checkpoint kept"
        for stopper in trainer.early_stopping_callbacks:
            if isinstance(stopper, EarlyStopping) and stopper.stopped_epoch:
                if stopper.wait_count >= stopper.patience:
                    epochs = "epoch" if stopper.wait_count == 1 else "epochs"
                    why = (f"{stopper.monitor} did not improve for {stopper.wait_count} {epochs} "
                           f"(callbacks.early_stopping.patience={stopper.patience})")
                else:
                    why = getattr(stopper, "stopping_reason_message", None) or stopper.monitor
                return f"early stopping after epoch {done}: {why}"
        if trainer.max_epochs not in (None, -1) and done >= trainer.max_epochs:
            return f"stopped after epoch {done}: trainer.max_epochs={trainer.max_epochs} reached"
        return f"stopped after epoch {done}"


class TerminalBar(TQDMProgressBar):
    """The running epoch as a bar with its mean training loss so far; it is cleared when the
    fit ends, and log lines print above it (fitlens.quiet.ConsoleHandler)."""

    def __init__(self) -> None:
        super().__init__(leave=False)
        self._loss_sum = 0.0
        self._seen = 0

    def init_train_tqdm(self) -> Tqdm:
        bar = super().init_train_tqdm()
        bar.leave = False
        return bar

    def init_test_tqdm(self) -> Tqdm:
        bar = super().init_test_tqdm()
        bar.leave = False
        return bar

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self._loss_sum, self._seen = 0.0, 0
        epochs = "" if trainer.max_epochs in (None, -1) else f"/{trainer.max_epochs}"
        self.train_progress_bar.set_description(f"epoch {trainer.current_epoch + 1}{epochs}")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if loss is not None:
            self._loss_sum += float(loss)
            self._seen += 1
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer: pl.Trainer,
                    pl_module: pl.LightningModule) -> dict[str, str]:
        """The loss so far instead of Lightning's default (the logger's version, ``v_num``)."""
        return {"loss": f"{self._loss_sum / self._seen:.4f}"} if self._seen else {}


def training_display(progress_bar: bool = True) -> tuple[list[pl.Callback], bool]:
    """The callbacks that show a fit and the Trainer's ``enable_progress_bar``: epoch lines
    always; the live bar only if asked for (``trainer.enable_progress_bar``) and on a terminal."""
    live = progress_bar and sys.stdout.isatty()
    return [EpochTable(), *([TerminalBar()] if live else [])], live
