"""The reject class: photos of other exercises as one more output, balanced against the known
ones, scored without touching the known-class scores, and answered as "not one I know"."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hydra.utils import instantiate
from onnx import TensorProto, helper
from PIL import Image

from fitlens.contract import Answer, InputSpec, decide
from fitlens.data.datamodule import RejectBalancedSampler
from fitlens.export.metadata import build_metadata, sha256_file, write_metadata
from fitlens.metrics import scores
from fitlens.predict import Predictor, format_text, to_json
from tests.conftest import make_images

CLASSES = ("red", "green", "blue")


# --- metrics on data with known answers -------------------------------------------------------


def test_known_class_scores_ignore_other_photos_and_the_reject_output() -> None:
    # Three known photos (two right), two others. The first known photo's arg-max over ALL
    # outputs is the reject output, but its best *known* class is right: known scores count it.
    probs = np.array([[0.3, 0.1, 0.1, 0.5],    # red photo, "none" wins overall
                      [0.1, 0.8, 0.05, 0.05],  # green photo, right
                      [0.6, 0.1, 0.2, 0.1],    # blue photo, wrong (red)
                      [0.1, 0.1, 0.1, 0.7],    # other, rejected
                      [0.7, 0.1, 0.1, 0.1]])   # other, taken for red
    labels = np.array([0, 1, 2, 3, 3])
    s = scores(probs, labels, CLASSES)
    assert s["acc"] == pytest.approx(2 / 3)
    assert s["acc_red"] == 1.0 and s["acc_green"] == 1.0 and s["acc_blue"] == 0.0
    # Known predictions: red, green, red; truth red, green, blue -> F1 red 2/3, green 1, blue 0.
    assert s["f1_macro"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    # Arg-max rule at threshold 0: photos 2, 3 and 5 are answered; 1 of the 2 others.
    assert s["known_accepted"] == pytest.approx(2 / 3)
    assert s["other_accepted"] == 0.5
    assert s["accepted_precision"] == pytest.approx(1 / 2)  # of the known photos answered
    # p(none) ranks the others 0.7, 0.1 above the known 0.5, 0.05, 0.1 in 4.5 of 6 pairs.
    assert s["reject_auroc"] == pytest.approx(4.5 / 6)
    strict = scores(probs, labels, CLASSES, threshold=0.75)
    assert strict["known_accepted"] == pytest.approx(1 / 3) and strict["other_accepted"] == 0


def test_scores_without_other_photos_or_without_a_reject_output() -> None:
    probs = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1]])
    s = scores(probs, np.array([0, 1]), CLASSES)
    assert s["f1_macro"] == 1.0 and "reject_auroc" not in s and "other_accepted" not in s
    assert "acc_blue" not in s  # no blue photo: no score, rather than a 0.0
    # No reject output: the unknown score is 1 - the best known probability.
    s = scores(np.array([[0.9, 0.05, 0.05], [0.4, 0.3, 0.3]]), np.array([0, 3]), CLASSES)
    assert s["reject_auroc"] == 1.0


def test_the_rule_reads_the_reject_output_first() -> None:
    assert decide([0.2, 0.1, 0.1, 0.6], 0.5, 3).answer is Answer.UNKNOWN
    assert decide([0.7, 0.1, 0.1, 0.1], 0.5, 3).answer is Answer.EXERCISE
    assert decide([0.4, 0.3, 0.0, 0.3], 0.5, 3).answer is Answer.NOT_SURE
    # Ties go to the lower index: a known class tied with "none" is not rejected.
    assert decide([0.5, 0.0, 0.0, 0.5], 0.5, 3).answer is Answer.EXERCISE


# --- data: folder, split, balance -------------------------------------------------------------


@pytest.fixture
def reject_data(tmp_path: Path, image_root: Path, tiny_cfg):
    # The third colour of make_images: photos that are not copies of a known class's.
    other = make_images(tmp_path / "other_root", ["unused", "unused_too", "any"], variants=15)
    return tiny_cfg(f"data.reject_root={other / 'any'}", "data.reject_ratio=0.5")


def test_reject_photos_are_split_by_group_and_balanced(reject_data) -> None:
    datamodule = instantiate(reject_data.data, _convert_="all")
    datamodule.setup()
    assert datamodule.spec.output_classes[-1] == "none"
    reject = datamodule.spec.num_classes
    by_split = {k: [s for s in v if s.label == reject] for k, v in datamodule.samples.items()}
    assert sum(len(v) for v in by_split.values()) == 30 and all(by_split.values())
    groups = {k: {s.group for s in v} for k, v in by_split.items()}
    assert not (groups["train"] & groups["val"]) and not (groups["train"] & groups["test"])
    known_train = sum(s.label < reject for s in datamodule.samples["train"])
    counts = datamodule.class_counts("train")
    assert int(counts[reject]) == round(known_train * 0.5)  # what one epoch draws
    rows = Path(reject_data.data.split_csv).read_text().splitlines()
    assert sum(",none," in r for r in rows) == 30


def test_each_epoch_draws_other_reject_photos_reproducibly() -> None:
    sampler = RejectBalancedSampler(known=range(10), reject=range(100, 200), per_epoch=5, seed=1)
    first = list(sampler)
    assert len(first) == len(sampler) == 15 and set(range(10)) <= set(first)
    assert list(sampler) == first  # same epoch, same draw
    sampler.set_epoch(1)
    second = list(sampler)
    assert {i for i in second if i >= 100} != {i for i in first if i >= 100}


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_a_missing_or_empty_reject_folder_names_the_setting(tiny_cfg, tmp_path: Path,
                                                           make: str) -> None:
    folder = tmp_path / "other"
    if make == "empty":
        folder.mkdir()
        (folder / "notes.txt").write_text("no images here")
    cfg = tiny_cfg(f"data.reject_root={folder}")
    datamodule = instantiate(cfg.data, _convert_="all")
    with pytest.raises(FileNotFoundError, match=r"data.reject_root=.*data.reject_root=null"):
        datamodule.setup()


# --- predict: three answers -------------------------------------------------------------------


def reject_model(folder: Path, size: int = 16, threshold: float = 0.8) -> Path:
    """A hand-built model with a reject output: logits = 20 * (mean R, mean G, mean B, mean of
    the three + 0.1), so saturated colours are known, grey is "none", and a muddy colour wins a
    known class by a little (not sure)."""
    folder.mkdir(parents=True, exist_ok=True)
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input", "axes"], ["rgb"], keepdims=0),
         helper.make_node("ReduceMean", ["rgb", "one"], ["grey"], keepdims=1),
         helper.make_node("Add", ["grey", "offset"], ["none"]),
         helper.make_node("Concat", ["rgb", "none"], ["scores"], axis=1),
         helper.make_node("Mul", ["scores", "scale"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "reject",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3]),
         helper.make_tensor("one", TensorProto.INT64, [1], [1]),
         helper.make_tensor("offset", TensorProto.FLOAT, [], [0.1]),
         helper.make_tensor("scale", TensorProto.FLOAT, [], [20.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.checker.check_model(model, full_check=True)
    path = folder / "reject.onnx"
    onnx.save_model(model, str(path))
    spec = InputSpec(classes=CLASSES, size=size, resize_mode="letterbox", reject_class="none")
    write_metadata(build_metadata(spec, model_file=path.name, model_name="reject",
                                 sha256=sha256_file(path), opset=18, threshold=threshold,
                                 registered_model=None, version=None, run_id=None,
                                 metrics={}), folder / "model_meta.json")
    return folder


def test_predict_gives_the_three_answers(tmp_path: Path) -> None:
    predictor = Predictor(reject_model(tmp_path / "model"))
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, rgb in {"a_red.png": (255, 0, 0), "b_grey.png": (128, 128, 128),
                      "c_muddy.png": (140, 120, 60)}.items():
        Image.new("RGB", (20, 20), rgb).save(photos / name)  # square: no letterbox bands
    result = predictor.predict_paths([photos])
    answers = {p.path.name: p for p in result.predictions}
    assert answers["a_red.png"].answer is Answer.EXERCISE and answers["a_red.png"].label == "red"
    assert answers["b_grey.png"].answer is Answer.UNKNOWN
    assert answers["c_muddy.png"].answer is Answer.NOT_SURE
    assert [c for c, _ in answers["b_grey.png"].top] == list(CLASSES[:3])  # known only
    text = format_text(result)
    assert "b_grey.png: not one of the exercises I know" in text
    assert "c_muddy.png: not sure" in text and "a_red.png: red" in text
    as_json = to_json(result, predictor)
    assert as_json["reject_class"] == "none"
    assert {p["answer"] for p in as_json["predictions"]} == {"exercise", "not_sure",
                                                             "not_one_i_know"}
