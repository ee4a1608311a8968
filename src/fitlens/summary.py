"""The summary a user reads when a training job ends.

It says which numbers are the best epoch's, the last epoch's and the test's (the test scores the
best checkpoint), gives every path in full, the MLflow run with its link, the registered version
and the command to run next. Plain lines through logging: the console and the job's log file
say the same, and nothing is cut to fit a terminal's width.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from pytorch_lightning.utilities import rank_zero_only

from fitlens.tracking.ui import ui_command
from fitlens.train import TrainResult

log = logging.getLogger(__name__)

#: Scores in the order a person reads them (fitlens.metrics), before the per-class ones.
ORDER = ("loss", "acc", "f1_macro", "reject_auroc", "known_accepted", "other_accepted",
         "accepted_precision")
#: What a person may open in a run folder, if it is there.
RUN_FOLDER_ITEMS = ("train.log", "results.csv", "curves.png", "plots", "reports",
                    "split.csv", "oof_predictions.csv")
#: How long ``mlflow server`` takes to answer on a small machine.
UI_START = "about 25 s to start"


def _split(metrics: Mapping[str, float], prefix: str) -> dict[str, float]:
    return {k.removeprefix(prefix): v for k, v in metrics.items() if k.startswith(prefix)}


def _columns(result: TrainResult) -> dict[str, dict[str, float]]:
    """Column title -> scores (without their split prefix)."""
    columns: dict[str, dict[str, float]] = {}
    history = result.history
    best = history.best if history else None
    last = history.last if history else None
    if best is not None:
        columns[f"val, best epoch {int(best['epoch'])}"] = _split(best, "val/")
    if last is not None and _split(last, "val/"):
        columns[f"val, last epoch {int(last['epoch'])}"] = _split(last, "val/")
    elif last is None:
        last_val = {k: v for k, v in result.val_metrics.items() if not k.startswith("best_")}
        if last_val:
            columns["val, last epoch"] = _split(last_val, "val/")
    if result.test_metrics:
        weights = "best checkpoint" if result.best_checkpoint else "last weights"
        columns[f"test, {weights}"] = _split(result.test_metrics, "test/")
    if result.oof_metrics:
        oof = _split(result.oof_metrics, "oof/")
        columns["out-of-fold"] = {k: v for k, v in oof.items()
                                  if not k.startswith("fold") and "threshold" not in k
                                  and not k.endswith(("_low", "_high"))}
    return columns


def _table(columns: dict[str, dict[str, float]]) -> list[str]:
    names = [n for n in ORDER if any(n in c for c in columns.values())]
    names += sorted({n for c in columns.values() for n in c} - set(names))
    if not names:
        return []
    first = max(len("metric"), *(len(n) for n in names))
    widths = [max(len(title), 8) for title in columns]
    lines = ["  ".join(["metric".ljust(first), *(t.rjust(w) for t, w in zip(columns, widths,
                                                                           strict=True))])]
    for name in names:
        cells = []
        for values, width in zip(columns.values(), widths, strict=True):
            value = values.get(name)
            text = "-" if value is None else (f"{value:.4f}" if name == "loss" else
                                              f"{value:.3f}")
            cells.append(text.rjust(width))
        lines.append("  ".join([name.ljust(first), *cells]))
    return lines


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _next_command(result: TrainResult) -> str | None:
    if result.model_version is not None:
        return (f'python scripts/promote.py version={result.model_version} reason="<why>"'
                "   # then: python scripts/export.py")
    if result.best_checkpoint:
        return f"python scripts/evaluate.py evaluate.checkpoint={result.best_checkpoint}"
    return None


def summary_lines(result: TrainResult) -> list[str]:
    """The summary of one training job (a single run, or a cross-validation and its refit)."""
    history = result.history
    how = []
    if history is not None and history.stop_reason:
        how.append(history.stop_reason)
    if history is not None and history.seconds:
        how.append(f"training took {_duration(history.seconds)}")
    lines = [f"── fitlens run{': ' + '; '.join(how) if how else ' finished'}"]
    if result.oof_metrics and "oof/f1_macro" in result.oof_metrics:
        low, high = result.oof_metrics.get("oof/f1_macro_low"), \
            result.oof_metrics.get("oof/f1_macro_high")
        interval = f" (90% interval {low:.3f}-{high:.3f})" if low is not None else ""
        f1 = result.oof_metrics["oof/f1_macro"]
        lines.append(f"cross-validation: out-of-fold macro-F1 {f1:.3f}{interval}; the model "
                     "to ship is the refit on every photo")
    lines += _table(_columns(result))
    rows: list[tuple[str, str]] = []
    if result.best_checkpoint:
        rows.append(("best checkpoint", str(Path(result.best_checkpoint).resolve())))
    folder = Path(result.output_dir).resolve()
    present = [f"{n}/" if (folder / n).is_dir() else n for n in RUN_FOLDER_ITEMS
               if (folder / n).exists()]
    rows.append(("run folder", f"{folder}" + (f"  ({', '.join(present)})" if present else "")))
    if result.mlflow_run_id:
        rows.append(("MLflow run", f"{result.mlflow_run_id}  {result.mlflow_url or ''}".rstrip()))
        command = ui_command(result.tracking_uri or "")
        if command:
            rows.append(("MLflow UI", f"{command}   ({UI_START})"))
    if result.model_version is not None:
        rows.append(("registered", f"{result.registered_model} version {result.model_version}"))
    elif result.mlflow_run_id:
        rows.append(("registered", "no version (logger.register=false, or no checkpoint)"))
    command = _next_command(result)
    if command:
        rows.append(("next", command))
    width = max(len(label) for label, _ in rows)
    lines += [f"{label.ljust(width)}  {value}" for label, value in rows]
    return lines


@rank_zero_only
def report(result: TrainResult) -> None:
    """Log the summary, line by line (the console prints it plainly, the log file keeps it)."""
    for line in summary_lines(result):
        log.info("%s", line)
