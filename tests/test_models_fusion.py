"""The pose fusion network: mirror-invariant pose features, the person box and crop, the
no-person fallback, the converged head, and one exported ONNX graph that computes the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from sklearn.linear_model import LogisticRegression

from fitlens.contract import Resize
from fitlens.data.datamodule import spec_of
from fitlens.data.images import fit_to_input, load_rgb, preprocess, to_chw_float
from fitlens.data.splits import Sample
from fitlens.export.onnx import export_onnx
from fitlens.export.quantize import quantize_int8
from fitlens.models import backbones
from fitlens.models.checkpoint import build_net
from fitlens.models.fusion import BlockStandardize, PoseFusionNet
from fitlens.models.keypoints import NUM_POSE_FEATURES, mirror, person_box, pose_features
from fitlens.models.pose import NUM_LANDMARKS, load_blazepose
from fitlens.train import run
from tests.conftest import ROOT

PHOTOS = ROOT / "data" / "exercises"
SQUAT = PHOTOS / "squats" / "fedb__Barbell_Full_Squat__0.jpg"
PULLUP = PHOTOS / "pullup" / "fedb__Band_Assisted_Pull-Up__0.jpg"
SIZE = 256


@pytest.fixture(scope="module")
def blazepose():
    return load_blazepose()


@pytest.fixture(scope="module")
def fusion(blazepose) -> PoseFusionNet:
    torch.manual_seed(0)
    backbone = backbones.mobilenet_v2(pretrained=False)
    return PoseFusionNet(backbone, num_outputs=7, pose=blazepose, crop_size=64).eval()


def _skeleton(rng: np.random.Generator, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Random but body-like landmarks: scattered around a torso, all sorts of visibility."""
    xy = rng.normal(0, 40, (n, NUM_LANDMARKS, 2)) + np.array([180.0, 200.0])
    xy[:, 11:13, 1] -= 80  # shoulders above hips
    return (torch.tensor(xy, dtype=torch.float32),
            torch.tensor(rng.random((n, NUM_LANDMARKS)), dtype=torch.float32))


def test_pose_features_do_not_change_when_the_photo_is_mirrored() -> None:
    xy, visibility = _skeleton(np.random.default_rng(0))
    features = pose_features(xy, visibility)
    assert features.shape == (4, NUM_POSE_FEATURES)
    flipped = pose_features(*mirror(xy, visibility, width=SIZE))
    torch.testing.assert_close(flipped, features, atol=1e-5, rtol=1e-5)


def test_pose_features_do_change_with_the_pose() -> None:
    xy, visibility = _skeleton(np.random.default_rng(1), n=1)
    bent = xy.clone()
    bent[0, 25, 1] -= 60  # left knee up
    assert not torch.allclose(pose_features(bent, visibility), pose_features(xy, visibility))


def test_pose_features_do_not_depend_on_size_or_place() -> None:
    xy, visibility = _skeleton(np.random.default_rng(2))
    moved = xy * 0.5 + torch.tensor([30.0, -10.0])
    torch.testing.assert_close(pose_features(moved, visibility), pose_features(xy, visibility),
                               atol=1e-4, rtol=1e-4)


