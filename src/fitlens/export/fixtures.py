"""Golden preprocessing fixtures for the app, independent of any trained model.

Each fixture is a small image that exercises one decoding path (plain JPEG, EXIF-rotated JPEG,
alpha, palette, palette with per-entry transparency, greyscale) plus the exact tensors
:func:`fitlens.data.images.preprocess` makes of it, one per resize mode (stretch, letterbox).
Every value of such a tensor is ``float32(level) / float32(255)`` for an 8-bit level, so the
levels are stored (uint8, planar CHW): a quarter of the bytes of float32, the same tensor.
The Flutter app's Dart preprocessing must reproduce those tensors
(``flutter_app/test/preprocess_test.dart``); a Python test recomputes them, so a change to the
Python preprocessing shows up as a fixture diff, not as a silent app mismatch.
:func:`expected_probabilities` adds a given model's outputs on the fixture images, which the
app's model test compares against.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

from fitlens.contract import InputSpec, Resize
from fitlens.data.images import preprocess
from fitlens.export.metadata import (
    FIXED_INPUT,
    INPUT_NAME,
    PROBABILITIES_NAME,
    build_metadata,
    sha256_file,
    write_metadata,
)

INDEX_FILE = "fixtures.json"
SAMPLE_META_FILE = "model_meta.sample.json"
FIXTURE_SIZE = 224
#: Small enough that the photo and the wide greyscale fixture take the reduce step.
FIXTURE_MAX_SIDE = 300
FIXTURE_FILL = (114, 114, 114)
#: How many 8-bit levels the app's tensor may differ from Python's, per fixture kind.
#: PNG decoding is lossless and the app's resize is a bit-exact port (tests/test_app_preprocess_port
#: proves it), so PNG fixtures must match exactly. JPEG decoders differ; package:image (the app's)
#: documents its own arithmetic in its source: a 12-bit fixed-point IDCT ported from poppler
#: (libjpeg-turbo, Pillow's decoder, uses a 13-bit one) and YCbCr -> RGB with 8-bit fixed-point
#: constants (359, 88, 183, 454 / 256; libjpeg-turbo: 16-bit). The colour step alone differs by at
#: most 1 level; with the IDCTs' usual +-1 on each of Y, Cb and Cr it differs by at most 3 (R, G)
#: and 4 (B) levels, over every (Y, Cb, Cr) (tests/test_app_preprocess_port.py checks this).
#: Reduce, resize and letterbox average with non-negative weights, so they never widen the gap.
#: The fixtures are 4:4:4, so chroma upsampling (nearest in package:image, "fancy" in
#: libjpeg-turbo) does not enter; 4:2:0 photos differ more, which is why the exact checks are PNG.
JPEG_MAX_LEVEL_DIFF = 4
PNG_MAX_LEVEL_DIFF = 0
TENSOR_SUFFIX = ".u8"
#: Model outputs on identical tensors may differ by kernel rounding between runtimes.
PROBABILITY_ATOL = 1e-4
#: Photos (relative to the data root, ``<class>/<file>``) the two JPEG fixtures are cut from.
SOURCE_PHOTOS = {
    "photo.jpg": "squats/fedb__Goblet_Squat__0.jpg",
    "rotated_exif6.jpg": "pullup/fedb__Wide-Grip_Rear_Pull-Up__0.jpg",
}
_EXIF_ORIENTATION = 0x0112


def _grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:height, 0:width]
    return x.astype(np.float64), y.astype(np.float64)


def _photo_jpeg(source: Path, out: Path) -> None:
    # 360x241: bigger than the model input both ways, so the app's downscaling path is covered.
    # 4:4:4 chroma: package:image upsamples 4:2:0 chroma differently from libjpeg (see README).
    img = ImageOps.exif_transpose(Image.open(source)).convert("RGB")
    img = img.resize((360, round(360 * img.height / img.width)), Image.LANCZOS)
    img.save(out, quality=90, subsampling=0)


def _rotated_jpeg(source: Path, out: Path) -> None:
    # Displayed 160 px wide (upscaling path); stored sideways with orientation 6 ("rotate 90
    # degrees clockwise to display"), as phone cameras write portrait shots.
    img = ImageOps.exif_transpose(Image.open(source)).convert("RGB")
    shown = img.resize((160, round(160 * img.height / img.width)), Image.LANCZOS)
    exif = Image.Exif()
    exif[_EXIF_ORIENTATION] = 6
    shown.transpose(Image.Transpose.ROTATE_90).save(out, quality=90, subsampling=0,
                                                    exif=exif.tobytes())


def _alpha_png(out: Path) -> None:
    # Opaque, graded and fully transparent regions over colour gradients and hard edges.
    x, y = _grid(300, 200)
    rgb = np.stack([x / 299 * 255, y / 199 * 255, ((x // 25 + y // 25) % 2) * 255], axis=-1)
    alpha = np.clip((x - 100) / 100 * 255, 0, 255)
    alpha[(x - 230) ** 2 + (y - 100) ** 2 < 45 ** 2] = 0
    alpha[:40] = 255
    rgba = np.concatenate([rgb, alpha[..., None]], axis=-1).round().astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(out)


def _palette(width: int, height: int, colors: int) -> Image.Image:
    x, y = _grid(width, height)
    index = ((x // 16 + y // 16 * 3 + (x + y) // 40) % colors).astype(np.uint8)
    img = Image.fromarray(index, "P")
    palette = [(37 * i % 256, 91 * i % 256, 173 * i % 256) for i in range(colors)]
    img.putpalette([c for rgb in palette for c in rgb])
    return img


def _palette_png(out: Path) -> None:
    img = _palette(257, 190, 16)
    img.save(out)


def _palette_alpha_png(out: Path) -> None:
    # tRNS with one alpha per palette entry: fully transparent, partial and opaque entries.
    img = _palette(180, 240, 8)
    img.save(out, transparency=bytes([0, 64, 128, 192, 255, 255, 30, 255]))


def _gray_png(out: Path) -> None:
    # 5:1 aspect: the resize squashes x and stretches y in one image.
    x, y = _grid(500, 100)
    gray = 127.5 + 127.5 * np.sin(x / 7.0) * np.cos(y / 11.0)
    gray[:, 240:260] = 0
    gray[45:55, :] = 255
    Image.fromarray(gray.round().astype(np.uint8), "L").save(out)


#: file -> (notes, maker). Photo makers take (source photo, out path); synthetic ones (out path).
FIXTURES: dict[str, tuple[str, Callable[..., None]]] = {
    "photo.jpg": ("Real photo (public-domain free-exercise-db), 360x241, 4:4:4 JPEG: the "
                  "downscaling path.", _photo_jpeg),
    "rotated_exif6.jpg": ("JPEG stored sideways (120x160) with EXIF orientation 6: displayed "
                          "160x120 after the rotation; the upscaling path.", _rotated_jpeg),
    "alpha.png": ("RGBA PNG with opaque, graded and fully transparent pixels: composited over "
                  "white.", _alpha_png),
    "palette.png": ("Palette (P) PNG, 16 colours, 257x190, no transparency.", _palette_png),
    "palette_alpha.png": ("Palette PNG with a tRNS alpha per entry (0..255): composited over "
                          "white.", _palette_alpha_png),
    "gray.png": ("8-bit greyscale (L) PNG, 500x100: grey to RGB, strongly non-square resize.",
                 _gray_png),
}


def write_images(out_dir: Path, data_root: Path) -> None:
    """(Re)create the fixture images; the JPEGs are cut from photos under ``data_root``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, (_, make) in FIXTURES.items():
        if name in SOURCE_PHOTOS:
            source = data_root / SOURCE_PHOTOS[name]
            if not source.is_file():
                raise FileNotFoundError(
                    f"{source}: source photo for fixture {name} not found; expected the shared "
                    "data under <data root>/<class>/ (bash scripts/setup.sh links ./data)")
            make(source, out_dir / name)
        else:
            make(out_dir / name)


