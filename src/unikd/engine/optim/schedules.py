"""Per-step learning-rate schedules: multistep, cosine and constant, each with optional linear warmup.

Milestones and warmup are given in epochs but the schedule is stepped once per optimiser step, so the
learning rate of step ``s`` is a pure function of ``s`` (exact resume only needs the step counter).

Multistep convention (the CIFAR KD protocol of CRD/DKD/mdistiller): milestone ``m`` means that the
decay applies from 0-based epoch index ``m`` onward, i.e. with milestones ``[150, 180, 210]`` the 151st
epoch (1-based) is the first one at ``0.1 * lr``.

``sched.name`` is looked up in :data:`SCHEDULES` (timm style: :func:`register_schedule`,
:func:`create_schedule`, :func:`list_schedules`), so a schedule registered from outside the package can be
named in a config. A schedule is the shape of the factor; the warmup ramp is applied on top of every one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

from unikd.registry import Registry, unknown_name_message

__all__ = [
    "SCHEDULES",
    "StepLR",
    "build_scheduler",
    "create_schedule",
    "list_schedules",
    "lr_factor_fn",
    "register_schedule",
]

Factor = Callable[[int], float]

# name -> factory(*, total_steps, warmup_steps, milestone_steps, gamma, min_lr_factor) -> f(step) -> factor.
# A factory takes every keyword (extra ones via **kwargs); the arguments are validated before it runs.
SCHEDULES: Registry[Factor] = Registry("schedule (sched.name)")


def register_schedule(name: str, factory: Callable[..., Factor]) -> None:
    """Register ``factory(*, total_steps, warmup_steps, milestone_steps, gamma, min_lr_factor, **kwargs)``,
    which returns ``f(step) -> lr / base_lr`` before the warmup ramp."""
    SCHEDULES.register(name, factory)


def list_schedules() -> list[str]:
    """Sorted names accepted by ``sched.name``."""
    return SCHEDULES.names()


def create_schedule(name: str, **kwargs: Any) -> Factor:
    """The factor function of the registered schedule ``name`` (no warmup); unknown names fail clearly."""
    return SCHEDULES.get(name)(**kwargs)


def _multistep(*, milestone_steps: Sequence[int], gamma: float, **_: Any) -> Factor:
    return lambda step: gamma ** sum(step >= m for m in milestone_steps)


def _cosine(*, total_steps: int, warmup_steps: int, min_lr_factor: float, **_: Any) -> Factor:
    span = max(total_steps - warmup_steps, 1)

    def factor(step: int) -> float:
        progress = min(max(step - warmup_steps, 0) / span, 1.0)
        return min_lr_factor + (1.0 - min_lr_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _constant(**_: Any) -> Factor:
    return lambda step: 1.0


register_schedule("multistep", _multistep)
register_schedule("cosine", _cosine)
register_schedule("constant", _constant)


def lr_factor_fn(
    *,
    name: str = "multistep",
    epochs: int,
    steps_per_epoch: int,
    milestones: Sequence[float] = (),
    gamma: float = 0.1,
    warmup_epochs: float = 0.0,
    min_lr_factor: float = 0.0,
) -> Callable[[int], float]:
    """Return ``f(step) -> lr / base_lr`` for 0-based optimiser step ``step``. Validates every argument.

    Warmup ramps linearly: step ``s`` (< warmup steps ``W``) runs at ``(s + 1) / W`` of the scheduled lr,
    so that the first step already learns and step ``W - 1`` reaches the full value. For ``cosine`` the
    annealing runs over the steps after the warmup, from 1 down to ``min_lr_factor``.
    """
    key = str(name).lower()
    if key not in SCHEDULES:
        raise ValueError(unknown_name_message(SCHEDULES.kind, str(name), list_schedules()))
    if int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if int(steps_per_epoch) < 1:
        raise ValueError(
            f"steps_per_epoch must be >= 1, got {steps_per_epoch}; is the dataset smaller than one batch?"
        )
    if not gamma > 0:
        raise ValueError(f"sched.gamma must be > 0, got {gamma}")
    if not 0.0 <= float(min_lr_factor) <= 1.0:
        raise ValueError(f"sched.min_lr_factor must be in [0, 1], got {min_lr_factor}")
    if not 0.0 <= float(warmup_epochs) <= float(epochs):
        raise ValueError(f"sched.warmup_epochs must be in [0, epochs={epochs}], got {warmup_epochs}")
    ms = [float(m) for m in milestones]
    if any(m < 0 for m in ms) or ms != sorted(ms):
        raise ValueError(
            f"sched.milestones must be non-negative and increasing epochs, got {list(milestones)}"
        )

    spe = int(steps_per_epoch)
    total = int(epochs) * spe
    warm = int(round(float(warmup_epochs) * spe))
    if float(warmup_epochs) > 0:
        warm = max(warm, 1)
    # A milestone in (possibly fractional) epochs becomes the first step that runs decayed.
    ms_steps = [int(math.ceil(m * spe)) for m in ms]
    shape = create_schedule(
        key,
        total_steps=total,
        warmup_steps=warm,
        milestone_steps=ms_steps,
        gamma=float(gamma),
        min_lr_factor=float(min_lr_factor),
    )

    def factor(step: int) -> float:
        f = shape(step)
        if step < warm:
            f *= (step + 1) / warm
        return f

    return factor


class StepLR(LambdaLR):
    """A ``LambdaLR`` stepped per optimiser step. Its state is just the step counter (``last_epoch``),
    ``base_lrs`` and the last lrs, so ``state_dict``/``load_state_dict`` resume it exactly."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, factor: Callable[[int], float], *, desc: str
    ) -> None:
        self.desc = desc
        super().__init__(optimizer, factor)

    def state_dict(self) -> dict:
        # desc describes the *current* config; a resumed run must not inherit the old text.
        sd = super().state_dict()
        sd.pop("desc", None)
        return sd

    def __repr__(self) -> str:
        return f"StepLR({self.desc}, step={self.last_epoch})"


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    name: str = "multistep",
    epochs: int,
    steps_per_epoch: int,
    milestones: Sequence[float] = (),
    gamma: float = 0.1,
    warmup_epochs: float = 0.0,
    min_lr_factor: float = 0.0,
) -> torch.optim.lr_scheduler.LRScheduler:
    """Build a per-step scheduler; call ``.step()`` after every ``optimizer.step()``.

    Args:
        optimizer: the optimiser whose groups' current ``lr`` is the base lr.
        name: a registered schedule (``"multistep"``, ``"cosine"``, ``"constant"`` or one added by
            :func:`register_schedule`).
        epochs, steps_per_epoch: the run length (cosine anneals over ``epochs * steps_per_epoch`` steps).
        milestones: multistep decay epochs (0-based epoch index where the decay starts); milestones at or
            beyond ``epochs`` never apply.
        gamma: multistep decay factor.
        warmup_epochs: linear warmup length in epochs (fractions allowed).
        min_lr_factor: cosine floor as a fraction of the base lr.
    """
    factor = lr_factor_fn(
        name=name,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        milestones=milestones,
        gamma=gamma,
        warmup_epochs=warmup_epochs,
        min_lr_factor=min_lr_factor,
    )
    desc = f"{name}, epochs={epochs}, steps_per_epoch={steps_per_epoch}, warmup_epochs={warmup_epochs}"
    return StepLR(optimizer, factor, desc=desc)
