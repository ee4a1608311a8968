"""OmegaConf resolvers the configs use (``${fitlens.<name>:...}``), registered when fitlens is
imported: every process that resolves our configs (train.py, the scripts, the tests) imports it.
"""

from __future__ import annotations

from omegaconf import OmegaConf

#: Scores that are better when lower: losses, and the share of photos of other exercises that
#: the model still answers with an exercise (fitlens.metrics).
LOWER_IS_BETTER = ("loss", "other_accepted")


def monitor_mode(metric: str) -> str:
    """``min`` for a metric that is better lower (``val/loss``), else ``max``: the checkpoint and
    early stopping follow ``monitor`` without a second setting to keep in step."""
    return "min" if str(metric).rsplit("/", 1)[-1].endswith(LOWER_IS_BETTER) else "max"


def register() -> None:
    if not OmegaConf.has_resolver("fitlens.monitor_mode"):
        OmegaConf.register_new_resolver("fitlens.monitor_mode", monitor_mode)
