"""Put a checked export where the app (and predict) read it, in one switch.

The app's asset folder afterwards holds exactly what the app ships: ``model_meta.json`` and the
ONNX file it names. The model file is named by its content, so it is copied in first under a name
no older export uses; replacing the metadata (atomically) is the single switch, so a reader sees
the old export or the new one, never half of each. The files of older exports and the staging
left by a killed export are removed afterwards (and before, at the next start).

Kept light (no torch, no onnx) so that the app's contract tests can run it in a second.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from fitlens.export.metadata import read_metadata, write_metadata


class PublishError(RuntimeError):
    """The export could not be put into the app's folder; the folder is as it was."""


META_FILE = "model_meta.json"
#: The model's outputs on the golden fixtures, for the app's tests; never shipped.
EXPECTED_FILE = "expected_probabilities.json"
STAGING_PREFIX = ".export-"


def remove_staging(out_dir: Path) -> None:
    """What a killed export leaves in the app's folder (its staging folder, half-written
    metadata); neither is ever read by the app or predict."""
    for stale in [*out_dir.glob(f"{STAGING_PREFIX}*"), *out_dir.glob(f".{META_FILE}.*.tmp")]:
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink()


def publish(meta_path: Path, model_path: Path, expected_path: Path, out_dir: Path,
            expected_dir: Path | None = None) -> tuple[Path, Path]:
    """Publish the export whose metadata is ``meta_path`` into ``out_dir``; returns the
    published metadata and model. Variants (int8) stay in the complete export: they do not
    ship, so the published metadata lists none. A failure before the switch (disk full,
    read-only folder) leaves the folder as it was: :class:`PublishError`."""
    meta = read_metadata(meta_path)
    model = out_dir / meta["model_file"]
    added = False
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_staging(out_dir)
        added = not model.exists()
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out_dir))
        try:
            shutil.copyfile(model_path, staging / model.name)
            os.chmod(staging / model.name, 0o644)
            (staging / model.name).replace(model)
            write_metadata({**meta, "variants": {}}, out_dir / META_FILE)  # the switch
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        if added:
            model.unlink(missing_ok=True)
        raise PublishError(
            f"export.out_dir={out_dir}: could not publish the export ({exc}); the app's "
            f"previous export there is untouched, the new one is complete in "
            f"{meta_path.parent}: free space or fix the folder, then re-run") from exc
    for old in out_dir.iterdir():
        if old.is_file() and (old.suffix == ".onnx" and old != model or old.name == EXPECTED_FILE):
            old.unlink()
    if expected_dir is not None:
        expected_dir.mkdir(parents=True, exist_ok=True)
        write_metadata(read_metadata(expected_path), expected_dir / EXPECTED_FILE)
    return out_dir / META_FILE, model
