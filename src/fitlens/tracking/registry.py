"""Registered model versions: log one, promote one (alias), resolve one for export.

Each training run that registers a model logs two forms of the same weights:

- ``bundle/`` (run artifact): the weights-only model bundle of :mod:`fitlens.models.checkpoint`.
  The export stage loads *this*, through :func:`resolve_model`: plain tensors, no unpickling.
- the MLflow model behind the registered version (``models:/exercise-classifier@champion``), for
  the UI, the registry and ``mlflow.pytorch.load_model``. It is saved in MLflow's ``pt2`` format
  (``torch.export``), which also loads without unpickling code, traced with one image: it takes
  a batch of exactly one ``[1, 3, S, S]`` float32 image, as the app sends.

Versions are only ever added: promotion moves an alias and adds tags, nothing is deleted.

Choosing is kept honest: ``promote(best=True)`` ranks by a selection metric (out-of-fold, else
validation), never by a test metric, and only among versions with the same classes and data as
the current champion; a ``-m`` sweep registers only its best job (``logger.register``).
"""

from __future__ import annotations

import getpass
import json
import logging
import math
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
#: Tag on a job's top run naming the run that holds its MLflow model: the run itself for a
#: plain job, the refit for a cross-validation job. A sweep registers its best job through it.
MODEL_RUN_TAG = "fitlens.model_run_id"
#: Run tags that make two versions comparable: the model's outputs in order (JSON list, the
#: reject class included) and the photos it learned from (fitlens.tracking.provenance).
CLASSES_TAG = "classes"
FINGERPRINT_TAG = "data_fingerprint"
#: What ``promote(best=True)`` ranks by, first choice first: out-of-fold macro-F1 scores every
#: photo with a model that never saw its exercise variant; the best validation epoch's is the
#: stand-in of a run without cross-validation. Versions are ranked by one they all carry.
SELECTION_METRICS = ("oof/f1_macro", "best_val/f1_macro")
#: Shown beside the selection metric for information, never used to choose.
REPORTED_METRIC = "test/f1_macro"
#: ``logger.register``: ``best`` registers a single job's model, and only the best job's of a
#: ``-m`` sweep (chosen when the sweep ends); ``all`` every job's; ``none`` nothing.
REGISTER_MODES = ("best", "all", "none")


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
    """A version as a person wants to see it when choosing: number, run, metrics, and what makes
    it comparable with another (None when its run did not record it)."""

    version: str
    run_id: str
    run_name: str
    status: str
    metrics: dict[str, float]
    classes: tuple[str, ...] | None = None
    data_fingerprint: str | None = None

    def describe(self, metric: str | None = None) -> str:
        """Number, run and scores: ``metric`` (default: the first selection metric the version
        has) and, for information, the test metric."""
        metric = metric or next((m for m in SELECTION_METRICS if m in self.metrics), None)
        scores = "".join(f", {m}={self.metrics[m]:.4f}" for m in dict.fromkeys(
            (metric, REPORTED_METRIC)) if m in self.metrics)
        return f"version {self.version} (run {self.run_name!r}, {self.run_id}{scores})"


@dataclass
class Selection:
    """What ``promote(best=True)`` compared: the versions with the classes and data of the
    reference (the alias's holder, else the newest version), best first, and every other
    version with the reason it was left out."""

    reference: VersionInfo
    #: Why the reference is the reference: the alias's name, or "newest version".
    reference_role: str
    metric: str
    mode: str
    compared: list[VersionInfo]
    excluded: list[tuple[VersionInfo, str]]

    @property
    def chosen(self) -> VersionInfo:
        return self.compared[0]

    @property
    def against(self) -> str:
        """The reference in words: ``version 3 (the champion)``."""
        return f"version {self.reference.version} (the {self.reference_role})"


@dataclass
class Promotion:
    name: str
    alias: str
    previous: VersionInfo | None
    new: VersionInfo
    reason: str
    #: What was compared (``best=True`` only).
    selection: Selection | None = None

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
            " (a training run registers one unless logger.register=none)") from exc


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
    classes = run.data.tags.get(CLASSES_TAG)
    return VersionInfo(version=str(mv.version), run_id=mv.run_id,
                       run_name=run.info.run_name or "", status=run.info.status,
                       metrics=dict(run.data.metrics),
                       classes=None if classes is None else tuple(json.loads(classes)),
                       data_fingerprint=run.data.tags.get(FINGERPRINT_TAG))


