"""The contract between the Python side and the Flutter app, checked without a Flutter SDK.

Covers the model_meta.json schema (fitlens.export.metadata), the golden fixtures
(fitlens.export.fixtures), and the app's files: guidance, assets, localisations and the Dart
constants that must equal the Python ones. A real export in flutter_app/assets/models/ is
checked too when there is one.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml
from onnx import TensorProto, helper
from PIL import Image

from fitlens.contract import RESIZE_RULE, InputSpec
from fitlens.data.images import DEFAULT_MAX_PIXELS, load_rgb, preprocess
from fitlens.export.fixtures import (
    FIXTURES,
    SAMPLE_META_FILE,
    expected_probabilities,
    load_tensor,
    read_index,
    write_fixtures,
)
from fitlens.export.metadata import (
    APP_MAX_IR_VERSION,
    APP_MAX_OPSET,
    FIXED_INPUT,
    REQUIRED_INPUT_KEYS,
    REQUIRED_KEYS,
    REQUIRED_OUTPUT_KEYS,
    SCHEMA_VERSION,
    MetadataError,
    build_metadata,
    read_metadata,
    sha256_file,
    validate_metadata,
    write_metadata,
)

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "flutter_app"
FIXTURE_DIR = APP / "test" / "fixtures"
EXPORT_DIR = APP / "assets" / "models"
TRAIN_CONFIG = ROOT / "conf" / "train.yaml"


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _dart_sources() -> dict[Path, str]:
    return {p: p.read_text(encoding="utf-8") for p in sorted((APP / "lib").rglob("*.dart"))
            if "gen" not in p.relative_to(APP / "lib").parts}


def _dart(name: str) -> str:
    return (APP / "lib" / "src" / name).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def sample_classes() -> list[str]:
    return _read_json(FIXTURE_DIR / SAMPLE_META_FILE)["classes"]


def _good_meta(classes: list[str] | None = None) -> dict:
    spec = InputSpec(classes=tuple(classes or ["squats", "pullup", "cable_flyes"]))
    return build_metadata(spec, model_file="fitness_resnet18.onnx", model_name="resnet18",
                          sha256="ab" * 32, opset=18, threshold=0.6,
                          registered_model="exercise-classifier", version="3", run_id="r1",
                          metrics={"test_acc": 0.9}, variants=None)


# --- metadata.py ------------------------------------------------------------------------------


def test_build_metadata_writes_the_schema() -> None:
    meta = _good_meta()
    assert meta["schema_version"] == SCHEMA_VERSION
    assert meta["input"]["shape"] == [1, 3, 224, 224]
    assert meta["input"]["batch"] == "dynamic"
    assert {k: meta["input"][k] for k in FIXED_INPUT} == FIXED_INPUT
    assert meta["input"]["resize"] == RESIZE_RULE
    assert meta["outputs"] == {"logits": "logits", "probabilities": "probabilities"}
    assert meta["source"] == {"registered_model": "exercise-classifier", "version": "3",
                              "run_id": "r1"}
    assert meta["metrics"] == {"test_acc": 0.9}
    assert meta["variants"] == {}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["exported_at"])
    spec = validate_metadata(meta, "m.json")
    assert spec == InputSpec(classes=("squats", "pullup", "cable_flyes"))


def _drop(path: str):
    def mutate(meta: dict) -> None:
        *parents, key = path.split(".")
        target = meta
        for p in parents:
            target = target[p]
        del target[key]
    return mutate


def _set(path: str, value: object):
    def mutate(meta: dict) -> None:
        *parents, key = path.split(".")
        target = meta
        for p in parents:
            target = target[p]
        target[key] = value
    return mutate


BAD_FIELDS = [
    (_drop("threshold"), "missing threshold"),
    (_drop("input.size"), "missing input.size"),
    (_drop("outputs.probabilities"), "missing outputs.probabilities"),
    (_set("schema_version", 2), "schema_version=2; expected 1"),
    (_set("input", [1, 2]), 'input=[1,2]; expected an object'),
    (_set("model_file", "../model.onnx"), 'model_file="../model.onnx"'),
    (_set("sha256", "ABC"), 'sha256="ABC"'),
    (_set("classes", []), "classes=[]; expected a list of at least two unique"),
    (_set("classes", ["squats", "squats"]), 'classes=["squats","squats"]'),
    (_set("classes", ["squats", ""]), "non-empty class names"),
    (_set("threshold", 1.5), "threshold=1.5; expected a number in [0, 1]"),
    (_set("threshold", -0.1), "threshold=-0.1"),
    (_set("threshold", True), "threshold=true"),
    (_set("input.name", ""), 'input.name=""'),
    (_set("input.layout", "NHWC"), 'input.layout="NHWC"; expected "NCHW"'),
    (_set("input.color", "BGR"), 'input.color="BGR"; expected "RGB"'),
    (_set("input.scale", "0..255"), 'input.scale="0..255"; expected "0..1"'),
    (_set("input.normalization", "in_app"), 'input.normalization="in_app"'),
    (_set("input.resize", "center crop"), 'input.resize="center crop"'),
    (_set("input.size", 4), "input.size=4; expected an integer >= 8"),
    (_set("input.shape", [1, 3, 256, 256]), "input.shape=[1,3,256,256]; expected [1,3,224,224]"),
    (_set("input.shape", [1.0, 3, 224, 224]), "input.shape=[1.0,3,224,224]"),
    (_set("input.std", [0.2, 0.0, 0.2]), "input.std=[0.2,0.0,0.2]; expected three numbers > 0"),
    (_set("input.mean", [0.5]), "input.mean=[0.5]; expected three numbers"),
    (_set("outputs.logits", 3), "outputs.logits=3"),
]


@pytest.mark.parametrize(("mutate", "message"), BAD_FIELDS,
                         ids=[m for _, m in BAD_FIELDS])
def test_each_bad_field_is_named(mutate, message: str) -> None:
    meta = copy.deepcopy(_good_meta())
    mutate(meta)
    with pytest.raises(MetadataError) as err:
        validate_metadata(meta, "assets/models/model_meta.json")
    assert str(err.value).startswith("assets/models/model_meta.json: ")
    assert message in str(err.value)


def test_all_missing_keys_are_listed_and_non_objects_refused() -> None:
    with pytest.raises(ValueError, match="missing schema_version, model_file, sha256"):
        validate_metadata({"classes": ["a", "b"]}, "x")
    with pytest.raises(ValueError, match="top level is a JSON array; expected an object"):
        validate_metadata([], "x")  # type: ignore[arg-type]


def test_write_is_atomic_and_read_round_trips(tmp_path: Path) -> None:
    meta = _good_meta()
    path = write_metadata(meta, tmp_path / "models" / "model_meta.json")
    assert read_metadata(path) == meta
    assert [p.name for p in path.parent.iterdir()] == ["model_meta.json"]  # no temp file left
    assert path.stat().st_mode & 0o777 == 0o644


def test_read_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(MetadataError, match=r"model_meta.json: not found; expected"):
        read_metadata(tmp_path / "model_meta.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": 1,', encoding="utf-8")
    with pytest.raises(MetadataError, match=r"bad.json: not valid JSON \(.* line 1"):
        read_metadata(bad)
    bad.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(MetadataError, match="top level is a JSON array"):
        read_metadata(bad)


# --- fixtures ----------------------------------------------------------------------------------


def test_fixtures_match_index_and_current_python_preprocessing() -> None:
    index = read_index(FIXTURE_DIR)
    assert index["resize"] == RESIZE_RULE
    assert [e["file"] for e in index["fixtures"]] == list(FIXTURES)
    size = index["size"]
    for entry in index["fixtures"]:
        image = FIXTURE_DIR / entry["file"]
        assert image.stat().st_size < 30 * 1024, f"{image.name} is over 30 KB"
        assert sha256_file(image) == entry["sha256"], f"{image.name} changed since fixtures.json"
        assert entry["shape"] == [1, 3, size, size]
        assert sha256_file(FIXTURE_DIR / entry["tensor_file"]) == entry["tensor_sha256"]
        assert np.array_equal(load_tensor(FIXTURE_DIR, entry), preprocess(image, size)), (
            f"{entry['file']}: Python preprocessing no longer gives the committed tensor; if "
            "intended, run python scripts/make_fixtures.py --tensors-only and update "
            "flutter_app/lib/src/preprocess.dart to match")


def test_regenerating_fixtures_changes_no_committed_file(tmp_path: Path,
                                                         sample_classes: list[str]) -> None:
    for name in FIXTURES:
        shutil.copy(FIXTURE_DIR / name, tmp_path / name)
    write_fixtures(tmp_path, sample_classes)
    for path in sorted(tmp_path.iterdir()):
        assert path.read_bytes() == (FIXTURE_DIR / path.name).read_bytes(), (
            f"{path.name} differs from the committed fixture; run python scripts/make_fixtures.py")


@pytest.mark.parametrize("name", [n for n in FIXTURES if n.endswith(".png")])
def test_synthetic_fixture_images_are_reproducible(tmp_path: Path, name: str) -> None:
    FIXTURES[name][1](tmp_path / name)
    with Image.open(tmp_path / name) as new, Image.open(FIXTURE_DIR / name) as old:
        assert new.mode == old.mode and new.info.get("transparency") == old.info.get(
            "transparency")
        assert np.array_equal(np.asarray(new.convert("RGBA")), np.asarray(old.convert("RGBA")))


def test_fixture_kinds_are_what_the_notes_say() -> None:
    with Image.open(FIXTURE_DIR / "rotated_exif6.jpg") as raw:
        assert raw.getexif()[0x0112] == 6
        stored = raw.size
    assert load_rgb(FIXTURE_DIR / "rotated_exif6.jpg").size == stored[::-1]
    assert stored[1] > stored[0]  # stored portrait, shown landscape
    modes = {}
    for name in ("alpha.png", "palette.png", "palette_alpha.png", "gray.png"):
        with Image.open(FIXTURE_DIR / name) as img:
            modes[name] = (img.mode, "transparency" in img.info)
    assert modes == {"alpha.png": ("RGBA", False), "palette.png": ("P", False),
                     "palette_alpha.png": ("P", True), "gray.png": ("L", False)}
    with Image.open(FIXTURE_DIR / "photo.jpg") as photo:
        assert min(photo.size) > read_index(FIXTURE_DIR)["size"]  # the downscaling path


def test_sample_metadata_is_valid() -> None:
    validate_metadata(read_metadata(FIXTURE_DIR / SAMPLE_META_FILE), SAMPLE_META_FILE)


# --- expected_probabilities ----------------------------------------------------------------------


def _tiny_model(path: Path, *, size: str | int = "H", input_name: str = "input",
                output_name: str = "probabilities", classes: int = 6) -> Path:
    """conv -> global pool -> linear -> softmax, with the exporter's tensor names."""
    rng = np.random.default_rng(0)
    inits = [
        helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3],
                           rng.normal(0, 1, 108).astype(np.float32)),
        helper.make_tensor("fc", TensorProto.FLOAT, [4, classes],
                           rng.normal(0, 2, 4 * classes).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", [input_name, "w"], ["c"], strides=[4, 4]),
        helper.make_node("GlobalAveragePool", ["c"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["logits"]),
        helper.make_node("Softmax", ["logits"], [output_name], axis=1),
    ]
    width = size if isinstance(size, int) else "W"
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", 3, size, width])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes]),
         helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", classes])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = APP_MAX_IR_VERSION
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def test_expected_probabilities_on_the_fixtures(tmp_path: Path) -> None:
    model = _tiny_model(tmp_path / "tiny.onnx")
    result = expected_probabilities(model, FIXTURE_DIR)
    assert result["model_file"] == "tiny.onnx"
    assert result["model_sha256"] == sha256_file(model)
    assert (result["input"], result["output"]) == ("input", "probabilities")
    assert [f["file"] for f in result["fixtures"]] == list(FIXTURES)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    index = {e["file"]: e for e in read_index(FIXTURE_DIR)["fixtures"]}
    for fixture in result["fixtures"]:
        probs = np.array(fixture["probabilities"])
        assert probs.shape == (6,) and abs(probs.sum() - 1) < 1e-5
        (direct,) = session.run(["probabilities"],
                                {"input": load_tensor(FIXTURE_DIR, index[fixture["file"]])})
        assert np.allclose(probs, direct[0], atol=1e-7)
    json.dumps(result)  # the export writes it as JSON


def test_expected_probabilities_refuses_mismatched_models(tmp_path: Path) -> None:
    renamed = _tiny_model(tmp_path / "renamed.onnx", output_name="softmax")
    with pytest.raises(ValueError, match="expected an input 'input' and an output 'probabilit"):
        expected_probabilities(renamed, FIXTURE_DIR)
    small = _tiny_model(tmp_path / "small.onnx", size=32)
    with pytest.raises(ValueError, match="fixtures are 224x224"):
        expected_probabilities(small, FIXTURE_DIR)


# --- the app's files ---------------------------------------------------------------------------


def test_training_classes_match_the_app(sample_classes: list[str]) -> None:
    if not TRAIN_CONFIG.is_file():
        pytest.skip(f"{TRAIN_CONFIG} not found: cannot compare with the training classes")
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(TRAIN_CONFIG.parent), version_base="1.3"):
        classes = list(compose(config_name="train").data.classes)
    GlobalHydra.instance().clear()
    assert classes == sample_classes, "rerun python scripts/make_fixtures.py --tensors-only"
    assert validate_metadata(_good_meta(classes), "config").classes == tuple(classes)


