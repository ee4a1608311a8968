"""Checks of config values that libraries would reject late or with a message that hides where
the value came from."""

from __future__ import annotations

from omegaconf import DictConfig


def validate_config(cfg: DictConfig) -> None:
    """Raise ValueError naming the setting for values that cannot work."""
    checks = [
        ("optimizer.lr", cfg.optimizer.get("lr"), lambda v: v is not None and v > 0, "> 0"),
        ("data.batch_size", cfg.data.get("batch_size"), lambda v: isinstance(v, int) and v >= 1,
         "an integer >= 1"),
        ("data.image_size", cfg.data.get("image_size"),
         lambda v: isinstance(v, int) and v >= 8, "an integer >= 8"),
        ("trainer.max_epochs", cfg.trainer.get("max_epochs"),
         lambda v: v is None or v == -1 or (isinstance(v, int) and v >= 1),
         "an integer >= 1 (or -1 for no limit)"),
    ]
    for name, value, ok, expected in checks:
        try:
            good = ok(value)
        except TypeError:
            good = False
        if not good:
            raise ValueError(f"{name}={value!r}: expected {expected}")