def test_person_box_is_a_square_around_the_visible_landmarks() -> None:
    xy = torch.zeros(1, NUM_LANDMARKS, 2)
    xy[0, :, 0] = torch.linspace(100, 140, NUM_LANDMARKS)   # 40 wide
    xy[0, :, 1] = torch.linspace(50, 150, NUM_LANDMARKS)    # 100 tall
    visibility = torch.ones(1, NUM_LANDMARKS)
    visibility[0, 0] = 0.0  # an invisible landmark far away must not count
    xy[0, 0] = torch.tensor([300.0, 300.0])
    box = person_box(xy, visibility, torch.tensor([True]), SIZE, margin=0.1)
    x0, y0, x1, y1 = box[0].tolist()
    assert x1 - x0 == pytest.approx(y1 - y0)  # square: the CNN sees undistorted proportions
    top = float(xy[0, 1, 1])  # landmark 0 is invisible: the box starts at landmark 1
    assert x1 - x0 == pytest.approx((150 - top) * 1.2, abs=1e-3)  # the long side plus margins
    assert (x0 + x1) / 2 == pytest.approx(float(xy[0, 1:, 0].min() + 140) / 2, abs=1e-3)
    assert (y0 + y1) / 2 == pytest.approx((top + 150) / 2, abs=1e-3)
    whole = person_box(xy, visibility, torch.tensor([False]), SIZE, margin=0.1)
    assert whole[0].tolist() == [0.0, 0.0, SIZE, SIZE]
    unseen = person_box(xy, torch.zeros(1, NUM_LANDMARKS), torch.tensor([True]), SIZE, 0.1)
    assert unseen[0].tolist() == [0.0, 0.0, SIZE, SIZE]


def _pasted(photo: Path, box: tuple[int, int, int, int], size: int = 384) -> torch.Tensor:
    """``photo`` scaled into ``box`` of a grey square canvas: a person at a known place."""
    canvas = Image.new("RGB", (size, size), (128, 128, 128))
    x0, y0, x1, y1 = box
    canvas.paste(load_rgb(photo).resize((x1 - x0, y1 - y0)), (x0, y0))
    return torch.from_numpy(to_chw_float(canvas))[None]


def test_the_crop_box_finds_the_person_where_it_was_put(fusion: PoseFusionNet) -> None:
    # The landmark model is not a detector: the person must fill a fair part of the frame, as
    # in a photo taken to be classified (a small figure in a corner reads as "no person").
    placed = (96, 120, 384, 312)  # the photo's 3:2 aspect, in the lower right
    with torch.no_grad():
        _, keypoints, box = fusion.explain(_pasted(SQUAT, placed))
    visible = keypoints[0, :, 2] >= 0.5
    assert visible.sum() >= 20
    x0, y0, x1, y1 = box[0].tolist()
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    assert placed[0] <= cx <= placed[2] and placed[1] <= cy <= placed[3]
    # Landmarks found in the pasted photo, and the box holds them all.
    kx, ky = keypoints[0, visible, 0], keypoints[0, visible, 1]
    assert kx.min() >= placed[0] - 10 and kx.max() <= placed[2] + 10
    assert x0 <= kx.min() and kx.max() <= x1 and y0 <= ky.min() and ky.max() <= y1
    assert x1 - x0 < 384 * 0.8  # a crop, not the whole image


def test_no_person_means_whole_image_zero_pose_features_and_the_flag(
        fusion: PoseFusionNet) -> None:
    blank = torch.full((1, 3, 384, 384), 0.5)
    with torch.no_grad():
        features = fusion.embed(blank)
        _, _, box = fusion.explain(blank)
    assert box[0].tolist() == [0.0, 0.0, 384.0, 384.0]
    cnn = fusion.head[-1].in_features - NUM_POSE_FEATURES - 1
    assert torch.all(features[0, cnn:cnn + NUM_POSE_FEATURES] == 0)
    assert features[0, -1] == 1.0  # the no-person flag


def test_block_standardize_gives_each_block_the_same_weight() -> None:
    layer = BlockStandardize((100, 20))
    features = torch.randn(500, 120) * 7 + 3
    layer.fit(features)
    out = layer(features)
    norms = out[:, :100].pow(2).sum(1).mean(), out[:, 100:].pow(2).sum(1).mean()
    assert norms[0] == pytest.approx(norms[1], rel=1e-3)
    # A constant feature is only centred; a nearly constant one is not blown up.
    features[:, 100] = 1.0
    features[:, 101] = 1.0 + torch.randn(500) * 1e-6
    layer.fit(features)
    floor = 0.05 * features[:, 100:].std(0, unbiased=False).median()
    assert layer.std[100] == 1.0 and layer.std[101] == pytest.approx(float(floor))
    assert layer(features)[:, 100:102].abs().max() < 1e-3