def test_exercise_guidance_is_complete(sample_classes: list[str]) -> None:
    guidance = _read_json(APP / "assets" / "exercises.json")
    assert list(guidance) == sample_classes
    for label, languages in guidance.items():
        assert set(languages) == {"en", "nl"}, label
        for lang, info in languages.items():
            where = f"{label}.{lang}"
            assert set(info) == {"name", "muscles", "tips"}, where
            assert isinstance(info["name"], str) and info["name"].strip(), where
            assert info["muscles"] and all(isinstance(m, str) and m.strip()
                                           for m in info["muscles"]), where
            assert 3 <= len(info["tips"]) <= 5, where
            assert len(set(info["tips"])) == len(info["tips"]), where
            assert all(isinstance(t, str) and len(t) > 20 for t in info["tips"]), where
        assert len(languages["en"]["tips"]) == len(languages["nl"]["tips"]), label
        assert len(languages["en"]["muscles"]) == len(languages["nl"]["muscles"]), label


def test_pubspec_declares_dependencies_and_every_asset_the_code_loads() -> None:
    pubspec = yaml.safe_load((APP / "pubspec.yaml").read_text(encoding="utf-8"))
    deps, dev = pubspec["dependencies"], pubspec["dev_dependencies"]
    for name in ("onnxruntime", "image_picker", "image", "flutter_localizations", "intl"):
        assert name in deps, name
    assert {"flutter_test", "flutter_lints"} <= set(dev)
    flutter = pubspec["flutter"]
    assert flutter["generate"] is True
    declared = flutter["assets"]
    for asset in declared:
        assert (APP / asset).exists(), f"pubspec.yaml declares {asset}, which does not exist"
    loaded = {m for src in _dart_sources().values() for m in re.findall(r"'(assets/[^'$]*)'", src)}
    assert {"assets/exercises.json", "assets/models/model_meta.json"} <= loaded
    for asset in loaded:
        assert any(asset == d or (d.endswith("/") and asset.startswith(d)) for d in declared), (
            f"the Dart code loads {asset}, which pubspec.yaml does not declare")
    l10n = yaml.safe_load((APP / "l10n.yaml").read_text(encoding="utf-8"))
    assert (APP / l10n["arb-dir"] / l10n["template-arb-file"]).is_file()


