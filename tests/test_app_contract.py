"""The contract between the Python side and the Flutter app, checked without a Flutter SDK.

Covers the model_meta.json schema (fitlens.export.metadata) and its Dart mirror, the decision
rule and its Dart twin, what the exporter publishes against what pubspec ships, the golden
fixtures (fitlens.export.fixtures), and the app's own files: guidance, localisations (ARB and
iOS InfoPlist.strings), the runtime package and the model's SHA-256 check at start-up. A real
export in flutter_app/assets/models/ is checked too when there is one.
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

from fitlens.contract import DECISION_RULE, RESIZE_MODES, RESIZE_RULE, Answer, InputSpec, decide
from fitlens.data.images import DEFAULT_MAX_PIXELS, load_rgb, preprocess
from fitlens.export.fixtures import (
    FIXTURES,
    SAMPLE_META_FILE,
    expected_probabilities,
    fixture_resizes,
    load_tensor,
    read_index,
    write_fixtures,
)
from fitlens.export.metadata import (
    APP_MAX_IR_VERSION,
    APP_MAX_OPSET,
    FIXED_INPUT,
    FIXED_RESIZE,
    OPTIONAL_OUTPUT_KEYS,
    READABLE_SCHEMAS,
    REQUIRED_INPUT_KEYS,
    REQUIRED_KEYS,
    REQUIRED_OUTPUT_KEYS,
    REQUIRED_RESIZE_KEYS,
    SCHEMA_VERSION,
    V1_REQUIRED_INPUT_KEYS,
    V1_REQUIRED_KEYS,
    MetadataError,
    build_metadata,
    read_metadata,
    sha256_file,
    validate_metadata,
    write_metadata,
)
from fitlens.export.publish import EXPECTED_FILE, META_FILE, publish

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "flutter_app"
FIXTURE_DIR = APP / "test" / "fixtures"
EXPORT_DIR = APP / "assets" / "models"
EXPECTED_DIR = APP / "test" / "exported"
TRAIN_CONFIG = ROOT / "conf" / "train.yaml"


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _dart_sources(folder: str = "lib") -> dict[Path, str]:
    return {p: p.read_text(encoding="utf-8") for p in sorted((APP / folder).rglob("*.dart"))
            if "gen" not in p.relative_to(APP / folder).parts}


def _dart(name: str) -> str:
    return (APP / "lib" / "src" / name).read_text(encoding="utf-8")


def _code(source: str) -> str:
    """Dart source without comments."""
    return re.sub(r"//.*", "", source)


@pytest.fixture(scope="module")
def sample_classes() -> list[str]:
    return _read_json(FIXTURE_DIR / SAMPLE_META_FILE)["classes"]


def _good_meta(classes: list[str] | None = None, **spec: object) -> dict:
    spec_ = InputSpec(classes=tuple(classes or ["squats", "pullup", "cable_flyes"]), **spec)
    return build_metadata(spec_, model_file="fitness_resnet18-0123456789ab.onnx",
                          model_name="resnet18", sha256="ab" * 32, opset=18, threshold=0.6,
                          registered_model="exercise-classifier", version="3", run_id="r1",
                          metrics={"test_acc": 0.9})


# --- metadata.py ------------------------------------------------------------------------------


def test_build_metadata_writes_schema_2() -> None:
    meta = _good_meta(resize_mode="letterbox", fill=(114, 114, 114), reject_class="other")
    assert meta["schema_version"] == SCHEMA_VERSION == 2
    assert meta["input"]["shape"] == [1, 3, 224, 224]
    assert {k: meta["input"][k] for k in FIXED_INPUT} == FIXED_INPUT
    assert meta["input"]["resize"] == {"mode": "letterbox", "fill": [114, 114, 114],
                                       "max_side": 2048, **FIXED_RESIZE}
    assert (meta["reject_class"], meta["decision_rule"]) == ("other", DECISION_RULE)
    assert meta["outputs"] == {"logits": "logits", "probabilities": "probabilities"}
    spec = validate_metadata(meta, "m.json")
    assert (spec.resize_mode, spec.fill, spec.reject_class) == ("letterbox", (114,) * 3, "other")


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


#: Every check of validate_metadata, each with the message model_meta.dart must give too
#: (test/model_meta_test.dart repeats the Dart side of the ones that matter to the app).
BAD_FIELDS = [
    (_drop("threshold"), "missing threshold"),
    (_drop("input.size"), "missing input.size"),
    (_drop("input.resize.max_side"), "missing input.resize.max_side"),
    (_drop("outputs.probabilities"), "missing outputs.probabilities"),
    (_drop("reject_class"), "missing reject_class"),
    (_set("schema_version", 3), "schema_version=3; expected one of [1, 2]"),
    (_set("input", [1, 2]), "input=[1,2]; expected an object"),
    (_set("model_file", "../model.onnx"), 'model_file="../model.onnx"'),
    (_set("sha256", "ABC"), 'sha256="ABC"'),
    (_set("classes", ["squats", "squats"]), 'classes=["squats","squats"]'),
    (_set("reject_class", "squats"), 'reject_class="squats"; expected null or a non-empty'),
    (_set("decision_rule", "top-1"), 'decision_rule="top-1"; expected "accept iff'),
    (_set("threshold", 1.5), "threshold=1.5; expected a number in [0, 1]"),
    (_set("threshold", True), "threshold=true"),
    (_set("input.layout", "NHWC"), 'input.layout="NHWC"; expected "NCHW"'),
    (_set("input.size", 4), "input.size=4; expected an integer >= 8"),
    (_set("input.shape", [1, 3, 256, 256]), "input.shape=[1,3,256,256]; expected [1,3,224,224]"),
    (_set("input.std", [0.2, 0.0, 0.2]), "input.std=[0.2,0.0,0.2]; expected three numbers > 0"),
    (_set("input.resize", "center crop"), 'input.resize="center crop"; expected an object'),
    (_set("input.resize.mode", "crop"), 'input.resize.mode="crop"; expected "stretch" or '
                                        '"letterbox"'),
    (_set("input.resize.fill", [0, 0, 256]), "input.resize.fill=[0,0,256]; expected three"),
    (_set("input.resize.max_side", 100), "input.resize.max_side=100; expected an integer >= "
                                         "input.size=224"),
    (_set("input.resize.filter", "nearest"), 'input.resize.filter="nearest"'),
    (_set("outputs.keypoints", ""), 'outputs.keypoints=""; expected a non-empty string'),
    (_set("variants", {"int8": {"model_file": "x.onnx", "sha256": "0" * 64, "threshold": 2}}),
     "variants.int8.threshold=2; expected a number in [0, 1]"),
]


@pytest.mark.parametrize(("mutate", "message"), BAD_FIELDS, ids=[m for _, m in BAD_FIELDS])
def test_each_bad_field_is_named(mutate, message: str) -> None:
    meta = copy.deepcopy(_good_meta())
    mutate(meta)
    with pytest.raises(MetadataError) as err:
        validate_metadata(meta, "assets/models/model_meta.json")
    assert str(err.value).startswith("assets/models/model_meta.json: ")
    assert message in str(err.value)


def test_all_missing_keys_are_listed_and_non_objects_refused() -> None:
    with pytest.raises(ValueError, match="missing model_file, sha256, reject_class"):
        validate_metadata({"schema_version": 2, "classes": ["a", "b"]}, "x")
    with pytest.raises(ValueError, match="top level is a JSON array; expected an object"):
        validate_metadata([], "x")  # type: ignore[arg-type]


def test_write_is_atomic_and_read_round_trips(tmp_path: Path) -> None:
    meta = _good_meta()
    path = write_metadata(meta, tmp_path / "models" / "model_meta.json")
    assert read_metadata(path) == meta
    assert [p.name for p in path.parent.iterdir()] == ["model_meta.json"]  # no temp file left


# --- model_meta.dart mirrors metadata.py -------------------------------------------------------


def _dart_strings(literals: str) -> str:
    """Adjacent Dart string literals ('a' 'b'), joined as Dart joins them."""
    return "".join(re.findall(r"'((?:[^'\\]|\\.)*)'", literals))


def _dart_string_const(source: str, name: str) -> str:
    match = re.search(rf"const String {name} =\s*((?:'(?:[^'\\]|\\.)*'\s*)+);", source)
    assert match, name
    return _dart_strings(match.group(1))


def _dart_list(source: str, name: str) -> list[str]:
    match = re.search(rf"const List<(?:String|int)> {name} =\s*(\[.*?\]|\w+);", source, re.S)
    assert match, name
    if not match.group(1).startswith("["):  # an alias of another list
        return _dart_list(source, match.group(1))
    body = match.group(1)
    return re.findall(r"'([^']*)'", body) or [int(v) for v in re.findall(r"\d+", body)]


def _dart_map(source: str, name: str) -> dict[str, str]:
    match = re.search(rf"const Map<String, String> {name} = \{{(.*?)\}};", source, re.S)
    assert match, name
    entries = re.findall(r"'(\w+)':\s*((?:'(?:[^'\\]|\\.)*'\s*)+),", match.group(1))
    return {key: _dart_strings(value) for key, value in entries}


def test_dart_model_meta_constants_equal_the_python_schema() -> None:
    src = _dart("model_meta.dart")
    assert f"const int schemaVersion = {SCHEMA_VERSION};" in src
    assert _dart_list(src, "readableSchemas") == list(READABLE_SCHEMAS)
    assert _dart_string_const(src, "resizeRule") == RESIZE_RULE
    assert _dart_string_const(src, "decisionRule") == DECISION_RULE
    assert _dart_map(src, "fixedInput") == FIXED_INPUT
    assert _dart_map(src, "fixedResize") == FIXED_RESIZE
    assert _dart_list(src, "resizeModes") == list(RESIZE_MODES)
    for name, python in [("requiredKeys", REQUIRED_KEYS), ("requiredInputKeys",
                         REQUIRED_INPUT_KEYS), ("requiredResizeKeys", REQUIRED_RESIZE_KEYS),
                         ("requiredOutputKeys", REQUIRED_OUTPUT_KEYS), ("optionalOutputKeys",
                         OPTIONAL_OUTPUT_KEYS), ("v1RequiredKeys", V1_REQUIRED_KEYS),
                         ("v1RequiredInputKeys", V1_REQUIRED_INPUT_KEYS)]:
        assert _dart_list(src, name) == list(python), name
    assert "const String modelMetaAsset = 'assets/models/model_meta.json';" in src


def _in_order(source: str, patterns: list[str]) -> None:
    positions = [m.start() if (m := re.search(p, source)) else -1 for p in patterns]
    assert -1 not in positions, [p for p, at in zip(patterns, positions, strict=True) if at < 0]
    assert positions == sorted(positions), patterns


#: The checks both validators make, in the order Python makes them (first failure wins).
_FIELDS = ["schema_version", "model_file", "sha256", "classes", "reject_class", "decision_rule",
           "threshold", "input.name"]
_SIZE = ["input.size", "input.shape"]
_RESIZE = ["input.resize", "input.resize.mode", "input.resize.fill", "input.resize.max_side"]


def test_dart_validator_checks_in_the_python_order() -> None:
    python = (ROOT / "src" / "fitlens" / "export" / "metadata.py").read_text(encoding="utf-8")
    py = lambda f: rf'fail\("{re.escape(f)}"'  # noqa: E731
    _in_order(python, [py(f) for f in _FIELDS] + [r'fail\(f"input\.\{key\}", inp\[key\]']
              + [py(f) for f in _SIZE] + [r'fail\(f"input\.\{key\}", values']
              + [py(f) for f in _RESIZE] + [r'fail\(f"input\.resize\.\{key\}"',
                                            r'fail\(f"outputs\.\{key\}"', py("variants")])
    dart = _code(_dart("model_meta.dart"))
    da = lambda f: rf"fail\(\s*'{re.escape(f)}'"  # noqa: E731
    # Dart keeps the resize and variants checks in helpers below the factory: the factory
    # calls them where Python makes those checks.
    _in_order(dart, [da(f) for f in _FIELDS] + [r"fail\(\s*'input\.\$key'"]
              + [da(f) for f in _SIZE] + [da("input.mean"), da("input.std"),
                                          r"_geometry\(input\['resize'\]",
                                          r"fail\('outputs\.\$key'",
                                          r"_checkVariants\(meta\['variants'\]"])
    helper = dart[dart.index("InputGeometry _geometry("):]
    _in_order(helper, [da(f) for f in _RESIZE] + [r"fail\(\s*'input\.resize\.\$key'"])


# --- the decision rule ------------------------------------------------------------------------


def decide_like_dart(probabilities: list[float], num_known: int, threshold: float
                     ) -> tuple[str, int, list[int]]:
    """decide() of lib/src/decision.dart: (answer, arg-max index, best known indices)."""
    top = 0
    for i in range(1, len(probabilities)):
        if probabilities[i] > probabilities[top]:
            top = i
    if top >= num_known:
        answer = "unknown"
    elif probabilities[top] >= threshold:
        answer = "exercise"
    else:
        answer = "notSure"
    known = sorted(range(num_known), key=lambda i: (-probabilities[i], i))
    return answer, top, known[:3]


ANSWERS = {Answer.EXERCISE: "exercise", Answer.NOT_SURE: "notSure", Answer.UNKNOWN: "unknown"}


def test_dart_decision_twin_equals_contract_decide_on_random_vectors() -> None:
    rng = np.random.default_rng(3)
    seen = set()
    for trial in range(4000):
        num_known = int(rng.integers(2, 9))
        outputs = num_known + int(rng.integers(0, 2))  # with and without a reject class
        logits = rng.normal(0, 2, outputs)
        probs = np.exp(logits) / np.exp(logits).sum()
        if trial % 3 == 0:  # coarse values: ties between classes and with the threshold
            probs = np.round(probs * 4) / 4
        threshold = float(rng.choice([0.0, 0.25, 0.5, 0.6, 1.0, float(probs.max())]))
        expected = decide(probs, threshold, num_known)
        answer, top, best = decide_like_dart([float(p) for p in probs], num_known, threshold)
        assert (answer, top) == (ANSWERS[expected.answer], expected.index), (probs, threshold)
        assert best == list(np.argsort(-probs[:num_known], kind="stable")[:3])
        seen.add(answer)
    assert seen == set(ANSWERS.values())


def test_dart_decision_is_the_twin_and_the_app_shows_three_answers() -> None:
    src = _code(_dart("decision.dart"))
    assert "if (probabilities[i] > probabilities[top])" in src  # first arg-max: ties go low
    assert "top >= numKnown" in src and "probabilities[top] >= threshold" in src
    assert "enum Answer" in src and "const int guesses = 3;" in src
    result = _code(_dart("ui/result_view.dart"))
    for answer in ("Answer.exercise", "Answer.notSure", "Answer.unknown"):
        assert answer in result
    classifier = _code(_dart("classifier.dart"))
    assert "meta.outputLabels" in classifier and "threshold: meta.threshold" in classifier


# --- runtime, start-up integrity, what ships --------------------------------------------------


def test_the_runtime_is_flutter_onnxruntime_pinned() -> None:
    pubspec = yaml.safe_load((APP / "pubspec.yaml").read_text(encoding="utf-8"))
    deps = pubspec["dependencies"]
    assert "onnxruntime" not in deps
    assert re.fullmatch(r"\d+\.\d+\.\d+", str(deps["flutter_onnxruntime"])), "pin one version"
    assert tuple(map(int, str(deps["flutter_onnxruntime"]).split("."))) >= (1, 7, 0)
    for folder in ("lib", "test"):
        for path, src in _dart_sources(folder).items():
            assert "package:onnxruntime/" not in src, path
            assert "createSessionFromAsset" not in _code(src), f"{path}: skips the SHA-256 check"
    proguard = (APP / "android" / "app" / "proguard-rules.pro").read_text(encoding="utf-8")
    assert "-keep class ai.onnxruntime.** { *; }" in proguard


def test_start_up_checks_the_model_sha256_before_opening_it() -> None:
    services = _code(_dart("app_services.dart"))
    load = services[services.index("static Future<AppServices> load"):]
    install, open_ = load.index("installModel(bundle, meta"), load.index("OnnxClassifier.open(")
    assert install < open_ and "OnnxClassifier.open(meta, modelPath)" in load
    store = _code(_dart("model_store.dart"))
    assert "sha256.bind(File(path).openRead())" in store and "Isolate.run(" in store
    assert "if (digest != meta.sha256)" in store and "throw ModelIntegrityException(" in store
    # The model is looked up by the name the metadata gives, never a typed one.
    assert "meta.modelAsset" in store and "meta.modelFile" in store
    assert not re.search(r"'\w[^']*\.onnx'", store), "a typed model file name"


def test_pubspec_ships_exactly_what_publish_writes(tmp_path: Path) -> None:
    # A real publish into a copy of the app's asset folder, over a stale export.
    out = tmp_path / "assets" / "models"
    shutil.copytree(EXPORT_DIR, out, ignore=shutil.ignore_patterns("*.json", "*.onnx"))
    (out / "fitness_old-000000000000.onnx").write_bytes(b"old")
    (out / EXPECTED_FILE).write_text("{}")
    keep = tmp_path / "keep"
    keep.mkdir()
    model = keep / "fitness_resnet18-0123456789ab.onnx"
    model.write_bytes(b"model")
    (keep / "fitness_resnet18_int8.onnx").write_bytes(b"int8")
    meta = _good_meta()
    meta["variants"] = {"int8": {"model_file": "fitness_resnet18_int8.onnx", "sha256": "0" * 64,
                                 "threshold": 0.5}}
    write_metadata(meta, keep / META_FILE)
    write_metadata({"fixtures": []}, keep / EXPECTED_FILE)
    publish(keep / META_FILE, model, keep / EXPECTED_FILE, out, tmp_path / "exported")

    shipped = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert shipped == sorted([META_FILE, model.name, "README.md"])
    assert (out / "README.md").stat().st_size < 1024, "the placeholder ships: keep it small"
    assert (tmp_path / "exported" / EXPECTED_FILE).is_file()
    # pubspec bundles that folder (the model name changes per export) and what the code loads.
    pubspec = yaml.safe_load((APP / "pubspec.yaml").read_text(encoding="utf-8"))
    declared = pubspec["flutter"]["assets"]
    assert "assets/models/" in declared
    for asset in declared:
        assert (APP / asset).exists(), f"pubspec.yaml declares {asset}, which does not exist"
    loaded = {m for src in _dart_sources().values() for m in re.findall(r"'(assets/[^'$]*)'", src)}
    assert {"assets/exercises.json", "assets/models/model_meta.json"} <= loaded
    for asset in loaded:
        assert any(asset == d or (d.endswith("/") and asset.startswith(d)) for d in declared), (
            f"the Dart code loads {asset}, which pubspec.yaml does not declare")
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert {"flutter_app/assets/models/*", "!flutter_app/assets/models/README.md",
            "flutter_app/test/exported/"} <= set(ignored)


def test_dart_preprocessing_and_inference_take_the_contract_from_metadata(
        sample_classes: list[str]) -> None:
    pre = _dart("preprocess.dart")
    assert "package:flutter" not in pre, "preprocess.dart must stay pure Dart (isolate, tests)"
    assert "copyResize" not in _code(pre), "use the Pillow port"
    assert "const int _precisionBits = 32 - 8 - 2;" in pre
    assert f"const int defaultMaxPixels = {DEFAULT_MAX_PIXELS};" in pre
    classifier = _code(_dart("classifier.dart"))
    assert "OrtValue.fromList(tensor, meta.geometry.inputShape)" in classifier
    assert "{meta.inputName: input}" in classifier and "meta.probabilitiesOutput" in classifier
    assert "Isolate.run(() => preprocessFile(path, geometry))" in classifier
    sizes = {str(_read_json(FIXTURE_DIR / SAMPLE_META_FILE)["input"]["size"]),
             str(read_index(FIXTURE_DIR)["size"])}
    for path, src in _dart_sources().items():
        code = _code(src)
        for label in sample_classes:
            assert f"'{label}'" not in code, f"{path.name} hard-codes class {label}"
        for size in sizes:
            assert not re.search(rf"\b{size}\b", code), f"{path.name} hard-codes the input size"


# --- fixtures -----------------------------------------------------------------------------------


def test_fixtures_match_index_and_current_python_preprocessing() -> None:
    index = read_index(FIXTURE_DIR)
    resizes = fixture_resizes(index["size"])
    assert [e["file"] for e in index["fixtures"]] == list(FIXTURES)
    for entry in index["fixtures"]:
        image = FIXTURE_DIR / entry["file"]
        assert image.stat().st_size < 30 * 1024, f"{image.name} is over 30 KB"
        assert sha256_file(image) == entry["sha256"], f"{image.name} changed since fixtures.json"
        assert entry["max_level_diff"] == (4 if image.suffix == ".jpg" else 0)
        for mode, resize in resizes.items():
            tensor_file = FIXTURE_DIR / entry["tensors"][mode]["file"]
            assert sha256_file(tensor_file) == entry["tensors"][mode]["sha256"]
            assert np.array_equal(load_tensor(FIXTURE_DIR, entry, mode),
                                  preprocess(image, resize)), (
                f"{entry['file']} ({mode}): Python preprocessing no longer gives the committed "
                "tensor; if intended, run python scripts/make_fixtures.py --tensors-only and "
                "update flutter_app/lib/src/preprocess.dart to match")


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
    modes = {}
    for name in ("alpha.png", "palette.png", "palette_alpha.png", "gray.png"):
        with Image.open(FIXTURE_DIR / name) as img:
            modes[name] = (img.mode, "transparency" in img.info)
    assert modes == {"alpha.png": ("RGBA", False), "palette.png": ("P", False),
                     "palette_alpha.png": ("P", True), "gray.png": ("L", False)}
    # The reduce step runs on some fixtures (long side over max_side) and not on others.
    max_side = fixture_resizes()["stretch"].max_side
    longest = {name: max(load_rgb(FIXTURE_DIR / name).size) for name in FIXTURES}
    assert any(v > max_side for v in longest.values())
    assert any(v <= max_side for v in longest.values())


def test_sample_metadata_is_a_letterbox_pose_model_with_a_reject_class() -> None:
    meta = read_metadata(FIXTURE_DIR / SAMPLE_META_FILE)
    spec = validate_metadata(meta, SAMPLE_META_FILE)
    assert spec.resize_mode == "letterbox" and spec.reject_class is not None
    assert {"keypoints", "person_box"} <= set(meta["outputs"])


# --- expected_probabilities --------------------------------------------------------------------


def _tiny_model(path: Path, *, size: str | int = "H", output_name: str = "probabilities",
                classes: int = 6) -> Path:
    """conv -> global pool -> linear -> softmax, with the exporter's tensor names."""
    rng = np.random.default_rng(0)
    inits = [
        helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3],
                           rng.normal(0, 1, 108).astype(np.float32)),
        helper.make_tensor("fc", TensorProto.FLOAT, [4, classes],
                           rng.normal(0, 2, 4 * classes).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["c"], strides=[4, 4]),
        helper.make_node("GlobalAveragePool", ["c"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["logits"]),
        helper.make_node("Softmax", ["logits"], [output_name], axis=1),
    ]
    width = size if isinstance(size, int) else "W"
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, width])],
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
    resize = fixture_resizes()["letterbox"]
    result = expected_probabilities(model, FIXTURE_DIR, resize)
    assert (result["model_file"], result["model_sha256"]) == ("tiny.onnx", sha256_file(model))
    assert result["resize"]["mode"] == "letterbox"
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    index = {e["file"]: e for e in read_index(FIXTURE_DIR)["fixtures"]}
    assert [f["file"] for f in result["fixtures"]] == list(index)
    for fixture in result["fixtures"]:
        (direct,) = session.run(["probabilities"], {
            "input": load_tensor(FIXTURE_DIR, index[fixture["file"]], "letterbox")})
        assert np.allclose(fixture["probabilities"], direct[0], atol=1e-7)


