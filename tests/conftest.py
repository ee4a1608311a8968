"""Shared fixtures: a tiny generated data set in the real layout and the real composed config."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
os.environ.setdefault("FITLENS_ROOT", str(ROOT))

#: Overrides that shrink a real config to seconds on a CPU.
TINY = [
    "model=mobilenet_v2",
    "model.backbone.pretrained=false",
    "data.image_size=32",
    "data.batch_size=8",
    "trainer.max_epochs=1",
    "+trainer.enable_progress_bar=false",
    "model.freeze_backbone_epochs=0",
]


def config_classes() -> list[str]:
    return list(compose_config([]).data.classes)


def make_images(root: Path, classes: list[str], variants: int = 4, per_variant: int = 2,
                size: tuple[int, int] = (40, 32)) -> Path:
    """``root/<class>/fedb__<Variant>__<n>.jpg``: flat colours per class plus noise, learnable."""
    rng = np.random.default_rng(0)
    for ci, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        base = np.array([(ci * 40) % 256, (255 - ci * 40) % 256, (ci * 90) % 256], np.float32)
        for v in range(variants):
            for n in range(per_variant):
                noise = rng.normal(0, 12, (size[1], size[0], 3))
                arr = np.clip(base + noise, 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(folder / f"fedb__{name}_v{v}__{n}.jpg", quality=90)
    return root


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    return make_images(tmp_path / "photos", config_classes())


def compose_config(overrides: list[str], output_dir: Path | None = None) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
    return cfg


@pytest.fixture
def tiny_cfg(tmp_path: Path, image_root: Path) -> Callable[..., DictConfig]:
    """Compose the real train config shrunk to tiny sizes on the generated images."""

    def make(*overrides: str) -> DictConfig:
        out = tmp_path / "run"
        return compose_config([*TINY, f"data.root={image_root}", *overrides], output_dir=out)

    return make
