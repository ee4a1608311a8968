"""The training wiring users run: real config, real Trainer, tiny data."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from fitlens.data.datamodule import spec_of
from fitlens.models import backbones
from fitlens.models.classifier import ExerciseNet
from fitlens.train import run
from tests.conftest import CONF, ROOT, TINY, compose_config

GROUP_OPTIONS = {
    group: sorted(p.stem for p in (CONF / group).glob("*.yaml"))
    for group in ("model", "optimizer", "scheduler", "trainer", "callbacks", "logger",
                  "experiment", "hparams_search")
}


@pytest.mark.parametrize(("group", "option"), [
    (g, o) for g, options in GROUP_OPTIONS.items() for o in options])
def test_every_config_option_composes(group: str, option: str, tmp_path: Path) -> None:
    cfg = compose_config([f"{group}={option}"], output_dir=tmp_path)
    assert cfg.data.classes and cfg.model.backbone._target_


@pytest.mark.parametrize("model", GROUP_OPTIONS["model"])
@pytest.mark.parametrize("optimizer", GROUP_OPTIONS["optimizer"])
def test_model_and_optimizer_instantiate(model: str, optimizer: str, tmp_path: Path) -> None:
    cfg = compose_config([f"model={model}", f"optimizer={optimizer}",
                          "model.backbone.pretrained=false"], output_dir=tmp_path)
    spec = spec_of(cfg.data)
    module = instantiate(cfg.model, optimizer=cfg.optimizer, scheduler=cfg.scheduler,
                         _partial_=True)(spec=spec)
    assert module.spec.classes == tuple(cfg.data.classes)
    assert module.spec.output_classes == (*cfg.data.classes, "none")
    opt = module.configure_optimizers()["optimizer"]
    assert type(opt).__name__ == cfg.optimizer._target_.rsplit(".", 1)[1]


def test_trainer_and_callbacks_instantiate(tmp_path: Path) -> None:
    cfg = compose_config(["scheduler=none"], output_dir=tmp_path)
    assert cfg.scheduler is None
    trainer = instantiate(cfg.trainer, callbacks=[instantiate(c) for c in cfg.callbacks.values()])
    assert trainer.max_epochs == cfg.trainer.max_epochs


def test_fit_and_test_on_tiny_images(tiny_cfg) -> None:
    cfg = tiny_cfg("trainer.max_epochs=2", "model.freeze_backbone_epochs=1")
    result = run(cfg)
    assert result.best_checkpoint and Path(result.best_checkpoint).is_file()
    assert set(result.test_metrics) >= {"test/acc", "test/f1_macro", "test/loss"}
    assert f"test/acc_{cfg.data.classes[0]}" in result.test_metrics
    assert result.metric == result.val_metrics["best_val/f1_macro"]
    rows = list(csv.DictReader((Path(cfg.paths.output_dir) / "split.csv").open()))
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    by_group: dict[str, set[str]] = {}
    for r in rows:
        by_group.setdefault(r["group"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_group.values())


def test_linear_probe_preset_trains_only_the_head(image_root: Path, tmp_path: Path) -> None:
    """experiment=linear_probe: every weight and BatchNorm statistic of the backbone stays."""
    start = backbones.mobilenet_v2(pretrained=False).features.state_dict()
    weights = tmp_path / "start.pt"
    torch.save(start, weights)
    overrides = [o for o in TINY if not o.startswith("model.freeze_backbone_epochs")]
    cfg = compose_config([*overrides, f"data.root={image_root}", "experiment=linear_probe",
                          "trainer.max_epochs=2", f"model.backbone.weights_path={weights}",
                          "logger=csv"], output_dir=tmp_path / "run")
    assert cfg.model.freeze_backbone_epochs == 2
    result = run(cfg)
    last = Path(result.best_checkpoint).with_name("last.ckpt")
    trained = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]
    for key, value in start.items():
        assert torch.equal(trained[f"net.features.{key}"], value), key
    head = ExerciseNet(backbones.mobilenet_v2(pretrained=False), len(cfg.data.classes)).head
    assert not torch.equal(trained["net.head.1.weight"], head[1].weight)


@pytest.mark.parametrize(("override", "message"), [
    ("optimizer.lr=-0.1", "optimizer.lr=-0.1: expected > 0"),
    ("data.batch_size=0", "data.batch_size=0: expected an integer >= 1"),
])
def test_invalid_values_name_the_setting(tiny_cfg, override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run(tiny_cfg(override))


def _train(args: list[str], tmp_path: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "FITLENS_ROOT": str(tmp_path), "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=timeout)


def test_override_typo_is_a_clear_error(tmp_path: Path) -> None:
    out = _train(["optimzer.lr=1e-4"], tmp_path)
    assert out.returncode != 0
    assert "Could not override 'optimzer.lr'" in out.stderr


def test_unknown_model_lists_the_options(tmp_path: Path) -> None:
    out = _train(["model=resnet19"], tmp_path)
    assert out.returncode != 0
    assert "Could not find 'model/resnet19'" in out.stderr and "mobilenet_v2" in out.stderr


def test_help_lists_the_groups(tmp_path: Path) -> None:
    out = _train(["--help"], tmp_path)
    assert out.returncode == 0
    for group in ("model:", "optimizer:", "scheduler:", "trainer:", "experiment:"):
        assert group in out.stdout


@pytest.mark.slow
def test_multirun_sweep(tmp_path: Path, image_root: Path) -> None:
    out = _train(["-m", *TINY, f"data.root={image_root}", "optimizer.lr=1e-3,1e-4"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = sorted((tmp_path / "outputs" / "multiruns").glob("*/[0-9]*"))
    assert [j.name for j in jobs] == ["0", "1"]
    assert all((j / "split.csv").is_file() for j in jobs)


@pytest.mark.slow
def test_optuna_search(tmp_path: Path, image_root: Path) -> None:
    out = _train(["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2",
                  "hydra.sweeper.sampler.n_startup_trials=1", *TINY,
                  f"data.root={image_root}"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    results = list((tmp_path / "outputs" / "multiruns").glob("*/optimization_results.yaml"))
    assert results and "best_value" in results[0].read_text()


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(tmp_path: Path, image_root: Path) -> None:
    out = _train([*TINY, f"data.root={image_root}", "trainer=ddp", "trainer.accelerator=cpu",
                  "trainer.devices=2"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "MEMBER: 2/2" in out.stdout + out.stderr
