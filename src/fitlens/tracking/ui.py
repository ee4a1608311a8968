"""Where a person looks at a run: the MLflow UI link, and what makes the UI open on training.

MLflow 3's UI starts in its GenAI view (traces, prompts). Two things make it show model training
(runs, metric charts, the registry) instead: the experiment tag ``mlflow.experimentKind`` set to
``custom_model_development``, which the UI reads for an experiment's kind, and, in links,
``workflowType=machine_learning``, the query parameter of the UI's GenAI / model-training switch
(both read from the UI bundle of MLflow 3.17, ``mlflow/server/js``).
"""

from __future__ import annotations

from fitlens.tracking.store import is_server, sqlite_path

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
WORKFLOW_QUERY = "workflowType=machine_learning"
#: Where the README's UI command serves a local store.
LOCAL_UI = "http://127.0.0.1:5000"


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The run's page in the UI: on the tracking server itself, or where the README's
    ``mlflow server`` command serves a local SQLite store."""
    base = tracking_uri.rstrip("/") if is_server(tracking_uri) else LOCAL_UI
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?{WORKFLOW_QUERY}"


def ui_command(tracking_uri: str) -> str | None:
    """The command that serves a local store's UI at :data:`LOCAL_UI` (None for a server)."""
    db = sqlite_path(tracking_uri)
    if db is None:
        return None
    return (f"mlflow server --backend-store-uri sqlite:///{db} --host 127.0.0.1 --port 5000")
