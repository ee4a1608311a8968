"""A trained network as plain files that load without unpickling code.

A Lightning checkpoint needs the training code and optimizer state; the app and the export need
only the weights and enough config to rebuild the architecture. The bundle is:

- ``model_state.pt``: ``ExerciseNet.state_dict()`` (tensors only: ``torch.load(weights_only=True)``)
- ``model.yaml``: the resolved model config (backbone, network builder and its settings)
- ``contract.json``: the :class:`~fitlens.contract.InputSpec` plus the backbone name
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from fitlens.contract import InputSpec
from fitlens.models.classifier import ExerciseNet, build

STATE_FILE = "model_state.pt"
CONFIG_FILE = "model.yaml"
CONTRACT_FILE = "contract.json"


class CheckpointError(ValueError):
    """A checkpoint or bundle that cannot be used; the message names the file."""


def safe_load(path: str | Path) -> Any:
    """``torch.load`` that never executes pickled code and explains a bad file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file does not exist")
    # Damaged bytes fail in many ways inside the unpickler (UnpicklingError, EOFError,
    # BadZipFile, IndexError, KeyError, struct.error, ...): every one is the same bad file.
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path}: not a loadable PyTorch checkpoint (corrupt, truncated, or it holds objects "
            f"other than tensors, which are refused for safety): {exc}") from exc


def lightning_state_to_net_state(ckpt: dict[str, Any], source: str) -> dict[str, torch.Tensor]:
    """The ``net.*`` weights of an :class:`ExerciseClassifier` Lightning checkpoint."""
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: expected a Lightning checkpoint with a 'state_dict'")
    net = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    if not net:
        raise CheckpointError(f"{source}: no 'net.*' weights; not a Fitlens classifier checkpoint")
    return net


def build_net(model_cfg: DictConfig, spec: InputSpec) -> tuple[nn.Module, InputSpec]:
    """Rebuild the architecture from a model config and the contract, with random weights (to be
    loaded); the returned spec carries the backbone's mean/std."""
    backbone = instantiate(model_cfg.backbone, pretrained=False, weights_path=None)
    spec = dataclasses.replace(spec, mean=backbone.mean, std=backbone.std)
    if "net" in model_cfg:
        pose = instantiate(model_cfg.pose) if "pose" in model_cfg else None
        net = build(instantiate(model_cfg.net), backbone, spec.num_outputs, pose)
    else:  # bundles written before model.net existed: a CNN with model.dropout
        net = ExerciseNet(backbone, spec.num_outputs, float(model_cfg.get("dropout", 0.0)))
    return net, spec


def save_bundle(net_state: dict[str, torch.Tensor], model_cfg: DictConfig, spec: InputSpec,
                backbone_name: str, folder: str | Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(net_state, folder / STATE_FILE)
    OmegaConf.save(model_cfg, folder / CONFIG_FILE, resolve=True)
    contract = {**spec.to_dict(), "backbone": backbone_name}
    (folder / CONTRACT_FILE).write_text(json.dumps(contract, indent=2) + "\n", encoding="utf-8")
    return folder


def load_bundle(folder: str | Path) -> tuple[nn.Module, InputSpec, DictConfig]:
    """Rebuild the trained network from a bundle folder, in eval mode."""
    folder = Path(folder)
    for name in (STATE_FILE, CONFIG_FILE, CONTRACT_FILE):
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder}: model bundle is missing {name}")
    model_cfg = OmegaConf.load(folder / CONFIG_FILE)
    try:
        contract = InputSpec.from_dict(json.loads((folder / CONTRACT_FILE).read_text("utf-8")))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{folder / CONTRACT_FILE}: not a valid contract ({exc})") from exc
    net, spec = build_net(model_cfg, contract)
    state = safe_load(folder / STATE_FILE)
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{folder / STATE_FILE}: weights do not fit the architecture in "
                              f"{CONFIG_FILE}: {exc}") from exc
    return net.eval(), spec, model_cfg
