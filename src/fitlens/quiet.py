"""The console a command writes to: its own lines plain, warnings and errors labelled, and the
third-party noise we know of switched off where it starts.

Noise is what a user cannot act on: Lightning's advert for another logger, a deprecation inside
Lightning's own code, MLflow's database-migration chatter and download bars. Real warnings (a
skipped photo, a metric that is missing) still come through. Used by ``conf/hydra/job_logging/
fitlens.yaml`` (formatter, filter, handler) and by the entry scripts (:func:`quiet`); stdlib
only, so an entry script can call it before torch is imported.
"""

from __future__ import annotations

import logging
import os
import re
import warnings

from tqdm import tqdm

#: Lightning INFO lines that say nothing a user needs: an advert, a hardware line that is always
#: "False" on our machines, and the fit's stop line, which fitlens.console replaces with one that
#: says why (early stopping or max_epochs) and which epoch was best.
LIGHTNING_NOISE = (
    re.compile(r".*litlogger", re.IGNORECASE | re.DOTALL),
    re.compile(r"^(TPU|HPU) available: False"),
    re.compile(r"^`Trainer\.fit` stopped"),
)
#: Loggers whose INFO lines are noise for our commands, with the level they are held at.
QUIET_LOGGERS = {
    "lightning_fabric.utilities.seed": logging.WARNING,  # "Seed set to 42": the seed is in config
    "mlflow": logging.WARNING,  # "Creating initial MLflow database tables...", ...
    "alembic": logging.WARNING,
}
#: Environment settings read by libraries at import or call time.
QUIET_ENVIRONMENT = {
    # MLflow configures its own logger from this when it is imported (mlflow.utils.logging_utils).
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    # "Downloading artifacts: 100%|..." for every bundle and split the export/evaluate fetch.
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


#: INFO lines ONNX Runtime's quantiser logs on the root logger, one per weight channel whose
#: scale it widens so the int8 bias stays representable (hundreds per CNN, nothing to act on;
#: the export's int8 gate measures what they cost).
QUANTIZER_NOISE = re.compile(r"^Increased scale\[\d+\] for weight ")


class KnownNoise(logging.Filter):
    """Drops :data:`LIGHTNING_NOISE` records of Lightning's rank-zero logger and
    :data:`QUANTIZER_NOISE` records; passes the rest."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "root" and record.levelno < logging.WARNING:
            return not QUANTIZER_NOISE.match(record.getMessage())
        if not record.name.startswith(("pytorch_lightning", "lightning")):
            return True
        message = record.getMessage()
        return not any(p.match(message) for p in LIGHTNING_NOISE)


class ConsoleFormatter(logging.Formatter):
    """The message alone for INFO (the job's log file keeps time, logger and level); warnings and
    errors start with ``warning:`` / ``error:`` so they stand out in a captured log."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.levelno >= logging.ERROR:
            return f"error: {message}"
        if record.levelno >= logging.WARNING:
            return f"warning: {message}"
        return message


class ConsoleHandler(logging.StreamHandler):
    """A stream handler that writes through ``tqdm.write``: a log line printed while a progress
    bar is live goes above the bar instead of onto its line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # logging's own convention: report, never raise from a handler
            self.handleError(record)


class BelowWarning(logging.Filter):
    """For the stdout handler: INFO and DEBUG only (warnings and errors go to stderr)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


def quiet() -> None:
    """Switch off the known third-party noise; call before the noisy libraries are imported
    (environment settings are read at import), harmless after."""
    for key, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    # torch deprecates LeafSpec; Lightning 2.6 still uses it internally, once per step.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
    # Frozen parts (BlazePose, a frozen CNN) stay in eval mode on purpose, so their batch-norm
    # statistics and dropout never change; Lightning warns about that at every fit.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    # torch.export's archive writer, when MLflow saves the model as pt2 on a CPU-only machine.
    warnings.filterwarnings("ignore", message=r"No complete tensor found in the group")