def version_from_run(client: MlflowClient, name: str, run_id: str) -> ModelVersion | None:
    """The newest version of ``name`` registered from ``run_id`` (None: none was)."""
    found = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    return max(found, key=lambda v: int(v.version)) if found else None


def register_mode(value: object) -> str:
    """``logger.register`` as one of :data:`REGISTER_MODES`. ``true``/``false``, its values
    before sweeps registered only their best, still mean ``all``/``none``."""
    if isinstance(value, bool):
        return "all" if value else "none"
    if isinstance(value, str) and value.lower() in REGISTER_MODES:
        return value.lower()
    raise ValueError(f"logger.register={value!r}: expected best (a single job registers its "
                     "model, a -m sweep only its best job's), all (every job) or none")


def registers_itself(value: object, in_sweep: bool) -> bool:
    """Whether a job registers its own model under ``logger.register=value``: with ``best`` a
    sweep's job does not; the sweep registers the best one when it ends."""
    mode = register_mode(value)
    return mode == "all" or (mode == "best" and not in_sweep)


def register_run_model(tracking_uri: str, name: str, run_id: str) -> str:
    """Register the MLflow model that run ``run_id`` logged as a new version of ``name``, the
    version a job registering itself would have made; returns the version number."""
    client = connect(tracking_uri)
    outputs = client.get_run(run_id).outputs
    logged = [client.get_logged_model(o.model_id) for o in (outputs.model_outputs if outputs
                                                             else [])]
    model = next((m for m in reversed(logged) if m.name == MODEL_NAME), None)
    if model is None:
        raise RegistryError(f"run {run_id} logged no MLflow model {MODEL_NAME!r}, so there is "
                            f"nothing to register as a version of {name!r}")
    mlflow.set_tracking_uri(tracking_uri)
    return str(mlflow.register_model(f"models:/{model.model_id}", name).version)


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
        mv = version_from_run(client, name, run_id)
        if mv is None:
            raise RegistryError(f"run_id={run_id}: no version of {name!r} comes from this run "
                                "(was it trained with logger.register=none, or did it fail?)")
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


def check_selection_metric(metric: str | None) -> None:
    """Refuse to choose by a test metric: the best of several versions by test score has an
    optimistic test score, and nothing is left that tested the choice."""
    if metric is not None and metric.startswith("test/"):
        raise ValueError(
            f"metric={metric}: test metrics are reported, never used to choose (the best of "
            "several versions by test score has an optimistic test score, and no held-out "
            f"photos are left to test the choice); rank by {' or '.join(SELECTION_METRICS)} "
            "(the default, metric=null), or read the test scores and promote version=N")


def _left_out(info: VersionInfo, reference: VersionInfo) -> str | None:
    """Why ``info`` cannot be ranked against ``reference`` (None: it can)."""
    if info.classes is None or info.data_fingerprint is None:
        return (f"its run records no {CLASSES_TAG}/{FINGERPRINT_TAG} tags (registered before "
                "they were recorded, or not by fitlens training)")
    if info.classes != reference.classes:
        return f"other classes {list(info.classes)}"
    if info.data_fingerprint != reference.data_fingerprint:
        return f"other data ({FINGERPRINT_TAG} {info.data_fingerprint})"
    if info.status != "FINISHED":
        return f"its run ended {info.status}"
    return None


def _shared_metric(candidates: list[VersionInfo]) -> str:
    """The first selection metric every candidate carries: out-of-fold and single-split scores
    measure different things and are never ranked against each other."""
    for metric in SELECTION_METRICS:
        if all(metric in c.metrics for c in candidates):
            return metric
    carried = "; ".join(
        f"{m}: versions {', '.join(c.version for c in candidates if m in c.metrics) or 'none'}"
        for m in SELECTION_METRICS)
    raise RegistryError(
        f"no selection metric is carried by all {len(candidates)} comparable versions, so they "
        f"cannot be ranked like with like ({carried}); rank the versions that have one with "
        f"metric={SELECTION_METRICS[0]} (or metric={SELECTION_METRICS[1]}), or promote version=N")


