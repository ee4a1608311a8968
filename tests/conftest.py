"""Shared fixtures: a tiny generated data set in the real layout and the real composed config."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict
from PIL import Image

import fitlens  # noqa: F401  (registers the ${fitlens.*} resolvers the configs use)

if TYPE_CHECKING:
    from fitlens.train import TrainResult

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
    "data.reject_root=null",
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


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    """A real, empty MLflow store (SQLite) for one test."""
    return f"sqlite:///{tmp_path}/mlruns/mlflow.db"


@pytest.fixture(autouse=True)
def _tests_track_into_a_temp_store(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow is the default logger; no test may write runs or versions into ./mlruns.

    conf/logger/mlflow.yaml takes MLFLOW_TRACKING_URI when set, in-process and in subprocesses.
    """
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)


@dataclass
class TrackedTraining:
    tracking_uri: str
    cfg: DictConfig
    result: TrainResult


@pytest.fixture(scope="session")
def tracked_run(tmp_path_factory: pytest.TempPathFactory) -> TrackedTraining:
    """One real tiny training run (2 epochs) tracked into its own store, shared by the tracking
    tests that only read it: training is the slow part."""
    from fitlens.train import run

    base = tmp_path_factory.mktemp("tracked")
    uri = f"sqlite:///{base}/mlruns/mlflow.db"
    images = make_images(base / "photos", config_classes())
    cfg = compose_config([*TINY, f"data.root={images}", "trainer.max_epochs=2",
                          f"logger.tracking_uri={uri}"], output_dir=base / "run")
    return TrackedTraining(tracking_uri=uri, cfg=cfg, result=run(cfg))