def _tensor_file(name: str, mode: str) -> str:
    return f"{Path(name).stem}.{mode}{TENSOR_SUFFIX}"


def _levels(tensor: np.ndarray, image: Path) -> np.ndarray:
    """The 8-bit levels behind a ``[1, 3, H, W]`` model input; refuses a tensor that is not one."""
    levels = np.rint(tensor[0] * 255).astype(np.uint8)
    if not np.array_equal(levels.astype(np.float32) / np.float32(255), tensor[0]):
        raise ValueError(f"{image}: the preprocessed tensor is not level / 255 everywhere; the "
                         "fixtures store 8-bit levels, so preprocess must end in to_chw_float")
    return levels


def build_index(fixtures_dir: Path, size: int = FIXTURE_SIZE) -> dict[str, Any]:
    """Write each image's tensor levels for every resize mode; return the index
    (``fixtures.json``)."""
    resizes = fixture_resizes(size)
    entries = []
    for name, (notes, _) in FIXTURES.items():
        image = fixtures_dir / name
        tensors = {}
        for mode, resize in resizes.items():
            path = fixtures_dir / _tensor_file(name, mode)
            path.write_bytes(_levels(preprocess(image, resize), image).tobytes())
            tensors[mode] = {"file": path.name, "sha256": sha256_file(path)}
        is_jpeg = image.suffix.lower() in (".jpg", ".jpeg")
        entries.append({
            "file": name,
            "tensors": tensors,
            "shape": [1, 3, size, size],
            "sha256": sha256_file(image),
            "max_level_diff": JPEG_MAX_LEVEL_DIFF if is_jpeg else PNG_MAX_LEVEL_DIFF,
            "notes": notes,
        })
    return {
        "schema_version": 3,
        "size": size,
        "resize": {mode: {"mode": r.mode, "fill": list(r.fill), "max_side": r.max_side}
                   for mode, r in resizes.items()},
        "layout": FIXED_INPUT["layout"],
        "color": FIXED_INPUT["color"],
        "scale": FIXED_INPUT["scale"],
        "storage": "uint8 levels, planar CHW; the model input is float32(level) / float32(255)",
        "fixtures": entries,
    }