def test_the_fusion_graph_exports_and_matches_pytorch(fusion: PoseFusionNet,
                                                      tmp_path: Path) -> None:
    resize = Resize(384, "letterbox")
    photos = [Sample(p, 0, "x", p.name) for p in (SQUAT, PULLUP)]
    path = tmp_path / "fusion.onnx"
    parity = export_onnx(fusion, path, resize=resize, opset=18, parity_samples=photos,
                         tolerance=1e-4)
    assert parity.ok
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits", "probabilities", "keypoints",
                                                       "person_box"]
    # A photo of another aspect ratio (portrait) after the contract's preprocessing.
    portrait = tmp_path / "portrait.png"
    load_rgb(PULLUP).rotate(90, expand=True).save(portrait)
    x = preprocess(portrait, resize)
    _, probs, keypoints, box = session.run(None, {"input": x})
    with torch.no_grad():
        logits, kp_torch, box_torch = fusion.explain(torch.from_numpy(x))
    np.testing.assert_allclose(probs, logits.softmax(1).numpy(), atol=1e-4)
    np.testing.assert_allclose(keypoints, kp_torch.numpy(), atol=1e-2)
    np.testing.assert_allclose(box, box_torch.numpy(), atol=1e-2)

    # int8 quantises the CNN only: the pose model's landmarks stay exactly fp32's.
    int8 = quantize_int8(path, tmp_path / "fusion_int8.onnx", [SQUAT, PULLUP], resize)
    quantized = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    _, int8_probs, int8_keypoints, int8_box = quantized.run(None, {"input": x})
    np.testing.assert_array_equal(int8_keypoints, keypoints)
    np.testing.assert_array_equal(int8_box, box)
    graph = onnx.load(str(int8))
    assert any(n.op_type == "QuantizeLinear" for n in graph.graph.node)
    assert abs(int8_probs.sum() - 1) < 0.02


def test_lbfgs_head_is_the_converged_logistic_regression(tiny_cfg) -> None:
    cfg = tiny_cfg("model.head_solver=lbfgs", "model.freeze_backbone_epochs=1",
                   "model.label_smoothing=0", "model.class_weighting=false",
                   "data.augment=[]", "logger=csv", "test=false")
    run(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]
    net, _ = build_net(cfg.model, spec_of(cfg.data))
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items()
                         if k.startswith("net.")})
    datamodule = instantiate(cfg.data, split_csv=None, _convert_="all")
    datamodule.setup()
    train = datamodule.dataset("train")
    x = torch.stack([train[i][0] for i in range(len(train))])
    y = np.array([train[i][1] for i in range(len(train))])
    with torch.no_grad():
        features = net.eval().embed(x).numpy()
        ours = net.head(torch.from_numpy(features)).softmax(1).numpy()
    reference = LogisticRegression(C=1.0, max_iter=5000, tol=1e-8).fit(features, y)
    np.testing.assert_allclose(ours, reference.predict_proba(features), atol=5e-3)


def test_lbfgs_needs_a_frozen_backbone_for_every_epoch(tiny_cfg) -> None:
    cfg = tiny_cfg("model.head_solver=lbfgs", "model.freeze_backbone_epochs=0", "logger=csv")
    with pytest.raises(ValueError, match="model.head_solver=lbfgs fits the head on frozen"):
        run(cfg)


def test_a_letterboxed_photo_keeps_its_proportions() -> None:
    img = fit_to_input(load_rgb(SQUAT), Resize(384, "letterbox"))
    arr = np.asarray(img)
    assert arr.shape == (384, 384, 3)
    rows = np.flatnonzero(arr.any(axis=(1, 2)))
    width, height = load_rgb(SQUAT).size
    assert rows[-1] - rows[0] + 1 == pytest.approx(384 * height / width, abs=1)
    left, top, w, h = Resize(384, "letterbox").placement(width, height)
    assert (w, top) == (384, (384 - h) // 2)
    assert arr[0].max() == 0 and rows[0] == top  # black letterbox bands
