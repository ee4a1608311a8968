"""The ``model_meta.json`` schema: the one file that tells a consumer how to feed the model.

It is written next to every exported ONNX file and read by ``predict`` and the Flutter app
(``flutter_app/lib/src/model_meta.dart`` applies the same rules, in the same order, with the same
messages). The ``input`` values the consumers implement (layout, colour, scale, resize, alpha,
EXIF, normalisation) are fixed here: a model that needs anything else is refused, not guessed at.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fitlens.contract import DECISION_RULE, RESIZE_MODES, RESIZE_RULE, InputSpec

SCHEMA_VERSION = 2
#: Schema versions a consumer still reads: 1 = stretch, no reject class (older exports).
READABLE_SCHEMAS = (1, 2)
#: ONNX tensor names; the exporter names the graph's input and outputs with these.
INPUT_NAME = "input"
LOGITS_NAME = "logits"
PROBABILITIES_NAME = "probabilities"
#: Pose models also output, per photo, the 33 body landmarks (x, y in input pixels, visibility
#: 0..1) and the person box the crop came from (x0, y0, x1, y1 in input pixels): for pictures.
KEYPOINTS_NAME = "keypoints"
PERSON_BOX_NAME = "person_box"

#: The app's onnxruntime package (1.4.x) bundles ONNX Runtime 1.15.1, which loads ONNX IR
#: version <= 9 and opset <= 19: an export meant for the app must stay within these.
APP_MAX_IR_VERSION = 9
APP_MAX_OPSET = 19

#: ``input.<key>`` values every consumer implements; anything else is rejected.
FIXED_INPUT: dict[str, str] = {
    "dtype": "float32",
    "layout": "NCHW",
    "color": "RGB",
    "scale": "0..1",
    "alpha": "composited over white",
    "exif_orientation": "applied",
    "normalization": "inside_model",
}
#: ``input.resize.<key>`` values every consumer implements (schema 2).
FIXED_RESIZE: dict[str, str] = {
    "filter": "PIL bilinear, antialiased (Image.resize with Image.BILINEAR)",
    "reduce": "when the long side > max_side: PIL Image.reduce(ceil(long side / max_side)) "
              "first",
    "letterbox": "long side -> size, short side -> (side * size + long // 2) // long, centred "
                 "at ((size - w) // 2, (size - h) // 2), the rest fill",
}
REQUIRED_KEYS = ("schema_version", "model_file", "sha256", "classes", "reject_class",
                 "decision_rule", "threshold", "input", "outputs")
REQUIRED_INPUT_KEYS = ("name", "shape", "size", "mean", "std", "resize", *FIXED_INPUT)
REQUIRED_RESIZE_KEYS = ("mode", "fill", "max_side", *FIXED_RESIZE)
REQUIRED_OUTPUT_KEYS = ("logits", "probabilities")
OPTIONAL_OUTPUT_KEYS = ("keypoints", "person_box")
#: Schema 1, still read: no reject class or rule, resize as one string.
V1_REQUIRED_KEYS = ("schema_version", "model_file", "sha256", "classes", "threshold", "input",
                    "outputs")
V1_REQUIRED_INPUT_KEYS = ("name", "shape", "size", "mean", "std", "resize", *FIXED_INPUT)

_MODEL_FILE = re.compile(r"[A-Za-z0-9._-]+\.onnx")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SCHEMA_HINT = (f"expected the model_meta.json schema v{SCHEMA_VERSION} written by "
                "fitlens.export.metadata.build_metadata")


class MetadataError(ValueError):
    """model_meta.json is missing, unreadable or breaks the schema; the message says where."""


def build_metadata(spec: InputSpec, *, model_file: str, model_name: str, sha256: str, opset: int,
                   threshold: float, registered_model: str | None, version: str | None,
                   run_id: str | None, metrics: dict[str, float],
                   variants: dict[str, dict] | None = None, pose_outputs: bool = False,
                   operating_point: dict[str, Any] | None = None,
                   exported_at: str | None = None) -> dict[str, Any]:
    """The metadata dict for an exported model, validated before it is returned.

    ``pose_outputs``: the graph also outputs ``keypoints`` and ``person_box``.
    ``operating_point``: how the threshold was chosen and what it does (precision, its lower
    bound, coverage, on which photos). ``exported_at`` defaults to now (UTC); pass a fixed value
    for reproducible files.
    """
    outputs = {"logits": LOGITS_NAME, "probabilities": PROBABILITIES_NAME}
    if pose_outputs:
        outputs.update(keypoints=KEYPOINTS_NAME, person_box=PERSON_BOX_NAME)
    meta: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "model_file": model_file,
        "model_name": model_name,
        "sha256": sha256,
        "opset": int(opset),
        "input": {
            "name": INPUT_NAME,
            "dtype": FIXED_INPUT["dtype"],
            "shape": list(spec.input_shape),
            "batch": "dynamic",
            "layout": spec.layout,
            "color": spec.color,
            "scale": spec.scale,
            "size": spec.size,
            "resize": {"mode": spec.resize_mode, "fill": list(spec.fill),
                       "max_side": spec.max_side, **FIXED_RESIZE},
            "alpha": FIXED_INPUT["alpha"],
            "exif_orientation": FIXED_INPUT["exif_orientation"],
            "normalization": FIXED_INPUT["normalization"],
            "mean": list(spec.mean),
            "std": list(spec.std),
        },
        "outputs": outputs,
        "classes": list(spec.classes),
        "reject_class": spec.reject_class,
        "decision_rule": DECISION_RULE,
        "threshold": float(threshold),
        "operating_point": dict(operating_point or {}),
        "source": {"registered_model": registered_model, "version": version, "run_id": run_id},
        "metrics": {str(k): float(v) for k, v in metrics.items()},
        "variants": dict(variants or {}),
        "exported_at": exported_at or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    validate_metadata(meta, "build_metadata")
    return meta


def _js(value: Any) -> str:
    # Compact JSON, as Dart's jsonEncode prints it, so both validators word errors alike.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "null"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def validate_metadata(meta: dict, source: str) -> InputSpec:
    """Check ``meta`` against the schema (version 2, or 1 for older exports) and return its
    :class:`InputSpec`.

    Raises :class:`MetadataError` (a ``ValueError``) naming ``source``, the field, its value and
    what was expected. ``model_meta.dart`` runs these checks in this order.
    """

    def fail(field: str, value: Any, expected: str) -> MetadataError:
        return MetadataError(f"{source}: {field}={_js(value)}; expected {expected}")

    if not isinstance(meta, dict):
        raise MetadataError(f"{source}: top level is a JSON {_kind(meta)}; expected an object")
    if "schema_version" not in meta:
        raise MetadataError(f"{source}: missing schema_version; {_SCHEMA_HINT}")
    version = meta["schema_version"]
    if not (_is_int(version) and version in READABLE_SCHEMAS):
        raise fail("schema_version", version,
                   f"one of {list(READABLE_SCHEMAS)} (re-export the model or update the "
                   "consumer)")
    v1 = version == 1
    missing = [k for k in (V1_REQUIRED_KEYS if v1 else REQUIRED_KEYS) if k not in meta]
    for section, keys in (("input", V1_REQUIRED_INPUT_KEYS if v1 else REQUIRED_INPUT_KEYS),
                          ("outputs", REQUIRED_OUTPUT_KEYS)):
        if isinstance(meta.get(section), dict):
            missing += [f"{section}.{k}" for k in keys if k not in meta[section]]
    if not v1 and isinstance(meta.get("input"), dict) \
            and isinstance(meta["input"].get("resize"), dict):
        missing += [f"input.resize.{k}" for k in REQUIRED_RESIZE_KEYS
                    if k not in meta["input"]["resize"]]
    if missing:
        raise MetadataError(f"{source}: missing {', '.join(missing)}; {_SCHEMA_HINT}")

    for section in ("input", "outputs"):
        if not isinstance(meta[section], dict):
            raise fail(section, meta[section], "an object")
    inp, outputs = meta["input"], meta["outputs"]

    model_file = meta["model_file"]
    if not (isinstance(model_file, str) and _MODEL_FILE.fullmatch(model_file)):
        raise fail("model_file", model_file,
                   "a plain file name ending in .onnx (it is looked up next to model_meta.json)")
    if not (isinstance(meta["sha256"], str) and _SHA256.fullmatch(meta["sha256"])):
        raise fail("sha256", meta["sha256"], "64 lowercase hex characters (SHA-256 of the .onnx)")
    classes = meta["classes"]
    if not (isinstance(classes, list) and len(classes) >= 2
            and all(_nonempty_str(c) for c in classes) and len(set(classes)) == len(classes)):
        raise fail("classes", classes, "a list of at least two unique, non-empty class names")
    reject = None if v1 else meta["reject_class"]
    if reject is not None and not (_nonempty_str(reject) and reject not in classes):
        raise fail("reject_class", reject, "null or a non-empty name that is not in classes")
    if not v1 and meta["decision_rule"] != DECISION_RULE:
        raise fail("decision_rule", meta["decision_rule"],
                   f"{_js(DECISION_RULE)} (the only rule consumers implement)")
    threshold = meta["threshold"]
    if not (_is_number(threshold) and 0.0 <= threshold <= 1.0):
        raise fail("threshold", threshold, "a number in [0, 1]")

    if not _nonempty_str(inp["name"]):
        raise fail("input.name", inp["name"], "a non-empty string (the ONNX input name)")
    fixed = {**FIXED_INPUT, "resize": RESIZE_RULE} if v1 else FIXED_INPUT
    for key, expected in fixed.items():
        if inp[key] != expected:
            raise fail(f"input.{key}", inp[key], f"{_js(expected)} (the only value consumers "
                       "implement)")
    size = inp["size"]
    if not (_is_int(size) and size >= 8):
        raise fail("input.size", size, "an integer >= 8")
    shape = inp["shape"]
    if not (isinstance(shape, list) and all(map(_is_int, shape)) and shape == [1, 3, size, size]):
        raise fail("input.shape", shape, f"[1,3,{size},{size}] for input.size={size}")
    for key in ("mean", "std"):
        values = inp[key]
        if not (isinstance(values, list) and len(values) == 3 and all(map(_is_number, values))
                and (key == "mean" or all(v > 0 for v in values))):
            raise fail(f"input.{key}", values,
                       "three numbers" + (" > 0" if key == "std" else ""))
    resize = {"mode": "stretch", "fill": [0, 0, 0], "max_side": None} if v1 else inp["resize"]
    if not v1:
        if not isinstance(resize, dict):
            raise fail("input.resize", resize, "an object")
        if resize["mode"] not in RESIZE_MODES:
            raise fail("input.resize.mode", resize["mode"],
                       " or ".join(_js(m) for m in RESIZE_MODES))
        fill = resize["fill"]
        if not (isinstance(fill, list) and len(fill) == 3
                and all(_is_int(v) and 0 <= v <= 255 for v in fill)):
            raise fail("input.resize.fill", fill, "three integers in 0..255")
        if not (_is_int(resize["max_side"]) and resize["max_side"] >= size):
            raise fail("input.resize.max_side", resize["max_side"],
                       f"an integer >= input.size={size}")
        for key, expected in FIXED_RESIZE.items():
            if resize[key] != expected:
                raise fail(f"input.resize.{key}", resize[key],
                           f"{_js(expected)} (the only value consumers implement)")
    for key in REQUIRED_OUTPUT_KEYS + OPTIONAL_OUTPUT_KEYS:
        if (key in REQUIRED_OUTPUT_KEYS or key in outputs) and not _nonempty_str(outputs[key]):
            raise fail(f"outputs.{key}", outputs[key], "a non-empty string (an ONNX output name)")
    variants = meta.get("variants") or {}
    if not isinstance(variants, dict):
        raise fail("variants", variants, "an object of variant name -> file, sha256, threshold")
    for name, entry in variants.items():
        where = f"variants.{name}"
        if not isinstance(entry, dict):
            raise fail(where, entry, "an object with model_file, sha256 and threshold")
        for key in ("model_file", "sha256", "threshold"):
            if key not in entry:
                raise MetadataError(f"{source}: missing {where}.{key}; {_SCHEMA_HINT}")
        file = entry["model_file"]
        if not (isinstance(file, str) and _MODEL_FILE.fullmatch(file)):
            raise fail(f"{where}.model_file", file,
                       "a plain file name ending in .onnx, next to model_meta.json")
        if not (isinstance(entry["sha256"], str) and _SHA256.fullmatch(entry["sha256"])):
            raise fail(f"{where}.sha256", entry["sha256"], "64 lowercase hex characters")
        if not (_is_number(entry["threshold"]) and 0.0 <= entry["threshold"] <= 1.0):
            raise fail(f"{where}.threshold", entry["threshold"], "a number in [0, 1]")

    return InputSpec(classes=tuple(classes), size=size, mean=tuple(inp["mean"]),
                     std=tuple(inp["std"]), layout=inp["layout"], color=inp["color"],
                     scale=inp["scale"], resize_mode=resize["mode"], fill=tuple(resize["fill"]),
                     max_side=resize["max_side"], reject_class=reject)


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks (exported models are tens of MB)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_metadata(meta: dict, path: str | Path) -> Path:
    """Write ``meta`` as JSON atomically (temp file, then ``os.replace``): never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2, ensure_ascii=False)
            f.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; this is a shared build output
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Load a model_meta.json (unvalidated: call :func:`validate_metadata` with the result)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise MetadataError(f"{path}: not found; expected the model_meta.json that "
                            "`python scripts/export.py` writes next to the .onnx") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise MetadataError(f"{path}: cannot be read ({exc})") from exc
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MetadataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, "
                            f"column {exc.colno})") from exc
    if not isinstance(meta, dict):
        raise MetadataError(f"{path}: top level is a JSON {_kind(meta)}; expected an object")
    return meta
