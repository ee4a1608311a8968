"""What ``scripts/evaluate.py`` needs from MLflow: a run's split and exported threshold, and a
place on the run for the evaluation's files and scores."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path

import mlflow
from mlflow.entities import Metric

from fitlens.tracking.registry import EXPORT_ARTIFACT, SPLIT_ARTIFACT
from fitlens.tracking.store import connect

#: Where an evaluation's files go on the run: eval/<the evaluation folder's name>/.
EVAL_ARTIFACT = "eval"
META_FILE = "model_meta.json"


def _download(tracking_uri: str, run_id: str, artifact: str, dst: Path) -> Path | None:
    client = connect(tracking_uri)
    folder, _, name = artifact.rpartition("/")
    if name not in {Path(a.path).name for a in client.list_artifacts(run_id, folder or None)}:
        return None
    dst.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact,
                                                    dst_path=str(dst),
                                                    tracking_uri=tracking_uri))


def run_split(tracking_uri: str, run_id: str, dst: Path) -> Path | None:
    """The run's ``split.csv`` (None if it has none)."""
    return _download(tracking_uri, run_id, SPLIT_ARTIFACT, dst)


def exported_threshold(tracking_uri: str, run_id: str, dst: Path) -> float | None:
    """The "not sure" threshold the run's model was exported with (None if it was never
    exported, or its recorded metadata has no usable threshold)."""
    meta = _download(tracking_uri, run_id, f"{EXPORT_ARTIFACT}/{META_FILE}", dst)
    if meta is None:
        return None
    try:
        threshold = json.loads(meta.read_text(encoding="utf-8")).get("threshold")
    except (ValueError, AttributeError):
        return None
    if isinstance(threshold, int | float) and 0 <= threshold <= 1:
        return float(threshold)
    return None


def log_evaluation(tracking_uri: str, run_id: str, folder: Path,
                   metrics: Mapping[str, float]) -> str:
    """The evaluation folder's files under ``eval/<folder name>/`` and its scores as
    ``eval/<score>`` metrics (each evaluation adds a point to their history). Returns the
    artifact path."""
    client = connect(tracking_uri)
    path = f"{EVAL_ARTIFACT}/{folder.name}"
    client.log_artifacts(run_id, str(folder), path)
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(f"{EVAL_ARTIFACT}/{k}", float(v), now, 0)
                                      for k, v in metrics.items()])
    return path
