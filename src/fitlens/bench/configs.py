"""The project's real Hydra configs, composed as ``train.py`` / ``scripts/export.py`` see them.

Benchmarks override sizes and switches, never the recipe: what is measured is what users run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict


def compose_config(conf_dir: Path, name: str, overrides: Sequence[str] = (),
                   output_dir: Path | None = None) -> DictConfig:
    """``conf/<name>.yaml`` with ``overrides``; ``output_dir`` stands in for Hydra's run dir,
    which only exists under ``@hydra.main``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(Path(conf_dir).resolve()), version_base="1.3"):
        cfg = compose(config_name=name, overrides=list(overrides))
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
    return cfg
