"""Export the promoted model for the app: ``python scripts/export.py [overrides]``.

    python scripts/export.py                       # models:/exercise-classifier@champion
    python scripts/export.py export.version=3      # a specific registered version
    python scripts/export.py export.quantize=int8  # plus a static int8 variant

Writes nothing into the app unless every check passes (exit status 2 with the reason
otherwise, fitlens.cli). ``--help`` lists every setting (conf/export.yaml).
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
    from fitlens.quiet import quiet

    quiet()  # MLflow's download bars and INFO lines
    from fitlens.export.pipeline import run, summary_rows

    # Plain lines, never cut: paths and the sha256 must survive a log file or a narrow terminal.
    rows = summary_rows(run(cfg))
    width = max(len(label) for label, _ in rows)
    print("── fitlens export")
    for label, value in rows:
        print(f"{label.ljust(width)}  {value}")


if __name__ == "__main__":
    sys.exit(cli.main(main, sys.argv))