def _dart_string_list(source: str, name: str) -> list[str]:
    block = re.search(rf"const List<String> {name} = \[(.*?)\];", source, re.S)
    assert block, name
    return re.findall(r"'([^']*)'", block.group(1))


def test_dart_model_meta_mirrors_the_python_schema() -> None:
    src = _dart("model_meta.dart")
    resize = re.search(r"const String resizeRule =\s*'([^']*)';", src)
    assert resize and resize.group(1) == RESIZE_RULE
    block = re.search(r"const Map<String, String> fixedInput = \{(.*?)\};", src, re.S)
    assert block
    fixed = {key: (literal if literal else {"resizeRule": RESIZE_RULE}[ident])
             for key, literal, ident in re.findall(r"'(\w+)':\s*(?:'([^']*)'|(\w+))",
                                                   block.group(1))}
    assert fixed == FIXED_INPUT
    assert _dart_string_list(src, "requiredKeys") == list(REQUIRED_KEYS)
    assert _dart_string_list(src, "requiredInputKeys") == list(REQUIRED_INPUT_KEYS)
    assert _dart_string_list(src, "requiredOutputKeys") == list(REQUIRED_OUTPUT_KEYS)
    assert f"const int schemaVersion = {SCHEMA_VERSION};" in src
    assert "const String modelMetaAsset = 'assets/models/model_meta.json';" in src