def fixture_resizes(size: int = FIXTURE_SIZE) -> dict[str, Resize]:
    """Both resize modes, with a small ``max_side`` so the reduce step runs on the larger
    fixtures and a grey fill so a letterbox that ignores the fill value shows."""
    return {"stretch": Resize(size, "stretch", max_side=FIXTURE_MAX_SIDE),
            "letterbox": Resize(size, "letterbox", fill=FIXTURE_FILL, max_side=FIXTURE_MAX_SIDE)}


def sample_metadata(classes: Sequence[str], size: int = FIXTURE_SIZE) -> dict[str, Any]:
    """A model_meta.json as the exporter writes it, for a placeholder pose model with a reject
    class: the app's tests parse it, so they break when the Python schema changes and the Dart
    parser does not."""
    spec = InputSpec(classes=tuple(classes), size=size, resize_mode="letterbox",
                     reject_class="none")
    return build_metadata(
        spec, model_file="fitness_pose_fusion.onnx", model_name="pose_fusion", sha256="0" * 64,
        opset=18, threshold=0.6, registered_model="exercise-classifier", version="1",
        run_id=None, metrics={}, pose_outputs=True, exported_at="2000-01-01T00:00:00Z")


def write_fixtures(out_dir: Path, classes: Sequence[str], *, data_root: Path | None = None,
                   size: int = FIXTURE_SIZE) -> dict[str, Any]:
    """Write tensors, ``fixtures.json`` and the sample metadata into ``out_dir``.

    With ``data_root`` the images are regenerated first; without, the images already in
    ``out_dir`` are used (after a deliberate preprocessing change).
    """
    if data_root is not None:
        write_images(out_dir, data_root)
    index = build_index(out_dir, size)
    write_metadata(index, out_dir / INDEX_FILE)
    write_metadata(sample_metadata(classes, size), out_dir / SAMPLE_META_FILE)
    return index


def read_index(fixtures_dir: Path) -> dict[str, Any]:
    path = fixtures_dir / INDEX_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: fixture index not found; run "
                                "python scripts/make_fixtures.py")
    return json.loads(path.read_text(encoding="utf-8"))


def load_levels(fixtures_dir: Path, entry: dict[str, Any], mode: str) -> np.ndarray:
    """A fixture's committed 8-bit levels, ``[1, 3, size, size]`` uint8."""
    data = (fixtures_dir / entry["tensors"][mode]["file"]).read_bytes()
    return np.frombuffer(data, dtype=np.uint8).reshape(entry["shape"])


def load_tensor(fixtures_dir: Path, entry: dict[str, Any], mode: str) -> np.ndarray:
    """A fixture's model input, ``[1, 3, size, size]`` float32, as preprocess computes it."""
    return load_levels(fixtures_dir, entry, mode).astype(np.float32) / np.float32(255)


def expected_probabilities(onnx_path: str | Path, fixtures_dir: str | Path,
                           resize: Resize) -> dict[str, Any]:
    """The model's ``probabilities`` on every fixture image through the model's own
    preprocessing (``resize``), for the app's model test.

    The app compares on the PNG fixtures, whose decoding is lossless: same pixels, same tensor,
    so ONNX Runtime against ONNX Runtime up to kernel rounding.
    """
    onnx_path, fixtures_dir = Path(onnx_path), Path(fixtures_dir)
    index = read_index(fixtures_dir)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = [o.name for o in session.get_outputs()]
    if INPUT_NAME not in inputs or PROBABILITIES_NAME not in outputs:
        raise ValueError(f"{onnx_path}: inputs {list(inputs)}, outputs {outputs}; expected an "
                         f"input {INPUT_NAME!r} and an output {PROBABILITIES_NAME!r}")
    spatial = inputs[INPUT_NAME].shape[2:]
    if any(isinstance(d, int) and d != resize.size for d in spatial):
        raise ValueError(f"{onnx_path}: input is {inputs[INPUT_NAME].shape}, the contract says "
                         f"{resize.size}x{resize.size}")
    results = []
    for entry in index["fixtures"]:
        x = preprocess(fixtures_dir / entry["file"], resize)
        (probs,) = session.run([PROBABILITIES_NAME], {INPUT_NAME: x})
        results.append({"file": entry["file"],
                        "probabilities": [float(p) for p in np.asarray(probs)[0]]})
    return {
        "schema_version": 2,
        "model_file": onnx_path.name,
        "model_sha256": sha256_file(onnx_path),
        "input": INPUT_NAME,
        "output": PROBABILITIES_NAME,
        "resize": {"size": resize.size, "mode": resize.mode, "fill": list(resize.fill),
                   "max_side": resize.max_side},
        "atol": PROBABILITY_ATOL,
        "fixtures": results,
    }