def select_best(infos: list[VersionInfo], reference: VersionInfo, reference_role: str,
                metric: str | None = None, mode: str = "max") -> Selection:
    """Rank the versions comparable with ``reference`` (same classes and data fingerprint, run
    FINISHED, a finite ``metric``) by ``metric``, default the first of
    :data:`SELECTION_METRICS` that all of them carry. Ties go to the newest version."""
    check_selection_metric(metric)
    if reference.classes is None or reference.data_fingerprint is None:
        raise RegistryError(
            f"version {reference.version} (the {reference_role}): its run records no "
            f"{CLASSES_TAG}/{FINGERPRINT_TAG} tags, so no version can be compared with it; "
            "promote a version trained since with version=N, then best=true compares with it")
    excluded: list[tuple[VersionInfo, str]] = []
    candidates = []
    for info in sorted(infos, key=lambda i: int(i.version)):
        reason = _left_out(info, reference)
        if reason:
            excluded.append((info, reason))
        else:
            candidates.append(info)
    if not candidates:
        raise RegistryError(
            f"no version with the classes and data of version {reference.version} (the "
            f"{reference_role}) comes from a finished run: "
            + "; ".join(f"version {i.version}: {why}" for i, why in excluded))
    metric = metric or _shared_metric(candidates)
    scored = []
    for info in candidates:
        value = info.metrics.get(metric)
        if value is None:
            excluded.append((info, f"has no {metric}"))
        elif not math.isfinite(value):
            excluded.append((info, f"{metric} is {value}"))
        else:
            scored.append(info)
    if not scored:
        seen = sorted({m for i in candidates for m in i.metrics})
        raise RegistryError(f"metric={metric}: no comparable version has a finite value of it; "
                            f"metrics seen: {seen or 'none'}")
    sign = 1 if mode == "max" else -1
    scored.sort(key=lambda i: (sign * i.metrics[metric], int(i.version)), reverse=True)
    excluded.sort(key=lambda pair: int(pair[0].version))
    return Selection(reference=reference, reference_role=reference_role, metric=metric,
                     mode=mode, compared=scored, excluded=excluded)


def promote(tracking_uri: str, name: str, *, version: str | int | None = None,
            best: bool = False, metric: str | None = None, mode: str = "max",
            alias: str = "champion", reason: str | None = None) -> Promotion:
    """Point ``alias`` at one version (given, or the best by :func:`select_best`) and record
    who, when and why as tags of that version. Only versions whose run finished can be
    promoted."""
    if (version is None) == (not best):
        raise ValueError("give either version=N or best=true (not both, not neither)")
    if mode not in ("max", "min"):
        raise ValueError(f"mode={mode!r}: expected 'max' or 'min'")
    if best:
        check_selection_metric(metric)
        if metric is None and mode != "max":
            raise ValueError(f"mode={mode}: the default selection metrics "
                             f"({', '.join(SELECTION_METRICS)}) are better when higher; give "
                             "the metric to minimise too (metric=...)")
    client = connect(tracking_uri)
    _registered(client, name, tracking_uri)
    current = _by_alias(client, name, alias)
    previous = None if current is None else _info(client, current)
    selection = None
    if best:
        infos = [_info(client, mv) for mv in client.search_model_versions(f"name='{name}'")]
        if not infos:
            raise RegistryError(f"best=true: model {name!r} has no versions to choose from")
        reference, role = ((previous, alias) if previous is not None
                           else (max(infos, key=lambda i: int(i.version)), "newest version"))
        selection = select_best(infos, reference, role, metric, mode)
        new = selection.chosen
        reason = reason or (
            f"{'highest' if mode == 'max' else 'lowest'} {selection.metric}="
            f"{new.metrics[selection.metric]:.4f} of {len(selection.compared)} version(s) with "
            f"the classes and data of {selection.against}")
    else:
        new = _info(client, _version(client, name, version))
        if new.status != "FINISHED":
            raise RegistryError(
                f"version={version}: its run {new.run_id} ended {new.status}, not FINISHED; "
                "only a version from a finished training run can be promoted")
    promotion = Promotion(name=name, alias=alias, reason=reason or "(no reason given)",
                          previous=previous, new=new, selection=selection)
    if not promotion.changed:
        return promotion
    client.set_registered_model_alias(name, alias, new.version)
    for key, value in {"promoted_by": getpass.getuser(), "promoted_at": _now(),
                       "reason": promotion.reason}.items():
        client.set_model_version_tag(name, new.version, f"{alias}.{key}", value)
    return promotion
