"""Training engine, in rooms along a run's flow (each imports only the rooms below it):

- :mod:`~unikd.engine.loop`: setup, the step over the run's networks, the trainer, resume, final test;
- :mod:`~unikd.engine.objective`, :mod:`~unikd.engine.teacher`, :mod:`~unikd.engine.eval`: the terms of a
  run and their taps; the live and cached teacher, pretrained weights; evaluation and metrics;
- :mod:`~unikd.engine.config`: the typed config, its checks and the terms form;
- :mod:`~unikd.engine.run`, :mod:`~unikd.engine.optim`: checkpoints, weights, RNG state, trackers,
  distributed helpers; optimizers, schedules, EMA.

The heavy entry points are imported lazily (PEP 562) so that ``import unikd.engine.run.checkpoint`` and the
other small utilities stay cheap and do not pull in the model zoo, the losses and the data pipeline.
"""

from __future__ import annotations

import importlib
from typing import Any

from unikd.engine.eval.evaluate import evaluate  # noqa: F401  (exported; light)

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
    "Objective": "unikd.engine.objective.objective",
    "load_config": "unikd.engine.config",
    "METHOD_TO_LOSS": "unikd.engine.config",
    "train": "unikd.engine.loop.trainer",
    "TrainingInterrupted": "unikd.engine.loop.trainer",
    "NonFiniteLossError": "unikd.engine.loop.step",
    "evaluate_checkpoint": "unikd.engine.eval.saved",
}

__all__ = sorted([*_EXPORTS, "evaluate"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'unikd.engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
