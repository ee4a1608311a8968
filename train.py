"""Train the exercise classifier: ``python train.py [overrides]``; ``--help`` lists the options."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("FITLENS_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from fitlens.summary import print_summary
    from fitlens.train import run

    result = run(cfg)
    print_summary(result)
    return result.metric


if __name__ == "__main__":
    main()