def test_expected_probabilities_refuses_mismatched_models(tmp_path: Path) -> None:
    resize = fixture_resizes()["stretch"]
    renamed = _tiny_model(tmp_path / "renamed.onnx", output_name="softmax")
    with pytest.raises(ValueError, match="expected an input 'input' and an output 'probabilit"):
        expected_probabilities(renamed, FIXTURE_DIR, resize)
    small = _tiny_model(tmp_path / "small.onnx", size=32)
    with pytest.raises(ValueError, match="the contract says 224x224"):
        expected_probabilities(small, FIXTURE_DIR, resize)


# --- the app's own files -----------------------------------------------------------------------


def _train_classes() -> list[str]:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(TRAIN_CONFIG.parent), version_base="1.3"):
        classes = list(compose(config_name="train").data.classes)
    GlobalHydra.instance().clear()
    return classes


def test_exercise_library_covers_exactly_the_training_classes_in_both_languages(
        sample_classes: list[str]) -> None:
    classes = _train_classes()
    assert classes == sample_classes, "rerun python scripts/make_fixtures.py --tensors-only"
    guidance = _read_json(APP / "assets" / "exercises.json")
    assert list(guidance) == classes
    for label, languages in guidance.items():
        assert set(languages) == {"en", "nl"}, label
        for lang, info in languages.items():
            where = f"{label}.{lang}"
            assert set(info) == {"name", "muscles", "tips"}, where
            assert isinstance(info["name"], str) and info["name"].strip(), where
            assert info["muscles"] and all(isinstance(m, str) and m.strip()
                                           for m in info["muscles"]), where
            assert 3 <= len(info["tips"]) <= 5 and len(set(info["tips"])) == len(info["tips"])
            assert all(isinstance(t, str) and len(t) > 20 for t in info["tips"]), where
        assert len(languages["en"]["tips"]) == len(languages["nl"]["tips"]), label
        assert len(languages["en"]["muscles"]) == len(languages["nl"]["muscles"]), label
    # The library lists the metadata's classes, not a list of its own.
    library = _code(_dart("ui/library_screen.dart"))
    assert "for (final label in classes)" in library
    assert "classes: widget.services.meta.classes" in _code(_dart("ui/home_screen.dart"))


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
        assert set(en[f"@{key}"].get("placeholders", {})) == _placeholders(en[key]), key
        assert en[f"@{key}"]["description"], key
    used = {m for folder in ("lib", "test") for src in _dart_sources(folder).values()
            for m in re.findall(r"(?:l10n|english|dutch|AppLocalizations\.of\(context\))"
                                r"\.(\w+)", src)}
    assert used - {"localeName"} <= keys_en, used - keys_en - {"localeName"}
    unused = keys_en - used
    assert not unused, f"ARB keys no code uses: {sorted(unused)}"
    assert en["notSure"] == "Not sure — try another angle"
    l10n = yaml.safe_load((APP / "l10n.yaml").read_text(encoding="utf-8"))
    assert (APP / l10n["arb-dir"] / l10n["template-arb-file"]).is_file()