def test_dart_preprocessing_and_inference_take_the_contract_from_metadata(
        sample_classes: list[str]) -> None:
    pre = _dart("preprocess.dart")
    assert "package:flutter" not in pre, "preprocess.dart must stay pure Dart (isolate, tests)"
    assert "copyResize" not in re.sub(r"///.*|//.*", "", pre), "use the Pillow port"
    assert "const int _precisionBits = 32 - 8 - 2;" in pre
    assert f"const int defaultMaxPixels = {DEFAULT_MAX_PIXELS};" in pre
    classifier = _dart("classifier.dart")
    # float32 input of the metadata's size and names; softmax output read by name.
    assert "createTensorWithDataList(tensor, [1, 3, config.size, config.size])" in classifier
    assert "Float32List tensor" in classifier
    assert "[config.outputName]" in classifier and "{config.inputName: input}" in classifier
    assert "size: meta.size" in classifier and "outputName: meta.probabilitiesOutput" in classifier
    for path, src in _dart_sources().items():
        code = re.sub(r"///.*|//.*", "", src)
        for label in sample_classes:
            assert f"'{label}'" not in code, f"{path.name} hard-codes class {label}"
        assert not re.search(r"\b224\b", code), f"{path.name} hard-codes the input size"


def _placeholders(message: str) -> set[str]:
    return set(re.findall(r"\{(\w+)\}", message))


