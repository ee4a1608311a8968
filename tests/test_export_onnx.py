"""ONNX export: one self-contained file the app can load, and a parity check that catches drift.

``tiny_model`` / ``tiny_onnx`` (a small network trained on generated images, and its export) are
built once per test session and shared with the other export tests.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from fitlens.contract import InputSpec
from fitlens.data.datamodule import spec_of
from fitlens.data.images import preprocess
from fitlens.data.splits import Sample
from fitlens.export import onnx as onnx_export
from fitlens.export.fixtures import FIXTURES
from fitlens.export.metadata import APP_MAX_IR_VERSION, APP_MAX_OPSET
from fitlens.export.onnx import (
    ExportError,
    ParityError,
    check_parity,
    export_onnx,
    file_opset,
)
from fitlens.models.checkpoint import build_net, load_bundle, save_bundle
from tests.conftest import ROOT, TINY, compose_config, config_classes, make_images

FIXTURE_DIR = ROOT / "flutter_app" / "test" / "fixtures"
#: ResNet-18 rather than TINY's MobileNetV2: it learns the generated classes reliably from
#: scratch in 20 steps, and the exporter handles it three times faster.
TINY_RESNET = ["model=resnet18" if o.startswith("model=") else o for o in TINY]


@dataclass(frozen=True)
class TinyModel:
    bundle: Path
    split_csv: Path
    spec: InputSpec
    samples: dict[str, list[Sample]]


_BUILT: dict[tuple[str, Path], object] = {}


def _train(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """A few full-batch steps; then BatchNorm statistics from the training images, so eval mode
    computes what was trained."""
    optimizer = torch.optim.Adam(net.parameters(), 3e-3)
    net.train()
    for _ in range(20):
        loss = nn.functional.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        net(x)
    net.eval()


def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """ResNet-18 at 32x32 trained on the generated colour classes, saved as a bundle, with the
    split the real DataModule makes (24 train, 12 val, 12 test images)."""
    key = ("model", tmp_path_factory.getbasetemp())
    if key not in _BUILT:
        base = tmp_path_factory.mktemp("tiny_model")
        images = make_images(base / "photos", config_classes())
        cfg = compose_config([*TINY_RESNET, f"data.root={images}", "model.net.dropout=0"],
                             output_dir=base / "run")
        datamodule = instantiate(cfg.data, split_csv=str(base / "split.csv"), _convert_="all")
        datamodule.setup()
        train = datamodule.dataset("train")
        x = torch.stack([train[i][0] for i in range(len(train))])
        y = torch.tensor([train[i][1] for i in range(len(train))])
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # deterministic, and no thread oversubscription on 2 cores
        try:
            torch.manual_seed(0)
            net, spec = build_net(cfg.model, spec_of(cfg.data))
            _train(net, x, y)
        finally:
            torch.set_num_threads(threads)
        bundle = save_bundle(net.state_dict(), cfg.model, spec, "resnet18", base / "bundle")
        _BUILT[key] = TinyModel(bundle, base / "split.csv", spec, dict(datamodule.samples))
    return _BUILT[key]  # type: ignore[return-value]


def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model exported by :func:`export_onnx` (parity-checked on its test split)."""
    key = ("onnx", tmp_path_factory.getbasetemp())
    if key not in _BUILT:
        model = tiny_model(tmp_path_factory)
        net, spec, _ = load_bundle(model.bundle)
        path = tmp_path_factory.mktemp("tiny_onnx") / "fitness_resnet18.onnx"
        export_onnx(net, path, resize=spec.resize, opset=18, parity_samples=model.samples["test"],
                    tolerance=1e-4)
        _BUILT[key] = path
    return _BUILT[key]  # type: ignore[return-value]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    return tiny_model(tmp_path_factory)


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_onnx(tmp_path_factory)


def fixture_photos() -> list[Sample]:
    """The app's golden fixture images: real photos and odd modes, always in the repository."""
    return [Sample(FIXTURE_DIR / name, 0, "any", name) for name in FIXTURES]


