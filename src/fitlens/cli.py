"""What every command does around its work: a user's mistake is one message and exit status 2,
never a traceback; anything unexpected keeps its traceback (exit status 1).

A user's mistake is an error whose message already says what to fix: a setting Hydra cannot
compose, a bad value, missing or broken data, weights that cannot be had, a store that does not
answer. ``HYDRA_FULL_ERROR=1`` or ``--verbose`` shows the traceback of those too. A Hydra job that
stops on such a mistake before it produced anything leaves no run folder behind.

Stdlib and Hydra only: an entry script imports this before torch, so a typo costs a second.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig

log = logging.getLogger(__name__)
T = TypeVar("T")

USER_ERROR = 2
UNEXPECTED_ERROR = 1
VERBOSE_FLAG = "--verbose"
#: Hydra's own switch for full tracebacks; ``--verbose`` sets it.
FULL_ERROR_ENV = "HYDRA_FULL_ERROR"
#: Error classes whose message says what to fix, by module and name. They are looked up only
#: in modules already imported (an error cannot be of a class nobody imported), so classifying
#: an error never imports torch or mlflow.
USER_ERROR_CLASSES = (
    ("fitlens.models.backbones", "PretrainedWeightsUnavailable"),
    ("fitlens.tracking.store", "TrackingStoreError"),
    ("fitlens.tracking.registry", "RegistryError"),
    ("fitlens.export.onnx", "ExportError"),
    ("fitlens.export.publish", "PublishError"),
    ("fitlens.export.threshold", "ThresholdError"),
    # Lightning's "your settings do not work" (a monitor that is never logged, devices=3 on CPU).
    ("lightning_fabric.utilities.exceptions", "MisconfigurationException"),
)
#: Built-in error types that are a user's mistake when fitlens code raised them on purpose
#: (``ValueError`` naming a setting, ``FileNotFoundError`` naming a path). The same types raised
#: inside a library are surprises and keep their traceback; so does a ``KeyError``, which in our
#: code is a bug, not a message.
RAISED_BY_FITLENS = (ValueError, FileNotFoundError, NotADirectoryError)
#: What Hydra writes into a job folder before the job runs: a folder holding only these was left
#: by a job that stopped before it made anything.
HYDRA_FILES = (".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml")

_FITLENS_DIR = Path(__file__).resolve().parent
_task_started = False
_user_error = False


class SweepJobError(CompactHydraException):
    """A sweep job stopped by a user's mistake. Hydra records the job as failed (the sweep's
    MLflow parent run ends FAILED), runs the other jobs, then prints this message, compactly
    (it prints no traceback for a ``CompactHydraException``)."""


def _raised_in_fitlens(exc: BaseException) -> bool:
    tb: TracebackType | None = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(_FITLENS_DIR)


def _known_classes() -> tuple[type[BaseException], ...]:
    found = []
    for module, name in USER_ERROR_CLASSES:
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type):
            found.append(cls)
    return tuple(found)


def user_message(exc: BaseException) -> str | None:
    """The message to show for a user's mistake, or None for an unexpected error.

    Hydra wraps what a config's ``_target_`` raises in ``InstantiationException`` (with the
    cause's ``repr``, so a multi-line message shows literal ``\\n``); the cause is judged and shown.
    """
    if isinstance(exc, InstantiationException):
        if exc.__cause__ is not None and not isinstance(exc.__cause__, ImportError):
            return user_message(exc.__cause__)
        return str(exc)  # "Error locating target 'x'": a _target_ that does not exist
    if isinstance(exc, _known_classes()):
        return str(exc)
    if isinstance(exc, RAISED_BY_FITLENS) and _raised_in_fitlens(exc):
        return str(exc)
    return None


def verbose() -> bool:
    return os.environ.get(FULL_ERROR_ENV) == "1"


def remove_if_unused(folder: str | Path) -> bool:
    """Delete a job folder that holds nothing but what Hydra put there (its config copies and the
    job's log); never the working directory, never anything else. True if it was removed."""
    folder = Path(folder)
    if not folder.is_dir() or folder.resolve() == Path.cwd().resolve():
        return False
    logs = {p.relative_to(folder).as_posix() for p in folder.glob("*.log")}
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*")}
    if not present <= set(HYDRA_FILES) | {".hydra"} | logs:
        return False
    for name in sorted(present, key=len, reverse=True):  # files before their folder
        path = folder / name
        path.rmdir() if path.is_dir() else path.unlink()
    folder.rmdir()
    return True


@contextmanager
def reported() -> Iterator[None]:
    """Around a Hydra task (:func:`task`): a user's mistake is logged as one ``error:`` line, the
    job's folder is removed if the job made nothing, and the process exits with status 2 (a
    sweep's job fails instead, and the sweep exits with status 2 when it ends). Anything else
    propagates to Hydra, which prints its traceback."""
    global _task_started, _user_error
    _task_started = True
    try:
        yield
    except SystemExit as exc:
        # A task that reports its own expected errors and exits with status 2 (export, promote).
        if exc.code == USER_ERROR and HydraConfig.initialized():
            remove_if_unused(HydraConfig.get().runtime.output_dir)
        raise
    except Exception as exc:
        message = user_message(exc)
        if message is None or verbose():
            raise
        log.error("%s", message)
        sweep = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
        if HydraConfig.initialized():
            remove_if_unused(HydraConfig.get().runtime.output_dir)
        _user_error = True
        if sweep:
            raise SweepJobError(f"error: sweep job {HydraConfig.get().job.num} stopped: "
                                f"{message}") from None
        raise SystemExit(USER_ERROR) from None


def task(function: Callable[[DictConfig], T]) -> Callable[[DictConfig], T]:
    """Put under ``@hydra.main``: the task runs inside :func:`reported`. (Hydra finds the task's
    file, for ``config_path``, through ``functools.wraps``'s ``__wrapped__``.)"""

    @functools.wraps(function)
    def reporting(cfg: DictConfig) -> T:
        with reported():
            return function(cfg)

    return reporting


def main(hydra_main: Callable[[], Any], argv: list[str]) -> int:
    """Run a ``@hydra.main`` function as a command and return its exit status.

    ``--verbose`` is taken out of ``argv`` (Hydra would reject it) and turns on full tracebacks.
    Hydra reports a setting it cannot compose (``optimzer.lr=...``, ``model=resnet19``) in one
    message with exit status 1, before the task runs; that is a user's mistake, so it becomes 2,
    as does a sweep that ended on a job's :class:`SweepJobError`. A ``SystemExit`` carrying a
    message (a sweep that cannot start) is printed and gives 2.
    """
    global _task_started, _user_error
    _task_started = _user_error = False
    if VERBOSE_FLAG in argv:
        argv.remove(VERBOSE_FLAG)
        os.environ[FULL_ERROR_ENV] = "1"
    try:
        hydra_main()
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            return USER_ERROR
        if exc.code == UNEXPECTED_ERROR and (_user_error or not _task_started):
            return USER_ERROR
        return 0 if exc.code is None else int(exc.code)
    return 0
