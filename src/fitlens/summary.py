"""The short table a user reads when a run ends."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from fitlens.train import TrainResult


def print_summary(result: TrainResult, console: Console | None = None) -> None:
    table = Table(title="fitlens run", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for name, value in {**result.val_metrics, **result.test_metrics}.items():
        table.add_row(name, f"{value:.4f}")
    table.add_row("best checkpoint", result.best_checkpoint or "-")
    table.add_row("output dir", result.output_dir)
    (console or Console()).print(table)
