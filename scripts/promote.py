"""Promote a registered model version: ``python scripts/promote.py version=3`` or ``best=true``.

Moves the alias (``champion``) and prints the previous and the new holder; ``--help`` lists the
options (conf/promote.yaml).
"""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from fitlens import cli

os.environ.setdefault("FITLENS_ROOT", str(Path(__file__).resolve().parents[1]))


@hydra.main(version_base="1.3", config_path="../conf", config_name="promote")
@cli.task
def main(cfg: DictConfig) -> None:
    from rich.console import Console

    from fitlens.tracking.registry import RegistryError, promote
    from fitlens.tracking.store import TrackingStoreError

    console = Console(soft_wrap=True)
    try:
        done = promote(cfg.logger.tracking_uri, cfg.logger.registered_model,
                       version=cfg.version, best=cfg.best, metric=cfg.metric, mode=cfg.mode,
                       alias=cfg.alias, reason=cfg.reason)
    except (RegistryError, TrackingStoreError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(2)
    ref = f"{done.name}@{done.alias}"
    previous = done.previous.describe(cfg.metric) if done.previous else "none"
    console.print(f"previous {ref}: {previous}", highlight=False)
    if not done.changed:
        console.print(f"unchanged: {ref} is already version {done.new.version}", highlight=False)
        return
    console.print(f"new      {ref}: {done.new.describe(cfg.metric)}", highlight=False)
    console.print(f"reason: {done.reason}", highlight=False)
    console.print(f"models:/{ref} now resolves to version {done.new.version}", highlight=False)


if __name__ == "__main__":
    sys.exit(cli.main(main, sys.argv))
