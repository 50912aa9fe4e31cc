"""Training engine: typed config, trainer, evaluation, checkpoints, optimisers, schedules, EMA, DDP.

The heavy entry points are imported lazily (PEP 562) so that ``import unikd.engine.checkpoint`` and the
other small utilities stay cheap and do not pull in the model zoo, the losses and the data pipeline.
"""

from __future__ import annotations

import importlib
from typing import Any

# Imported eagerly (it is light) because the function shares its name with its module: importing the
# submodule later would otherwise replace the lazily bound function with the module object.
from unikd.engine.evaluate import evaluate, evaluate_checkpoint  # noqa: F401  (exported)

# public name -> module that defines it
_EXPORTS = {
    "Config": "unikd.engine.config",
    "DataConfig": "unikd.engine.config",
    "TeacherConfig": "unikd.engine.config",
    "LossConfig": "unikd.engine.config",
    "OptimConfig": "unikd.engine.config",
    "SchedConfig": "unikd.engine.config",
    "TapsConfig": "unikd.engine.config",
    "TermConfig": "unikd.engine.config",
    "Objective": "unikd.engine.objective",
    "load_config": "unikd.engine.config",
    "METHOD_TO_LOSS": "unikd.engine.config",
    "train": "unikd.engine.trainer",
    "TrainingInterrupted": "unikd.engine.trainer",
    "NonFiniteLossError": "unikd.engine.step",
}

__all__ = sorted([*_EXPORTS, "evaluate", "evaluate_checkpoint"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'unikd.engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
