"""Bounds that every config value must respect, whatever its section: finite numbers, sane counts, seeds.

Kept apart from the per-key checks of :mod:`unikd.engine.config.check` because they apply to the whole
tree: a non-finite float (``lr=.inf``, ``nan``) is refused under any key -- loss hyperparameters and
free-form ``model_args`` included -- since no option means anything at infinity and NaN compares false
with every range check, so it would slip through them.
"""

from __future__ import annotations

import math
from typing import Any

MAX_EPOCHS = 10**6  # far beyond any schedule; catches typos such as epochs=2400000 before a run starts
# torch.manual_seed takes at most 64 bits; int64 keeps seeds exact in tensors and in every library.
MAX_SEED = 2**63 - 1


def _non_finite(value: Any, key: str) -> tuple[str, float] | None:
    """The first (dotted key, value) in ``value`` holding a non-finite float."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (key, value)
    if isinstance(value, dict):
        items: Any = ((f"{key}.{k}" if key else str(k), v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{key}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for sub_key, sub in items:
        found = _non_finite(sub, sub_key)
        if found is not None:
            return found
    return None


def _seed(value: int | None, key: str) -> None:
    if value is not None and not 0 <= value <= MAX_SEED:
        raise ValueError(f"{key} must be an integer in [0, 2**63 - 1] (torch's seed range), got {value}")


def check_bounds(cfg: Any) -> None:
    """Raise ``ValueError`` naming the key when a value is non-finite or out of its bounds."""
    found = _non_finite(cfg.to_dict(), "")
    if found is not None:
        key, value = found
        raise ValueError(f"{key}={value} is not a finite number; every number in the config must be finite")
    if not 1 <= cfg.epochs <= MAX_EPOCHS:
        raise ValueError(f"epochs must be >= 1 and <= {MAX_EPOCHS}, got {cfg.epochs}")
    _seed(cfg.seed, "seed")
    _seed(cfg.data.split_seed, "data.split_seed")
    if cfg.data.num_workers < 0:
        raise ValueError(
            f"data.num_workers must be >= 0 (0 loads in the training process), got {cfg.data.num_workers}"
        )
