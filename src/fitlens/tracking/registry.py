"""Registered model versions: log one, promote one (alias), resolve one for export.

Each training run that registers a model logs two forms of the same weights:

- ``bundle/`` (run artifact): the weights-only model bundle of :mod:`fitlens.models.checkpoint`.
  The export stage loads *this*, through :func:`resolve_model`: plain tensors, no unpickling.
- the MLflow model behind the registered version (``models:/exercise-classifier@champion``), for
  the UI, the registry and ``mlflow.pytorch.load_model``. It is saved in MLflow's ``pt2`` format
  (``torch.export``), which also loads without unpickling code, traced with one image: it takes
  a batch of exactly one ``[1, 3, S, S]`` float32 image, as the app sends.

Versions are only ever added: promotion moves an alias and adds tags, nothing is deleted.
"""

from __future__ import annotations

import getpass
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec
from torch import nn

from fitlens.contract import InputSpec
from fitlens.models.checkpoint import BUNDLE_FILES, bundle_digest
from fitlens.tracking.store import connect

log = logging.getLogger(__name__)

#: Run artifact paths: the contract with the export stage.
BUNDLE_ARTIFACT = "bundle"
#: Run tag: :func:`fitlens.models.checkpoint.bundle_digest` of the bundle as it was logged.
BUNDLE_DIGEST_TAG = "bundle_sha256"
SPLIT_ARTIFACT = "split.csv"
#: Out-of-fold predictions of a cross-validated refit (fitlens.crossval): the threshold's photos.
OOF_ARTIFACT = "oof_predictions.csv"
EXPORT_ARTIFACT = "export"
#: Name of the MLflow model inside the run (the registered version's source).
MODEL_NAME = "model"


class RegistryError(LookupError):
    """A model, version, alias or run that is not there or not usable; the message says which."""


@dataclass
class ResolvedModel:
    """One registered version, with its run's bundle and split downloaded to local files."""

    name: str
    version: str
    run_id: str
    #: Local download of the run's ``bundle/`` artifact (load with ``load_bundle``).
    bundle_dir: Path
    #: Local download of the run's ``split.csv`` (None if the run has none).
    split_csv: Path | None
    #: Local download of the run's out-of-fold predictions (None if it was not cross-validated).
    oof_csv: Path | None
    #: The run's final metrics (``test/acc``, ``test/f1_macro``, ...).
    metrics: dict[str, float]


@dataclass
class VersionInfo:
    """A version as a person wants to see it when choosing: number, run and its metrics."""

    version: str
    run_id: str
    run_name: str
    status: str
    metrics: dict[str, float]

    def describe(self, metric: str | None = None) -> str:
        score = f", {metric}={self.metrics[metric]:.4f}" if metric in self.metrics else ""
        return f"version {self.version} (run {self.run_name!r}, {self.run_id}{score})"


@dataclass
class Promotion:
    name: str
    alias: str
    previous: VersionInfo | None
    new: VersionInfo
    reason: str

    @property
    def changed(self) -> bool:
        return self.previous is None or self.previous.version != self.new.version


def log_model(net: nn.Module, spec: InputSpec, example: np.ndarray,
              registered_model: str | None) -> str | None:
    """Log ``net`` as the active run's MLflow model; register it if ``registered_model`` is set.

    Returns the new version number (None when not registered).
    """
    net = net.eval()
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), spec.input_shape)]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (1, spec.num_classes))]))
    info = mlflow.pytorch.log_model(
        net, name=MODEL_NAME, signature=signature, input_example=example,
        registered_model_name=registered_model, serialization_format="pt2",
        # Listed, not inferred: inference re-loads the model in a subprocess for seconds.
        pip_requirements=mlflow.pytorch.get_default_pip_requirements(),
        metadata={"contract": spec.to_dict()})
    version = info.registered_model_version
    return None if version is None else str(version)


def _registered(client: MlflowClient, name: str, uri: str) -> None:
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        known = sorted(m.name for m in client.search_registered_models())
        raise RegistryError(
            f"registered model {name!r} not found in {uri}; registered models: {known or 'none'}"
            " (a training run registers one unless logger.register=false)") from exc


def _version(client: MlflowClient, name: str, version: str | int) -> ModelVersion:
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
        raise RegistryError(
            f"version={version}: model {name!r} has no such version; versions: "
            f"{', '.join(map(str, versions)) or 'none'}") from exc


def _by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        return None


def _info(client: MlflowClient, mv: ModelVersion) -> VersionInfo:
    run = client.get_run(mv.run_id)
    return VersionInfo(version=str(mv.version), run_id=mv.run_id,
                       run_name=run.info.run_name or "", status=run.info.status,
                       metrics=dict(run.data.metrics))


def _verify_bundle(client: MlflowClient, mv: ModelVersion, name: str, bundle: Path) -> None:
    """The downloaded bundle must be the one logged with the version (its run's
    ``bundle_sha256``): run artifacts can be replaced afterwards, by a resumed job before runs
    became immutable or by anyone who can write to the store."""
    where = f"version {mv.version} of {name!r} (run {mv.run_id})"
    recorded = client.get_run(mv.run_id).data.tags.get(BUNDLE_DIGEST_TAG)
    if recorded is None:
        log.warning("%s: no %s tag (logged before fitlens recorded one), so its %s/ cannot be "
                    "checked against what was registered", where, BUNDLE_DIGEST_TAG,
                    BUNDLE_ARTIFACT)
        return
    missing = [f for f in BUNDLE_FILES if not (bundle / f).is_file()]
    actual = None if missing else bundle_digest(bundle)
    if actual != recorded:
        found = f"is missing {missing}" if missing else f"hashes to {actual}"
        raise RegistryError(
            f"{where}: its {BUNDLE_ARTIFACT}/ ({', '.join(BUNDLE_FILES)}) {found}, but the run "
            f"recorded {BUNDLE_DIGEST_TAG}={recorded} when the version was logged: the files were "
            "changed since, so they are not the registered version's; export another version, "
            "or retrain")