def test_real_size_export_is_one_file_the_app_can_load(tmp_path: Path) -> None:
    # The default architecture at the app's size (and the exporter's fastest: a few seconds).
    cfg = compose_config(["model=resnet18", "model.backbone.pretrained=false"])
    net, spec = build_net(cfg.model, spec_of(cfg.data))
    out = tmp_path / "assets" / "fitness_resnet18.onnx"

    parity = export_onnx(net, out, resize=spec.resize, opset=18, parity_samples=fixture_photos(),
                         tolerance=1e-4)

    assert parity.ok and parity.images == len(FIXTURES)
    assert [p.name for p in out.parent.iterdir()] == [out.name], "no side file, no temp file"
    # Alone in another folder and from bytes, as the app loads its asset.
    alone = tmp_path / "elsewhere" / out.name
    alone.parent.mkdir()
    shutil.copy(out, alone)
    onnx.checker.check_model(str(alone), full_check=True)
    model = onnx.load(str(alone))
    assert model.ir_version <= APP_MAX_IR_VERSION and file_opset(alone) == 18 <= APP_MAX_OPSET
    session = ort.InferenceSession(alone.read_bytes(), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "input" and inp.type == "tensor(float)"
    assert isinstance(inp.shape[0], str) and inp.shape[1:] == [3, 224, 224]
    assert [o.name for o in session.get_outputs()] == ["logits", "probabilities"]
    for batch in (1, 3):
        x = np.random.default_rng(batch).random((batch, 3, 224, 224), dtype=np.float32)
        logits, probs = session.run(None, {"input": x})
        assert logits.shape == probs.shape == (batch, spec.num_outputs)
        softmax = np.exp(logits - logits.max(1, keepdims=True))
        np.testing.assert_allclose(probs, softmax / softmax.sum(1, keepdims=True), atol=1e-6)


def test_parity_holds_for_the_app_preprocessing(tiny: TinyModel, tiny_file: Path) -> None:
    net, spec, _ = load_bundle(tiny.bundle)
    result = check_parity(tiny_file, net, tiny.samples["test"], spec.resize, tolerance=1e-4)
    assert result.ok and result.max_abs_diff <= 1e-4 and not result.argmax_mismatches


def _bgr(path: Path, size: int) -> np.ndarray:
    return np.ascontiguousarray(preprocess(path, size)[:, ::-1])


def _normalised_twice(path: Path, size: int) -> np.ndarray:
    # The seed's bug class: the app normalises, and so does the graph.
    mean = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
    std = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)
    return (preprocess(path, size) - mean) / std


@pytest.mark.parametrize("app_preprocess", [_bgr, _normalised_twice])
def test_parity_catches_a_preprocessing_mismatch(tiny: TinyModel, tiny_file: Path,
                                                 app_preprocess) -> None:
    net, spec, _ = load_bundle(tiny.bundle)
    with pytest.raises(ParityError, match=r"max \|dprobability\| = .*parity_tol=0.0001") as info:
        check_parity(tiny_file, net, tiny.samples["test"], spec.resize, tolerance=1e-4,
                     app_preprocess=app_preprocess)
    assert info.value.result.max_abs_diff > 1e-4
    assert str(tiny_file) in str(info.value)


def test_a_graph_that_disagrees_with_the_network_is_not_written(
        tiny: TinyModel, tiny_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The exporter returns the trained graph, but the network it is compared with is untrained:
    # parity must fail, and the file already in place must survive untouched.
    monkeypatch.setattr(onnx_export, "_to_onnx", lambda *_: onnx.load(str(tiny_file)))
    untrained = compose_config(TINY_RESNET)
    other, spec = build_net(untrained.model, spec_of(untrained.data))
    dest = tmp_path / "fitness_resnet18.onnx"
    dest.write_bytes(b"previous export")
    with pytest.raises(ParityError):
        export_onnx(other, dest, resize=spec.resize, opset=18,
                    parity_samples=tiny.samples["test"], tolerance=1e-4)
    assert dest.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == [dest.name]


def test_a_model_too_new_for_the_app_is_refused(tiny: TinyModel, tiny_file: Path,
                                                tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def newer(*_: object) -> onnx.ModelProto:
        model = onnx.load(str(tiny_file))
        model.ir_version = APP_MAX_IR_VERSION + 1
        return model

    monkeypatch.setattr(onnx_export, "_to_onnx", newer)
    net, spec, _ = load_bundle(tiny.bundle)
    with pytest.raises(ExportError, match=f"IR version {APP_MAX_IR_VERSION + 1}"):
        export_onnx(net, tmp_path / "m.onnx", resize=spec.resize, opset=18,
                    parity_samples=tiny.samples["test"], tolerance=1e-4)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="export.opset=20"):
        export_onnx(net, tmp_path / "m.onnx", resize=spec.resize, opset=20,
                    parity_samples=tiny.samples["test"], tolerance=1e-4)
