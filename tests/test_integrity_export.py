"""Export is all or nothing, as a hostile or clumsy user would test it: killed at each step of
the publish, a full disk, a store that cannot record the export, staging left behind. After
each, ``fitlens.predict.Predictor`` (what the app's checks mirror) loads a complete export, the
old or the new one, never half of each; and the next export leaves exactly one.

Publishing is tested on hand-built exports (the colour model of test_predict, content-named as
the exporter names it); the store case runs the real export stage on the tiny trained model.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fitlens.cli import user_message
from fitlens.export import pipeline
from fitlens.export import publish as publishing
from fitlens.export.metadata import read_metadata, sha256_file, write_metadata
from fitlens.export.publish import EXPECTED_FILE, META_FILE, PublishError
from fitlens.predict import Predictor
from fitlens.tracking.registry import RegistryError
from fitlens.tracking.store import TrackingStoreError
from tests.conftest import ROOT
from tests.test_export_onnx import tiny_model
from tests.test_export_pipeline import export_config, fixtures_at, register
from tests.test_predict import _solid, colour_model


def make_export(keep: Path, scale: float) -> Path:
    """A complete export in ``keep`` as the exporter leaves it: the model named by its content,
    its metadata, and the expected outputs. ``scale`` makes models with different bytes."""
    colour_model(keep, scale=scale)
    sha = sha256_file(keep / "colour.onnx")
    name = f"colour-{sha[:12]}.onnx"
    (keep / "colour.onnx").rename(keep / name)
    meta = read_metadata(keep / META_FILE)
    write_metadata({**meta, "model_file": name}, keep / META_FILE)
    (keep / EXPECTED_FILE).write_text("{}\n")
    return keep


def publish(keep: Path, out: Path) -> tuple[Path, Path]:
    """Publish the complete export in ``keep`` into the app folder ``out``."""
    meta = read_metadata(keep / META_FILE)
    return publishing.publish(keep / META_FILE, keep / meta["model_file"], keep / EXPECTED_FILE,
                              out)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def exports(tmp_path: Path) -> tuple[Path, Path, Path]:
    """``(app folder holding the previous export, previous export, new export)``."""
    old, new = make_export(tmp_path / "old", 10.0), make_export(tmp_path / "new", 20.0)
    out = tmp_path / "assets"
    publish(old, out)
    return out, old, new


def serves(out: Path, keep: Path, tmp_path: Path) -> None:
    """The app folder loads and answers with the model of the export in ``keep``."""
    predictor = Predictor(out)
    assert predictor.sha256 == read_metadata(keep / META_FILE)["sha256"]
    assert predictor.predict_file(_solid(tmp_path / "red.png", (250, 10, 10))).label == "red"


def only_one_export(out: Path, keep: Path) -> None:
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [META_FILE, read_metadata(keep / META_FILE)["model_file"]])


# --- killed at each step ----------------------------------------------------------------------

#: Where the child process dies (os._exit: like kill -9, no finally, no cleanup), and which
#: export the app folder serves afterwards.
KILL_POINTS = {"model staged": "old", "model in place": "old", "metadata switched": "new"}


def publish_and_die(keep: str, out: str, point: str) -> None:
    """Run in a child process: publish the export in ``keep`` to ``out``, dying at ``point``."""
    chmod, write = os.chmod, publishing.write_metadata

    def die_after_chmod(*args: object) -> None:
        chmod(*args)
        os._exit(9)

    def die_at_switch(meta: dict, path: Path) -> Path:
        if point == "metadata switched":
            write(meta, path)
        os._exit(9)

    if point == "model staged":
        publishing.os.chmod = die_after_chmod
    else:
        publishing.write_metadata = die_at_switch
    publish(Path(keep), Path(out))


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_publish_killed_at_any_step_leaves_a_complete_export(exports, tmp_path: Path,
                                                               point: str) -> None:
    out, old, new = exports
    child = subprocess.run(
        [sys.executable, "-c", "import sys; from tests.test_integrity_export import "
         "publish_and_die as f; f(*sys.argv[1:])", str(new), str(out), point],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"),
                                                                      str(ROOT)])},
        capture_output=True, text=True, timeout=120)
    assert child.returncode == 9, child.stderr
    serves(out, old if KILL_POINTS[point] == "old" else new, tmp_path)
    # The next export cleans up whatever the killed one left, staging included.
    publish(new, out)
    only_one_export(out, new)
    serves(out, new, tmp_path)


# --- a full disk, a store that cannot record the export, staging left behind -------------------


@pytest.mark.parametrize(("step", "again"), [
    ("copying the model", False), ("writing the metadata", False),
    # Re-publishing the export the app has: its model file (same name) must survive.
    ("writing the metadata", True)])
def test_a_full_disk_during_publish_leaves_the_previous_export(
        exports, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str,
        again: bool) -> None:
    out, old, new = exports
    before = snapshot(out)

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    if step == "copying the model":
        def half_then_full(src: Path, dst: Path) -> None:
            Path(dst).write_bytes(Path(src).read_bytes()[:100])
            disk_full()

        monkeypatch.setattr(publishing.shutil, "copyfile", half_then_full)
    else:
        monkeypatch.setattr(publishing, "write_metadata", disk_full)
    with pytest.raises(PublishError, match=f"export.out_dir={out}: could not publish the export "
                                          r"\(\[Errno 28\] No space left on device\); the app's "
                                          "previous export there is untouched") as info:
        publish(old if again else new, out)
    assert user_message(info.value) is not None  # scripts/export.py: one line, exit 2
    assert sorted(p.name for p in out.iterdir()) == sorted(before), "nothing added or left"
    assert snapshot(out) == before
    serves(out, old, tmp_path)


def test_staging_a_killed_export_left_is_removed_at_the_next_start(tmp_path: Path,
                                                                  exports) -> None:
    """Even when that next export fails (here: no registered model in the store)."""
    out, old, _ = exports
    (out / ".export-k1ll3d").mkdir()
    (out / ".export-k1ll3d" / "fitness_resnet18-0123456789ab.onnx").write_bytes(b"\0" * 1024)
    (out / f".{META_FILE}.x1y2.tmp").write_text('{"half": ')
    cfg = export_config(f"logger.tracking_uri=sqlite:///{tmp_path}/store/mlflow.db",
                        f"export.out_dir={out}", output_dir=tmp_path / "job")
    with pytest.raises(RegistryError, match="registered model"):
        pipeline.run(cfg)
    only_one_export(out, old)


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """``path`` cannot be written, also by root (immutable attribute); skips where neither
    that nor permissions can stop writes."""
    root = os.geteuid() == 0
    command = ["chattr", "+i", str(path)] if root else ["chmod", "a-w", str(path)]
    if subprocess.run(command, capture_output=True, check=False).returncode != 0:
        pytest.skip(f"cannot make {path} read-only here ({' '.join(command)})")
    try:
        try:
            path.open("ab").close()
        except OSError:
            yield
        else:
            pytest.skip(f"{' '.join(command)} does not stop writes to {path} here")
    finally:
        undo = ["chattr", "-i", str(path)] if root else ["chmod", "u+w", str(path)]
        subprocess.run(undo, check=True)


def test_a_store_that_cannot_record_the_export_publishes_nothing(
        exports, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The reported case: the store's database read-only. The real export stage builds and
    checks the export, then cannot tag the version: the app keeps its previous export."""
    out, old, _ = exports
    db = tmp_path / "mlruns" / "mlflow.db"
    uri = f"sqlite:///{db}"
    register(uri, tiny_model(tmp_path_factory))
    before = snapshot(out)
    cfg = export_config(f"logger.tracking_uri={uri}", f"export.out_dir={out}",
                        f"export.fixtures_dir={fixtures_at(tmp_path / 'fixtures', 32)}",
                        f"export.expected_dir={tmp_path / 'expected'}", "export.other_dir=null",
                        "threshold.target_precision=0.5", output_dir=tmp_path / "job")
    with read_only(db), pytest.raises(
            TrackingStoreError, match=f"logger.tracking_uri={uri}: recording the export on "
                                      "version 1 of 'exercise-classifier' failed .*; nothing was "
                                      f"published, export.out_dir={out} keeps its previous "
                                      "export") as info:
        pipeline.run(cfg)
    assert user_message(info.value) is not None  # scripts/export.py: one line, exit 2
    assert snapshot(out) == before and not (tmp_path / "expected").exists()
    serves(out, old, tmp_path)
    # The complete export waits in the job folder.
    assert (tmp_path / "job" / "export" / META_FILE).is_file()
