"""A trained network as plain files that load without unpickling code.

A Lightning checkpoint needs the training code and optimizer state; the app and the export need
only the weights and enough config to rebuild the architecture. The bundle is:

- ``model_state.pt``: ``ExerciseNet.state_dict()`` (tensors only: ``torch.load(weights_only=True)``)
- ``model.yaml``: the resolved model config (backbone, network builder and its settings)
- ``contract.json``: the :class:`~fitlens.contract.InputSpec` plus the backbone name

A bundle is data, not code. Its files may come from a store anyone on the network can write to,
so ``model.yaml`` is checked before anything in it is imported or called: it may only name the
project's own builders (:data:`BUILDERS`), with plain values, and no interpolations.
:func:`bundle_digest` is what the run records when the version is logged, so a bundle changed
afterwards is refused at export.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
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
BUNDLE_FILES = (STATE_FILE, CONFIG_FILE, CONTRACT_FILE)

#: What ``model.yaml`` may instantiate, by place: the backbone, the pose model (pose networks),
#: and the network built on them (a partial, called with those and the output count).
BACKBONES = frozenset({"fitlens.models.backbones.resnet18", "fitlens.models.backbones.mobilenet_v2",
                       "fitlens.models.backbones.efficientnet_lite0"})
NETS = frozenset({"fitlens.models.classifier.ExerciseNet", "fitlens.models.fusion.PoseFusionNet"})
POSE_MODELS = frozenset({"fitlens.models.pose.load_blazepose"})
#: The training module the config describes; build_net never instantiates it.
TRAINING_MODULE = "fitlens.models.classifier.ExerciseClassifier"
BUILDERS = BACKBONES | NETS | POSE_MODELS


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


def _allowed_targets(path: tuple[str, ...]) -> frozenset[str]:
    """The builders a ``_target_`` at ``path`` (keys from the config's root) may name."""
    if path == ():
        return frozenset({TRAINING_MODULE})
    if path == ("backbone",):
        return BACKBONES
    if path == ("pose",):
        return POSE_MODELS
    if path == ("net",):
        return NETS
    return frozenset()


def check_model_config(model_cfg: DictConfig, source: str = "model config", *,
                       saved: bool = False) -> None:
    """Refuse a model config that would import or call anything but the project's builders.

    Hydra's ``instantiate`` imports and calls whatever ``_target_`` names (``torch.load``,
    ``os.system``, ...) with whatever arguments sit beside it, so every ``_target_`` is checked
    against its place (:func:`_allowed_targets`), and of Hydra's other keys only the network's
    ``_partial_: true`` (the project's own use) is accepted. ``saved``: the config was read from a
    bundle, which is written resolved, so an interpolation in it was put there by hand (resolving
    it could read the environment or call a registered resolver). Nothing is resolved or
    imported here.
    """
    def fail(path: tuple[str, ...], problem: str) -> CheckpointError:
        where = ".".join(path) or "<root>"
        return CheckpointError(
            f"{source}: {where}: {problem}; a model config may only build the project's own "
            f"networks ({', '.join(sorted(BUILDERS))}) from plain values, so it is refused "
            "before anything in it is imported or run")

    def walk(node: object, path: tuple[str, ...]) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                key = str(key)
                if key == "_target_":
                    allowed = _allowed_targets(path)
                    if value not in allowed:
                        raise fail((*path, key), f"{value!r} is not allowed here (allowed: "
                                                 f"{sorted(allowed) or 'no builder'})")
                elif key == "_partial_":
                    if path != ("net",) or value is not True:
                        raise fail((*path, key), f"{value!r} is not allowed here (only "
                                                 "net._partial_: true)")
                elif key.startswith("_") and key.endswith("_"):
                    raise fail((*path, key), "Hydra instantiation keys other than _target_ "
                                             "and net._partial_ are not allowed")
                else:
                    walk(value, (*path, key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, (*path, f"[{i}]"))
        elif saved and isinstance(node, str) and "${" in node:
            raise fail(path, f"the interpolation {node!r} is not allowed in a saved config")
        elif not (node is None or isinstance(node, str | int | float | bool)):
            raise fail(path, f"a {type(node).__name__} is not a plain value")

    container = OmegaConf.to_container(model_cfg, resolve=False)
    if not isinstance(container, Mapping):
        raise fail((), "expected a mapping")
    walk(container, ())
    backbone, net = container.get("backbone"), container.get("net")
    if not isinstance(backbone, Mapping) or "_target_" not in backbone:
        raise fail(("backbone",), "expected a section with a _target_")
    if net is not None and not (isinstance(net, Mapping) and "_target_" in net
                                and net.get("_partial_") is True):
        raise fail(("net",), "expected a section with a _target_ and _partial_: true")


def build_net(model_cfg: DictConfig, spec: InputSpec,
              source: str = "model config") -> tuple[nn.Module, InputSpec]:
    """Rebuild the architecture from a model config and the contract, with random weights (to be
    loaded); the returned spec carries the backbone's mean/std. The config is checked first
    (:func:`check_model_config`); ``source`` names it in errors."""
    check_model_config(model_cfg, source)
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


def bundle_digest(folder: str | Path) -> str:
    """SHA-256 over the bundle's files (their names and contents): what a version's run records
    when it is logged, and what the export checks."""
    folder = Path(folder)
    manifest = "".join(f"{hashlib.sha256((folder / name).read_bytes()).hexdigest()}  {name}\n"
                       for name in BUNDLE_FILES)
    return hashlib.sha256(manifest.encode("utf-8")).hexdigest()


def load_bundle(folder: str | Path) -> tuple[nn.Module, InputSpec, DictConfig]:
    """Rebuild the trained network from a bundle folder, in eval mode."""
    folder = Path(folder)
    for name in BUNDLE_FILES:
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder}: model bundle is missing {name}")
    source = str(folder / CONFIG_FILE)
    try:
        model_cfg = OmegaConf.load(folder / CONFIG_FILE)
    except Exception as exc:  # YAML and OmegaConf raise many kinds for a damaged file
        raise CheckpointError(f"{source}: not a readable model config ({exc})") from exc
    if not isinstance(model_cfg, DictConfig):
        raise CheckpointError(f"{source}: expected a mapping, got a list")
    check_model_config(model_cfg, source, saved=True)
    try:
        contract = InputSpec.from_dict(json.loads((folder / CONTRACT_FILE).read_text("utf-8")))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{folder / CONTRACT_FILE}: not a valid contract ({exc})") from exc
    net, spec = build_net(model_cfg, contract, source)
    state = safe_load(folder / STATE_FILE)
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{folder / STATE_FILE}: weights do not fit the architecture in "
                              f"{CONFIG_FILE}: {exc}") from exc
    return net.eval(), spec, model_cfg
