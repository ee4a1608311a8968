"""A user's mistake is one message and exit status 2, with no traceback and no empty run folder;
an unexpected error keeps its traceback. Through the real entry point, ``train.py``.

Most cases run the entry point in this process (``runpy``, as ``python train.py`` runs it), so
torch and MLflow are imported once for the whole catalogue; the subprocess tests check what only
a fresh process shows (how fast a bad value fails, ``--verbose``).
"""

from __future__ import annotations

import logging
import os
import runpy
import socket
import subprocess
import sys
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch.hub
from hydra.core.global_hydra import GlobalHydra

from fitlens.cli import user_message
from fitlens.config import validate_config
from tests.conftest import ROOT, TINY, compose_config


@dataclass
class Ran:
    code: int
    out: str
    err: str


def run_entry(script: str, args: list[str], monkeypatch: pytest.MonkeyPatch,
              capsys: pytest.CaptureFixture[str]) -> Ran:
    """``python <script> <args>`` in this process: the real entry point, its exit status and
    what it printed. What a process would take with it when it ends is undone afterwards:
    Hydra's logging setup, and environment variables (a sweep hands its MLflow parent run to
    its jobs in one)."""
    path = ROOT / script
    monkeypatch.setattr(sys, "argv", [str(path), *args])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    environment = dict(os.environ)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    GlobalHydra.instance().clear()
    code = 0
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
        GlobalHydra.instance().clear()
        os.environ.clear()
        os.environ.update(environment)
    captured = capsys.readouterr()
    return Ran(code, captured.out, captured.err)


def _tiny(*extra: str, drop: tuple[str, ...] = ()) -> list[str]:
    return [o for o in TINY if not o.startswith(drop)] + list(extra)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _broken_data(root: Path, case: str) -> Path:
    """A copy of the tiny photo set with one thing wrong."""
    if case == "unknown folder":
        (root / "zumba").mkdir()
        (root / "zumba" / "a.jpg").write_bytes((next(root.rglob("*.jpg"))).read_bytes())
    elif case == "empty class":
        for f in (root / "squats").iterdir():
            f.unlink()
    elif case == "broken photo":
        (root / "squats" / "fedb__squats_v0__0.jpg").write_bytes(b"\xff\xd8 not a photo")
    return root


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One MLflow store for the catalogue: creating a SQLite store's schema takes seconds."""
    return f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db"


#: The README's catalogue of bad input: (case, overrides built from tmp/photos, message).
CATALOGUE = [
    ("override typo", lambda t, p: _tiny("optimzer.lr=1e-4"), "Could not override 'optimzer.lr'"),
    ("unknown model", lambda t, p: _tiny("model=resnet19", drop=("model",)),
     "Could not find 'model/resnet19'"),
    ("negative lr", lambda t, p: _tiny(f"data.root={p}", "optimizer.lr=-0.1"),
     "optimizer.lr=-0.1: expected > 0"),
    ("zero batch", lambda t, p: _tiny(f"data.root={p}", "data.batch_size=0"),
     "data.batch_size=0: expected an integer >= 1"),
    ("on_bad_file typo", lambda t, p: _tiny(f"data.root={p}", "data.on_bad_file=ignore"),
     "data.on_bad_file='ignore': expected 'error' or 'skip'"),
    ("missing data root", lambda t, p: _tiny(f"data.root={t}/nowhere"), "folder does not exist"),
    ("unknown folder", lambda t, p: _tiny(f"data.root={_broken_data(p, 'unknown folder')}"),
     "folder(s) ['zumba'] are not in data.classes"),
    ("empty class", lambda t, p: _tiny(f"data.root={_broken_data(p, 'empty class')}"),
     "class folder has no images"),
    ("broken photo", lambda t, p: _tiny(f"data.root={_broken_data(p, 'broken photo')}"),
     "1 unreadable image(s)"),
    ("missing weights file", lambda t, p: _tiny(f"data.root={p}",
                                                f"model.backbone.weights_path={t}/none.pth"),
     "none.pth: file not found"),
    ("resnet18 offline", lambda t, p: _tiny(f"data.root={p}", "model=resnet18",
                                            "model.backbone.pretrained=true",
                                            drop=("model",)),
     "model=mobilenet_v2 or model=efficientnet_lite0"),
    ("store unreachable", lambda t, p: _tiny(f"data.root={p}", "logger.tracking_uri="
                                             f"http://127.0.0.1:{_closed_port()}"),
     "the MLflow tracking store cannot be reached"),
    ("damaged checkpoint", lambda t, p: _tiny(f"data.root={p}", f"ckpt_path={t}/last.ckpt"),
     "not a loadable PyTorch checkpoint"),
]