def resolve_model(tracking_uri: str, name: str, *, alias: str | None = None,
                  version: str | int | None = None, run_id: str | None = None,
                  dst: Path) -> ResolvedModel:
    """Find one version of ``name`` (by exactly one of alias, version, run id) and download its
    run's bundle and split into ``dst``.

    The bundle, not the MLflow model, is what an export should load: it is weights plus config,
    rebuilt by :func:`fitlens.models.checkpoint.load_bundle` without unpickling anything.
    """
    given = {k: v for k, v in {"alias": alias, "version": version, "run_id": run_id}.items()
             if v is not None}
    if len(given) != 1:
        raise ValueError(f"resolve_model: give exactly one of alias, version, run_id; got "
                         f"{given or 'none'}")
    client = connect(tracking_uri)
    _registered(client, name, tracking_uri)
    if alias is not None:
        mv = _by_alias(client, name, alias)
        if mv is None:
            raise RegistryError(
                f"no version of {name!r} has alias {alias!r}; run scripts/promote.py version=N "
                f"(or best=true) to set it")
    elif version is not None:
        mv = _version(client, name, version)
    else:
        found = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
        if not found:
            raise RegistryError(f"run_id={run_id}: no version of {name!r} comes from this run "
                                "(was it trained with logger.register=false, or did it fail?)")
        mv = max(found, key=lambda v: int(v.version))
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    try:
        bundle = mlflow.artifacts.download_artifacts(
            run_id=mv.run_id, artifact_path=BUNDLE_ARTIFACT, dst_path=str(dst),
            tracking_uri=tracking_uri)
    except (MlflowException, OSError) as exc:
        raise RegistryError(
            f"version {mv.version} of {name!r} (run {mv.run_id}) has no {BUNDLE_ARTIFACT}/ "
            f"artifact; only runs logged by fitlens training carry one") from exc
    _verify_bundle(client, mv, name, Path(bundle))
    names = {Path(a.path).name for a in client.list_artifacts(mv.run_id)}
    split, oof = (
        Path(mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path=artifact,
                                                 dst_path=str(dst), tracking_uri=tracking_uri))
        if artifact in names else None
        for artifact in (SPLIT_ARTIFACT, OOF_ARTIFACT))
    return ResolvedModel(name=name, version=str(mv.version), run_id=mv.run_id,
                         bundle_dir=Path(bundle), split_csv=split, oof_csv=oof,
                         metrics=dict(client.get_run(mv.run_id).data.metrics))


def record_export(tracking_uri: str, resolved: ResolvedModel, files: list[Path],
                  sha256: str) -> None:
    """Attach an export to the version it came from: files under the run's ``export/``, and the
    version tagged with the ONNX file's hash and the time, so an app's model traces back here."""
    client = connect(tracking_uri)
    for path in files:
        client.log_artifact(resolved.run_id, str(path), EXPORT_ARTIFACT)
    client.set_model_version_tag(resolved.name, resolved.version, "exported_onnx_sha256", sha256)
    client.set_model_version_tag(resolved.name, resolved.version, "exported_at", _now())


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _best(client: MlflowClient, name: str, metric: str, mode: str) -> VersionInfo:
    infos = [_info(client, mv) for mv in client.search_model_versions(f"name='{name}'")]
    scored = [i for i in infos if i.status == "FINISHED" and metric in i.metrics]
    if not scored:
        seen = sorted({m for i in infos for m in i.metrics})
        raise RegistryError(f"metric={metric}: no version of {name!r} from a finished run has "
                            f"this metric; metrics seen: {seen or 'none'}")
    sign = 1 if mode == "max" else -1
    # Ties go to the newest version.
    return max(scored, key=lambda i: (sign * i.metrics[metric], int(i.version)))


def promote(tracking_uri: str, name: str, *, version: str | int | None = None,
            best: bool = False, metric: str = "test/f1_macro", mode: str = "max",
            alias: str = "champion", reason: str | None = None) -> Promotion:
    """Point ``alias`` at one version (given, or the best by ``metric``) and record who, when and
    why as tags of that version. Only versions whose run finished can be promoted."""
    if (version is None) == (not best):
        raise ValueError("give either version=N or best=true (not both, not neither)")
    if mode not in ("max", "min"):
        raise ValueError(f"mode={mode!r}: expected 'max' or 'min'")
    client = connect(tracking_uri)
    _registered(client, name, tracking_uri)
    if best:
        new = _best(client, name, metric, mode)
        reason = reason or (f"best {metric}={new.metrics[metric]:.4f} ({mode}) among the "
                            "versions from finished runs")
    else:
        new = _info(client, _version(client, name, version))
        if new.status != "FINISHED":
            raise RegistryError(
                f"version={version}: its run {new.run_id} ended {new.status}, not FINISHED; "
                "only a version from a finished training run can be promoted")
    current = _by_alias(client, name, alias)
    promotion = Promotion(name=name, alias=alias, reason=reason or "(no reason given)",
                          previous=None if current is None else _info(client, current), new=new)
    if not promotion.changed:
        return promotion
    client.set_registered_model_alias(name, alias, new.version)
    for key, value in {"promoted_by": getpass.getuser(), "promoted_at": _now(),
                       "reason": promotion.reason}.items():
        client.set_model_version_tag(name, new.version, f"{alias}.{key}", value)
    return promotion
