"""The training config: typed sections, YAML loading, ``key=value`` overrides and validation.

``from unikd.engine.config import Config, load_config`` is the documented import; the package splits into
:mod:`.sections` (the section dataclasses), :mod:`.schema` (:class:`Config` and its key tree), :mod:`.load`
(files and overrides), :mod:`.check` and :mod:`.bounds` (values), :mod:`.method` (the ``method`` names),
:mod:`.terms` (the ``loss.terms`` form), :mod:`.plan` (each term's loss class and inputs) and
:mod:`.transfer` (``data.transfer``, ``loss.target``, ``selection``). Choices are read from the registries
(losses, datasets, optimizers, schedules, trackers), so registering one makes it valid here.
"""

from __future__ import annotations

from typing import Any

from unikd.engine.config.check import LOSS_FIXED, coerce, loss_hyperparameters, loss_params, validate
from unikd.engine.config.load import config_to_yaml, load_config, parse_override, save_config
from unikd.engine.config.method import METHOD_ALIASES, check_method, method_to_loss, methods
from unikd.engine.config.schema import (
    OPTIONAL_DATA_KEYS,
    OPTIONAL_LOSS_KEYS,
    OPTIONAL_SECTIONS,
    SECTIONS,
    Config,
    _default_tree,
    valid_keys,
)
from unikd.engine.config.sections import (
    DataConfig,
    DiagnosticsConfig,
    LossConfig,
    OnlineConfig,
    OptimConfig,
    SchedConfig,
    SelectionConfig,
    TapsConfig,
    TeacherConfig,
    TermConfig,
)

__all__ = [
    "LOSS_FIXED",
    "METHOD_ALIASES",
    "OPTIONAL_DATA_KEYS",
    "OPTIONAL_LOSS_KEYS",
    "OPTIONAL_SECTIONS",
    "SECTIONS",
    "Config",
    "DataConfig",
    "DiagnosticsConfig",
    "LossConfig",
    "OnlineConfig",
    "OptimConfig",
    "SchedConfig",
    "SelectionConfig",
    "TapsConfig",
    "TeacherConfig",
    "TermConfig",
    "check_method",
    "coerce",
    "config_to_yaml",
    "load_config",
    "loss_hyperparameters",
    "loss_params",
    "method_to_loss",
    "methods",
    "parse_override",
    "save_config",
    "valid_keys",
    "validate",
]
_ = _default_tree  # importable from here (the resume check compares against the default tree)


def __getattr__(name: str) -> Any:
    # METHODS / METHOD_TO_LOSS follow the loss registry (computed on access, so late registrations count).
    from unikd.engine.config import method as _methods

    if name in ("METHODS", "METHOD_TO_LOSS"):
        return getattr(_methods, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