def test_arb_files_agree_and_cover_every_string_the_code_uses() -> None:
    en = _read_json(APP / "lib" / "l10n" / "app_en.arb")
    nl = _read_json(APP / "lib" / "l10n" / "app_nl.arb")
    keys_en = {k for k in en if not k.startswith("@")}
    keys_nl = {k for k in nl if not k.startswith("@")}
    assert keys_en == keys_nl
    for key in keys_en:
        assert _placeholders(en[key]) == _placeholders(nl[key]), key
        declared = set(en.get(f"@{key}", {}).get("placeholders", {}))
        assert declared == _placeholders(en[key]), key
    used = {m for src in _dart_sources().values()
            for m in re.findall(r"(?:l10n|AppLocalizations\.of\(context\))\.(\w+)", src)}
    assert used - {"localeName"} <= keys_en, used - keys_en - {"localeName"}
    assert en["notSure"] == "Not sure — try another angle"


def test_platform_files_ask_for_camera_and_photos() -> None:
    manifest = (APP / "android" / "app" / "src" / "main" / "AndroidManifest.xml").read_text(
        encoding="utf-8")
    assert 'android:name="android.permission.CAMERA"' in manifest
    plist = (APP / "ios" / "Runner" / "Info.plist").read_text(encoding="utf-8")
    assert "NSCameraUsageDescription" in plist and "NSPhotoLibraryUsageDescription" in plist


# --- a real export, when there is one ---------------------------------------------------------


def test_exported_model_fits_the_app(sample_classes: list[str]) -> None:
    meta_path = EXPORT_DIR / "model_meta.json"
    if not meta_path.is_file():
        pytest.skip(f"no export in {EXPORT_DIR} (python scripts/export.py writes one)")
    meta = read_metadata(meta_path)
    spec = validate_metadata(meta, str(meta_path))
    assert list(spec.classes) == sample_classes
    model = EXPORT_DIR / meta["model_file"]
    assert model.is_file(), f"{meta_path} names {meta['model_file']}, which is not there"
    assert sha256_file(model) == meta["sha256"], f"{model.name} is not the model {meta_path} " \
                                                 "describes"
    proto = onnx.load(str(model), load_external_data=False)
    assert proto.ir_version <= APP_MAX_IR_VERSION, "the app's ONNX Runtime 1.15 cannot load it"
    opset = max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    assert opset <= APP_MAX_OPSET, "the app's ONNX Runtime 1.15 cannot load it"
    expected = EXPORT_DIR / "expected_probabilities.json"
    if expected.is_file():
        assert _read_json(expected)["model_sha256"] == meta["sha256"]
