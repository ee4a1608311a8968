"""Connecting to the MLflow store: checked up front, experiments created with a known home.

A wrong ``logger.tracking_uri`` must fail before hours of training, not when the first metric is
logged; and a local store must keep its artifacts next to its database, not in whatever directory
a Hydra job happens to run in.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from urllib.parse import urlparse

from filelock import FileLock
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

#: Tracking URIs served by a remote tracking server, which chooses where artifacts go.
SERVER_SCHEMES = ("http", "https", "databricks")
#: How long the up-front check waits for a tracking server before calling it unreachable.
CHECK_TIMEOUT_S = 10


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


def connect(tracking_uri: str, setting: str = "logger.tracking_uri") -> MlflowClient:
    """A client for ``tracking_uri``, after checking that the store answers now.

    A SQLite store's folder is created (a fresh checkout has no ``mlruns/`` database yet), and
    its first use is serialised: MLflow creates and migrates the schema on first connection, and
    two jobs doing that at once break it (alembic "expected to match one row").
    """
    db = sqlite_path(tracking_uri)
    lock = nullcontext()
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
            client = MlflowClient(tracking_uri)
            client.search_experiments(max_results=1)
    except (MlflowException, OSError) as exc:
        hint = ("is `mlflow server` running there? (README: Tracking)" if is_server(tracking_uri)
                else "expected a writable sqlite:///<path>.db")
        raise TrackingStoreError(
            f"{setting}={tracking_uri}: the MLflow tracking store cannot be reached ({exc}); "
            f"{hint}; or train without tracking: logger=csv") from exc
    return client


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
