"""How each training step runs: whether the losses' value checks are on (``checks``) and whether the
forward-and-loss part of the step is the compiled one (``compile=step``).

``checks=auto`` turns the value checks on for the first :data:`CHECKED_STEPS` steps that a process takes --
the first steps of a fresh run and the first steps after every resume -- and off after them. Bad inputs
(labels out of range, soft labels that do not sum to 1, a teacher cache of the wrong width) come from how a
run is set up, not from one unlucky batch: they show in the first batches, and a resumed run gets the same
look at its (possibly changed) data and teacher. Twenty batches of 64 rows see every class of a balanced
100-class dataset with probability above 0.999 (a class's rows are missed with probability 0.99^1280 <
3e-6 each), while they are under 0.02% of a 240-epoch CIFAR run, so the checks' host syncs cost nothing
that can be measured. ``full`` checks every step, ``off`` none.

Under ``compile=step`` the checked steps run eagerly (the value checks are never traced); the compiled
forward takes over at the first unchecked step. It compiles twice, then never again: the first compilation
specialises on the epoch progress (a float, new every step), the second makes it symbolic (dynamo's
automatic dynamic; ``torch.compiler.config.dynamic_sources`` reaches integers only in torch 2.13).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from unikd.engine.config.step_options import compile_mode

CHECKED_STEPS = 20  # checks=auto: steps with value checks after the start and after each resume

# The backend of compile=step; tests replace it by a counting ``aot_eager`` (no C++ code generation).
STEP_BACKEND: Any = "inductor"


class StepMode:
    """The per-process step policy of one run: ``steps`` counts the steps this process has taken."""

    def __init__(self, cfg: Any) -> None:
        self.setting = cfg.checks
        self.compile = compile_mode(cfg)
        self.steps = 0
        self._compiled: Callable[..., Any] | None = None

    def checks(self) -> str:
        """The :mod:`unikd.losses.checks` mode of the next step: ``"full"`` or ``"off"``."""
        if self.setting == "auto":
            return "full" if self.steps < CHECKED_STEPS else "off"
        return self.setting

    def forward(self, eager: Callable[..., Any]) -> Callable[..., Any]:
        """``eager`` (the step's forward and loss terms) or, under compile=step once checks are off, its
        compiled version (one per run: the same callable every step, so it compiles once)."""
        if self.compile != "step" or self.checks() == "full":
            return eager
        if self._compiled is None:
            self._compiled = torch.compile(eager, backend=STEP_BACKEND)
        return self._compiled


__all__ = ["CHECKED_STEPS", "STEP_BACKEND", "StepMode"]
