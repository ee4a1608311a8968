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

from fitlens.contract import RESIZE_RULE, InputSpec

SCHEMA_VERSION = 1
#: ONNX tensor names; the exporter names the graph's input and outputs with these.
INPUT_NAME = "input"
LOGITS_NAME = "logits"
PROBABILITIES_NAME = "probabilities"

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
    "resize": RESIZE_RULE,
}
REQUIRED_KEYS = ("schema_version", "model_file", "sha256", "classes", "threshold", "input",
                 "outputs")
REQUIRED_INPUT_KEYS = ("name", "shape", "size", "mean", "std", *FIXED_INPUT)
REQUIRED_OUTPUT_KEYS = ("logits", "probabilities")

_MODEL_FILE = re.compile(r"[A-Za-z0-9._-]+\.onnx")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SCHEMA_HINT = (f"expected the model_meta.json schema v{SCHEMA_VERSION} written by "
                "fitlens.export.metadata.build_metadata")


class MetadataError(ValueError):
    """model_meta.json is missing, unreadable or breaks the schema; the message says where."""


def build_metadata(spec: InputSpec, *, model_file: str, model_name: str, sha256: str, opset: int,
                   threshold: float, registered_model: str | None, version: str | None,
                   run_id: str | None, metrics: dict[str, float],
                   variants: dict[str, dict] | None = None,
                   exported_at: str | None = None) -> dict[str, Any]:
    """The metadata dict for an exported model, validated before it is returned.

    ``exported_at`` defaults to now (UTC); pass a fixed value for reproducible files.
    """
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
            "resize": spec.resize,
            "alpha": FIXED_INPUT["alpha"],
            "exif_orientation": FIXED_INPUT["exif_orientation"],
            "normalization": FIXED_INPUT["normalization"],
            "mean": list(spec.mean),
            "std": list(spec.std),
        },
        "outputs": {"logits": LOGITS_NAME, "probabilities": PROBABILITIES_NAME},
        "classes": list(spec.classes),
        "threshold": float(threshold),
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
    """Check ``meta`` against the schema and return its :class:`InputSpec`.

    Raises :class:`MetadataError` (a ``ValueError``) naming ``source``, the field, its value and
    what was expected. ``model_meta.dart`` runs these checks in this order.
    """

    def fail(field: str, value: Any, expected: str) -> MetadataError:
        return MetadataError(f"{source}: {field}={_js(value)}; expected {expected}")

    if not isinstance(meta, dict):
        raise MetadataError(f"{source}: top level is a JSON {_kind(meta)}; expected an object")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    for section, keys in (("input", REQUIRED_INPUT_KEYS), ("outputs", REQUIRED_OUTPUT_KEYS)):
        if isinstance(meta.get(section), dict):
            missing += [f"{section}.{k}" for k in keys if k not in meta[section]]
    if missing:
        raise MetadataError(f"{source}: missing {', '.join(missing)}; {_SCHEMA_HINT}")

    version = meta["schema_version"]
    if not (_is_int(version) and version == SCHEMA_VERSION):
        raise fail("schema_version", version,
                   f"{SCHEMA_VERSION} (re-export the model or update the consumer)")
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
    threshold = meta["threshold"]
    if not (_is_number(threshold) and 0.0 <= threshold <= 1.0):
        raise fail("threshold", threshold, "a number in [0, 1]")

    if not _nonempty_str(inp["name"]):
        raise fail("input.name", inp["name"], "a non-empty string (the ONNX input name)")
    for key, expected in FIXED_INPUT.items():
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
    for key in REQUIRED_OUTPUT_KEYS:
        if not _nonempty_str(outputs[key]):
            raise fail(f"outputs.{key}", outputs[key], "a non-empty string (an ONNX output name)")

    return InputSpec(classes=tuple(classes), size=size, mean=tuple(inp["mean"]),
                     std=tuple(inp["std"]), layout=inp["layout"], color=inp["color"],
                     scale=inp["scale"], resize=inp["resize"])


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
