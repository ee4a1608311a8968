"""Promote a registered model version: ``python scripts/promote.py version=3`` or ``best=true``.

Moves the alias (``champion``) and prints the previous and the new holder; with ``best=true``
first the versions it compared (selection metric, and the test metric for information) and the
ones it left out, with why. ``--help`` lists the options (conf/promote.yaml).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig

from fitlens import cli

if TYPE_CHECKING:
    from fitlens.tracking.registry import Selection

os.environ.setdefault("FITLENS_ROOT", str(Path(__file__).resolve().parents[1]))


def selection_lines(selection: Selection, alias: str) -> list[str]:
    """The comparison behind ``best=true``, as lines: ranked versions, then the others."""
    from fitlens.tracking.registry import REPORTED_METRIC

    ref = selection.reference
    rows = [("version", selection.metric, f"{REPORTED_METRIC} (not used)", "run", "")]
    for info in selection.compared:
        notes = ["chosen"] if info is selection.chosen else []
        if selection.reference_role == alias and info.version == ref.version:
            notes.append(f"current {alias}")
        test = info.metrics.get(REPORTED_METRIC)
        rows.append((info.version, f"{info.metrics[selection.metric]:.4f}",
                     "-" if test is None else f"{test:.4f}", info.run_id, ", ".join(notes)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"compared: the versions with the classes and data of {selection.against}",
             f"  classes {list(ref.classes)}, data_fingerprint {ref.data_fingerprint}",
             f"  ranked by {selection.metric} ({selection.mode}); {REPORTED_METRIC} is shown for "
             "information, never used to choose"]
    for row in rows:
        cells = (c.ljust(w) for c, w in zip(row[:4], widths, strict=True))
        lines.append("  " + "  ".join(cells) + "  " + row[4])
    if selection.excluded:
        lines.append("not compared:")
        lines += [f"  version {info.version}: {why}" for info, why in selection.excluded]
    return lines


@hydra.main(version_base="1.3", config_path="../conf", config_name="promote")
@cli.task
def main(cfg: DictConfig) -> None:
    from rich.console import Console
    from rich.markup import escape

    from fitlens.tracking.registry import RegistryError, promote
    from fitlens.tracking.store import TrackingStoreError

    console = Console(soft_wrap=True)

    def say(text: str) -> None:
        console.print(text, markup=False, highlight=False)

    try:
        done = promote(cfg.logger.tracking_uri, cfg.logger.registered_model,
                       version=cfg.version, best=cfg.best, metric=cfg.metric, mode=cfg.mode,
                       alias=cfg.alias, reason=cfg.reason)
    except (RegistryError, TrackingStoreError, ValueError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        sys.exit(2)
    metric = done.selection.metric if done.selection else cfg.metric
    if done.selection:
        for line in selection_lines(done.selection, done.alias):
            say(line)
    ref = f"{done.name}@{done.alias}"
    say(f"previous {ref}: {done.previous.describe(metric) if done.previous else 'none'}")
    if not done.changed:
        say(f"unchanged: {ref} is already version {done.new.version}")
        return
    say(f"new      {ref}: {done.new.describe(metric)}")
    say(f"reason: {done.reason}")
    say(f"models:/{ref} now resolves to version {done.new.version}")


if __name__ == "__main__":
    sys.exit(cli.main(main, sys.argv))