@pytest.mark.parametrize(("case", "overrides", "message"), CATALOGUE,
                         ids=[c[0] for c in CATALOGUE])
def test_bad_input_is_one_message_and_exit_status_2(
        case: str, overrides, message: str, tmp_path: Path, image_root: Path,
        shared_store: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FITLENS_ROOT", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", shared_store)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no cached ImageNet weights

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no internet (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    (tmp_path / "last.ckpt").write_bytes(b"version https://git-lfs.github.com/spec/v1\n")

    ran = run_entry("train.py", overrides(tmp_path, image_root), monkeypatch, capsys)

    assert ran.code == 2, ran.out + ran.err
    assert message in ran.err, ran.err
    assert "Traceback" not in ran.out + ran.err and "\\n" not in ran.err
    errors = [line for line in ran.err.splitlines() if line.startswith("error:")]
    assert len(errors) <= 1 and ran.err.count(message) == 1, ran.err
    runs = tmp_path / "outputs" / "runs"
    assert not runs.exists() or not any(runs.iterdir()), "a run folder was left behind"


class Boom(pl.Callback):
    """A bug, not a user's mistake."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        raise RuntimeError("boom: a bug in the code")


def test_an_unexpected_error_keeps_its_traceback_and_run_folder(
        tmp_path: Path, image_root: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FITLENS_ROOT", str(tmp_path))
    ran = run_entry("train.py", _tiny(f"data.root={image_root}", "logger=csv",
                                      f"+callbacks.boom._target_={__name__}.Boom"),
                    monkeypatch, capsys)
    assert ran.code == 1
    assert "Traceback" in ran.err and "RuntimeError: boom: a bug in the code" in ran.err
    assert list((tmp_path / "outputs" / "runs").iterdir()), "kept for the post-mortem"


def _subprocess(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "FITLENS_ROOT": str(cwd), "HYDRA_FULL_ERROR": "0",
               "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), **env}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=environ, capture_output=True,
                          text=True, timeout=300)


def test_a_bad_value_fails_before_torch_and_mlflow_are_imported(tmp_path: Path) -> None:
    done = _subprocess(["-X", "importtime", str(ROOT / "train.py"), "optimizer.lr=-0.1"],
                       tmp_path)
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    message = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert done.returncode == 2
    assert message == ["error: optimizer.lr=-0.1: expected > 0 and finite"]
    assert not {"torch", "mlflow", "pytorch_lightning"} & imported
    assert not (tmp_path / "outputs" / "runs").exists() or \
        not any((tmp_path / "outputs" / "runs").iterdir())


@pytest.mark.parametrize("how", ["--verbose", "HYDRA_FULL_ERROR=1"])
def test_verbose_shows_the_traceback(how: str, tmp_path: Path) -> None:
    args = [str(ROOT / "train.py"), "optimizer.lr=-0.1"]
    done = (_subprocess([*args, how], tmp_path) if how.startswith("--")
            else _subprocess(args, tmp_path, HYDRA_FULL_ERROR="1"))
    assert done.returncode != 0
    assert "Traceback" in done.stderr
    assert "ValueError: optimizer.lr=-0.1: expected > 0" in done.stderr


def test_a_sweep_whose_jobs_stop_on_a_bad_value_exits_with_status_2(
        tmp_path: Path, image_root: Path, tracking_uri: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FITLENS_ROOT", str(tmp_path))
    ran = run_entry("train.py", ["-m", *_tiny(f"data.root={image_root}"),
                                 "optimizer.lr=-0.1,-0.2"], monkeypatch, capsys)
    assert ran.code == 2, ran.out + ran.err
    assert "Traceback" not in ran.out + ran.err
    assert "error: optimizer.lr=-0.1: expected > 0" in ran.err
    assert "error: optimizer.lr=-0.2: expected > 0" in ran.err, "every job ran and said why"
    assert "sweep job 0 stopped: optimizer.lr=-0.1" in ran.err
    (sweep,) = (tmp_path / "outputs" / "multiruns").iterdir()
    assert not [p for p in sweep.iterdir() if p.is_dir()], "no empty job folders"


def test_only_errors_raised_on_purpose_count_as_the_users(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as ours:
        validate_config(compose_config(["optimizer.lr=-1"], output_dir=tmp_path))
    assert user_message(ours.value) == "optimizer.lr=-1: expected > 0 and finite"
    with pytest.raises(ValueError) as library:
        int("twelve")  # the same type from Python itself, not from fitlens: a bug somewhere
    assert user_message(library.value) is None
    with pytest.raises(KeyError) as lookup:
        {}["threshold"]
    assert user_message(lookup.value) is None
