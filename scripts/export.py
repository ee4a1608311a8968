"""Export the promoted model for the app: ``python scripts/export.py [overrides]``.

    python scripts/export.py                       # models:/exercise-classifier@champion
    python scripts/export.py export.version=3      # a specific registered version
    python scripts/export.py export.quantize=int8  # plus a static int8 variant

Writes nothing unless every check passes (exit status 2 with the reason otherwise). ``--help``
lists every setting (conf/export.yaml).
"""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from fitlens import cli

os.environ.setdefault("FITLENS_ROOT", str(Path(__file__).resolve().parents[1]))


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
@cli.task
def main(cfg: DictConfig) -> None:
    from rich.console import Console
    from rich.table import Table

    from fitlens.quiet import quiet

    quiet()  # MLflow's download bars and INFO lines
    from fitlens.export.pipeline import EXPECTED_ERRORS, run, summary_rows

    console = Console(soft_wrap=True)
    try:
        report = run(cfg)
    except EXPECTED_ERRORS as exc:
        console.print(f"[red]export failed:[/red] {exc}", highlight=False)
        sys.exit(2)
    table = Table(title="fitlens export", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for label, value in summary_rows(report):
        table.add_row(label, value)
    console.print(table)


if __name__ == "__main__":
    sys.exit(cli.main(main, sys.argv))
