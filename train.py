"""Train the exercise classifier: ``python train.py [overrides]``; ``--help`` lists the options.

A mistake in the settings or the data is one ``error:`` line and exit status 2 (``--verbose`` or
``HYDRA_FULL_ERROR=1`` adds the traceback); see fitlens.cli.
"""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from fitlens import cli

os.environ.setdefault("FITLENS_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@cli.task
def main(cfg: DictConfig) -> float | None:
    # Values are checked before torch and Lightning load, so a bad one costs a second.
    from fitlens.config import validate_config
    from fitlens.quiet import quiet

    validate_config(cfg)
    quiet()
    from fitlens.summary import report
    from fitlens.train import run

    result = run(cfg)
    report(result)
    return result.metric


if __name__ == "__main__":
    sys.exit(cli.main(main, sys.argv))
