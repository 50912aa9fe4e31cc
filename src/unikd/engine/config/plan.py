"""The terms of a config before any model exists: each term's loss class, what it requires and which
context arguments it takes (cheap: builds nothing). Config checks, the objective builder and the loop's
preflight all read the same plan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from unikd.engine.config.method import method_to_loss
from unikd.engine.config.sections import TermConfig
from unikd.losses.contract import TEACHER_INPUTS, TEACHER_TAP_INPUTS, context_arguments, requires_of


@dataclass
class TermPlan:
    """A term before any model exists: its config, loss class and inputs."""

    config: TermConfig
    loss_name: str
    cls: type[nn.Module]
    requires: tuple[str, ...]
    context: list[str]

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def needs_teacher(self) -> bool:
        return any(r in TEACHER_INPUTS for r in self.requires) or any(
            c.startswith("teacher_") for c in self.context
        )

    @property
    def needs_teacher_taps(self) -> bool:
        return any(r in TEACHER_TAP_INPUTS for r in self.requires) or any(
            c.startswith("teacher_") for c in self.context
        )

    def wants(self, side: str, what: str) -> bool:
        """Whether the term reads ``side`` ("student"/"teacher") ``what`` ("features"/"embedding")."""
        context = {
            ("student", "features"): "student_shapes",
            ("teacher", "features"): "teacher_shapes",
            ("student", "embedding"): "in_features",
            ("teacher", "embedding"): "teacher_in_features",
        }[(side, what)]
        return f"{side}_{what}" in self.requires or context in self.context


def plan_terms(cfg: Any) -> list[TermPlan]:
    """The terms of ``cfg`` with their loss classes (cheap: builds nothing)."""
    from unikd.losses import LOSSES  # the registry, read lazily: importing every loss is not cheap

    plans = []
    for tc in cfg.terms:
        loss_name = method_to_loss(tc.method)
        assert loss_name is not None, tc
        cls = LOSSES.get(loss_name)
        plans.append(TermPlan(tc, loss_name, cls, requires_of(cls), context_arguments(cls)))
    return plans
