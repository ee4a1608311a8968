"""Score a model on labelled photos, as the app would answer them: ``python scripts/evaluate.py``.

    python scripts/evaluate.py                                   # the champion, on its test split
    python scripts/evaluate.py evaluate.version=3 evaluate.images=/photos evaluate.other=data/other
    python scripts/evaluate.py evaluate.onnx=flutter_app/assets/models evaluate.images=/photos
    python scripts/evaluate.py evaluate.checkpoint=outputs/runs/<run>/checkpoints/last.ckpt

Writes the table, confusion matrix and per-class CSV to outputs/eval/<time>/ (conf/evaluate.yaml;
``--help`` lists every setting). A bad setting or photo folder: one error line, exit status 2.
"""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from fitlens import cli

os.environ.setdefault("FITLENS_ROOT", str(Path(__file__).resolve().parents[1]))


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
@cli.task
def main(cfg: DictConfig) -> None:
    from fitlens.quiet import quiet

    quiet()
    from fitlens.evaluate import report, run

    report(run(cfg))


if __name__ == "__main__":
    sys.exit(cli.main(main, sys.argv))
