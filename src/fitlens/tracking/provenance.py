"""Where a run came from: the code (git), the data (a fingerprint) and the config (as params)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fitlens.data.splits import Sample

#: The code that trains is this package; its checkout (if any) is the commit to record.
CODE_DIR = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=CODE_DIR, capture_output=True, text=True,
                          timeout=20, check=True).stdout.strip()


def git_state() -> tuple[str, str]:
    """``(commit, dirty)`` of the code's checkout; ``("unknown", "unknown")`` outside git.

    Dirty means tracked files differ from the commit: the run's code is not exactly the commit.
    """
    try:
        commit = _git("rev-parse", "HEAD")
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown", "unknown"
    return commit, str(dirty).lower()


def data_fingerprint(samples: Iterable[Sample]) -> tuple[str, int]:
    """A hash of the image list (class, file name, size in bytes) and the number of files.

    Names and sizes, not contents: cheap on thousands of photos, yet an added, removed, renamed
    or re-encoded photo changes it. Folder locations are left out, so the same photos
    elsewhere give the same fingerprint.
    """
    lines = sorted(f"{s.class_name}/{s.path.name}\t{s.path.stat().st_size}" for s in samples)
    digest = hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()
    return digest[:16], len(lines)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{name}."))
        elif isinstance(value, (list, dict)):
            out[name] = json.dumps(value)
        else:
            out[name] = str(value)
    return out


def config_params(cfg: DictConfig) -> dict[str, str]:
    """The resolved config as flat ``group.key`` params (``optimizer.lr``); lists as JSON."""
    return _flatten(OmegaConf.to_container(cfg, resolve=True))