def test_ios_and_android_permission_texts_in_english_and_dutch() -> None:
    manifest = (APP / "android" / "app" / "src" / "main" / "AndroidManifest.xml").read_text(
        encoding="utf-8")
    assert 'android:name="android.permission.CAMERA"' in manifest
    plist = (APP / "ios" / "Runner" / "Info.plist").read_text(encoding="utf-8")
    keys = ("NSCameraUsageDescription", "NSPhotoLibraryUsageDescription")
    assert all(key in plist for key in keys)
    assert re.search(r"<key>CFBundleLocalizations</key>\s*<array>\s*<string>en</string>\s*"
                     r"<string>nl</string>", plist)
    texts = {}
    for lang in ("en", "nl"):
        strings = (APP / "ios" / "Runner" / f"{lang}.lproj" / "InfoPlist.strings").read_text(
            encoding="utf-8")
        texts[lang] = dict(re.findall(r'^"(\w+)" = "([^"]+)";$', strings, re.M))
        assert set(texts[lang]) == set(keys), lang
    assert all(texts["en"][k] != texts["nl"][k] for k in keys)


def test_flutter_create_cannot_add_a_template_test() -> None:
    # `flutter create` writes test/widget_test.dart only when it is missing; ours is a real
    # test, so the template (which does not compile against this app) never lands.
    widget_test = (APP / "test" / "widget_test.dart").read_text(encoding="utf-8")
    assert "MyApp" not in widget_test and "FitlensApp" in widget_test
    readme = (APP / "README.md").read_text(encoding="utf-8")
    assert "flutter create --empty" in readme


def test_every_dart_test_fixture_reference_exists() -> None:
    for path, src in _dart_sources("test").items():
        for name in re.findall(r"'\$fixturesDir/([\w.]+)'", src):
            assert (FIXTURE_DIR / name).is_file(), f"{path.name} reads {name}"


# --- a real export, when there is one ---------------------------------------------------------


def test_exported_model_fits_the_app(sample_classes: list[str]) -> None:
    meta_path = EXPORT_DIR / META_FILE
    if not meta_path.is_file():
        pytest.skip(f"no export in {EXPORT_DIR} (python scripts/export.py writes one)")
    meta = read_metadata(meta_path)
    spec = validate_metadata(meta, str(meta_path))
    assert list(spec.classes) == sample_classes
    model = EXPORT_DIR / meta["model_file"]
    assert sha256_file(model) == meta["sha256"], f"{model.name} is not the model {meta_path} " \
                                                 "describes (the app refuses to start)"
    proto = onnx.load(str(model), load_external_data=False)
    assert proto.ir_version <= APP_MAX_IR_VERSION
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) \
        <= APP_MAX_OPSET
    expected = EXPECTED_DIR / EXPECTED_FILE
    if expected.is_file():
        assert _read_json(expected)["model_sha256"] == meta["sha256"]
