"""Connecting to the MLflow store: checked up front, experiments created with a known home.

A wrong ``logger.tracking_uri`` must fail before hours of training, not when the first metric is
logged; a local store must keep its artifacts next to its database, not in whatever directory
a Hydra job happens to run in; an empty or damaged database is an error, never replaced by a new
empty store; and a server that stops answering mid-training fails the job within a bounded time
(:data:`HTTP_BOUNDS`, :func:`lost_store`) instead of retrying for many minutes.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager, nullcontext
from pathlib import Path
from urllib.parse import urlparse

from filelock import FileLock
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

#: Tracking URIs served by a remote tracking server, which chooses where artifacts go.
SERVER_SCHEMES = ("http", "https", "databricks")
#: How long the up-front check waits for a tracking server before calling it unreachable.
CHECK_TIMEOUT_S = 10
#: Bounds on every request to a tracking server, as MLflow's own settings (a value already in
#: the environment wins). MLflow's defaults (7 retries, backoff factor 2, 120 s timeout) keep a
#: job whose server died retrying for minutes per request; these give up after about 10 s when
#: the server is down and about 2 minutes when it hangs. A request that fails ends the run's job
#: (:func:`lost_store`), and its last checkpoint resumes it.
HTTP_BOUNDS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
               "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
#: The first bytes of every SQLite 3 database file.
SQLITE_HEADER = b"SQLite format 3\x00"


class TrackingStoreError(RuntimeError):
    """The tracking store cannot be used; the message names the setting to fix."""


def is_server(tracking_uri: str) -> bool:
    return urlparse(tracking_uri).scheme in SERVER_SCHEMES


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///...`` URI (None for other stores)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///"))


@contextmanager
def _fail_fast_http() -> Iterator[None]:
    """MLflow retries a dead server with backoff for minutes; the reachability check must not."""
    settings = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": str(CHECK_TIMEOUT_S)}
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _check_sqlite_file(db: Path, tracking_uri: str, setting: str) -> None:
    """An existing database file must be a sound SQLite database. MLflow would silently create
    a new, empty store in a 0-byte file (losing every run and version for good), and fail on a
    damaged one with a raw SQLAlchemy traceback at some later query."""
    if not db.exists():
        return  # a new store: MLflow creates it
    fix = ("restore it from a backup, or move it away to start a new, empty store; expected "
           "the mlflow.db of an MLflow SQLite store")
    where = f"{setting}={tracking_uri}: {db}"
    try:
        with db.open("rb") as fh:
            header = fh.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise TrackingStoreError(f"{where}: cannot be read ({exc.strerror or exc})") from exc
    if not header:
        raise TrackingStoreError(f"{where}: the database file is empty (0 bytes); {fix}")
    if header != SQLITE_HEADER:
        raise TrackingStoreError(f"{where}: not an SQLite database (damaged or another kind of "
                                 f"file); {fix}")
    try:
        with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
    except sqlite3.DatabaseError as exc:
        raise TrackingStoreError(f"{where}: damaged SQLite database ({exc}); {fix}") from exc
    if problems != ["ok"]:
        found = " ".join(problems[:3]).replace("\n", " ")
        raise TrackingStoreError(f"{where}: damaged SQLite database ({found}); {fix}")


def connect(tracking_uri: str, setting: str = "logger.tracking_uri") -> MlflowClient:
    """A client for ``tracking_uri``, after checking that the store answers now.

    A SQLite store's folder is created (a fresh checkout has no ``mlruns/`` database yet), an
    existing database file is checked (:func:`_check_sqlite_file`), and its first use is
    serialised: MLflow creates and migrates the schema on first connection, and two jobs doing
    that at once break it (alembic "expected to match one row"). A tracking server's requests
    get :data:`HTTP_BOUNDS`.
    """
    db = sqlite_path(tracking_uri)
    lock = nullcontext()
    if is_server(tracking_uri):
        for key, value in HTTP_BOUNDS.items():
            os.environ.setdefault(key, value)
    if db is not None:
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingStoreError(
                f"{setting}={tracking_uri}: cannot create the store's folder {db.parent} "
                f"({exc.strerror or exc})") from exc
        lock = FileLock(f"{db}.lock")
    try:
        with lock, _fail_fast_http():
            if db is not None:
                _check_sqlite_file(db, tracking_uri, setting)
            client = MlflowClient(tracking_uri)
            client.search_experiments(max_results=1)
    except (MlflowException, OSError) as exc:
        hint = ("is `mlflow server` running there? (README: Tracking)" if is_server(tracking_uri)
                else "expected a writable sqlite:///<path>.db")
        raise TrackingStoreError(
            f"{setting}={tracking_uri}: the MLflow tracking store cannot be reached ({exc}); "
            f"{hint}; or train without tracking: logger=csv") from exc
    return client


@contextmanager
def store_errors(tracking_uri: str, doing: str, consequence: str = "") -> Iterator[None]:
    """MLflow's and the file system's errors while ``doing`` something in the store, as one
    :class:`TrackingStoreError` naming the store, for callers outside ``tracking/`` (which do
    not import mlflow): a read-only or full store is a message, not a traceback."""
    try:
        yield
    except (MlflowException, OSError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TrackingStoreError(f"logger.tracking_uri={tracking_uri}: {doing} failed "
                                 f"({reason}){consequence}") from exc


def lost_store(tracking_uri: str, run_id: str, error: Exception,
               checkpoint: str | None) -> TrackingStoreError | None:
    """The error to stop a job with when a store request failed mid-run and the store no longer
    answers (None: it does, so ``error`` is some other problem). The run cannot be ended in a
    store that is gone: it stays RUNNING there, which is what lets ``ckpt_path=`` continue it."""
    try:
        with _fail_fast_http():
            MlflowClient(tracking_uri).search_experiments(max_results=1)
    except (MlflowException, OSError):
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        resume = (f"the last checkpoint is {checkpoint}: when the store is back, resume with the "
                  f"same command plus ckpt_path={checkpoint}" if checkpoint
                  else "no checkpoint was saved yet")
        return TrackingStoreError(
            f"logger.tracking_uri={tracking_uri}: the MLflow tracking store stopped answering "
            f"during run {run_id} ({reason}); the run stays RUNNING there; {resume} (or train "
            "without tracking: logger=csv)")
    return None


def default_artifact_location(tracking_uri: str, artifact_location: str | None,
                              experiment_name: str) -> str | None:
    """Where a new experiment keeps its artifacts, as a URI (None: the store's default).

    A tracking server decides for itself (``--artifacts-destination``), so nothing is sent to it.
    A SQLite store keeps them in ``artifacts/<experiment>/`` next to the database unless
    configured, so the store is one folder whatever the working directory.
    """
    if is_server(tracking_uri):
        return None
    if artifact_location:
        return Path(artifact_location).resolve().as_uri()
    db = sqlite_path(tracking_uri)
    if db is None:
        return None
    return (db.parent.resolve() / "artifacts" / experiment_name).as_uri()


def experiment_id(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """The id of experiment ``name``, created (with ``artifact_location``) if it is new, and
    tagged as model training so the MLflow UI opens on it (:mod:`fitlens.tracking.ui`).

    An existing experiment keeps its own artifact location: moving it would orphan old runs.
    """
    from fitlens.tracking.ui import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage != "active":
            raise TrackingStoreError(
                f"logger.experiment_name={name}: the experiment is deleted in this store; "
                "restore it in the MLflow UI or choose another name")
        if EXPERIMENT_KIND_TAG not in experiment.tags:  # made before the tag existed
            client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG,
                                      EXPERIMENT_KIND)
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location,
                                        tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    except MlflowException:
        # Another job of a parallel sweep created it first.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id
