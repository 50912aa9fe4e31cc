"""The token losses as modules: :class:`TokenDistillLoss` (logits in) and :class:`FusedDistillLoss` (hidden
states and heads in, chunked). Each owns TAID's schedule state when it has one."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from unikd.losses._common import check_weight
from unikd.losses.taid import TAIDSchedule

from .functional import Teacher, token_loss
from .fused import fused_distill_loss
from .rows import check_ignore_index, check_reduction
from .specs import get_spec

SCHEDULE_KEYS = ("t_start", "t_end", "alpha", "beta", "adaptive")


def split_schedule(name: str, hyperparameters: dict[str, Any]) -> tuple[TAIDSchedule | None, dict[str, Any]]:
    """For ``taid``: the schedule built from its keys (``t_start``, ``t_end``, ``alpha``, ``beta``,
    ``adaptive``) and the remaining loss hyperparameters; ``t`` itself comes from the schedule."""
    if name != "taid":
        return None, dict(hyperparameters)
    if "t" in hyperparameters:
        raise ValueError(
            "a TAID module takes its interpolation t from its schedule; pass t_start/t_end/alpha/beta/"
            "adaptive "
            "instead of t (or call the functional taid_loss(..., t=...) for a fixed t)"
        )
    sched = {k: hyperparameters[k] for k in SCHEDULE_KEYS if k in hyperparameters}
    rest = {k: v for k, v in hyperparameters.items() if k not in SCHEDULE_KEYS}
    return TAIDSchedule(**sched), rest


class TokenDistillLoss(nn.Module):
    """The token loss ``name`` with fixed hyperparameters: ``loss(student_logits, other, labels)``.

    ``other`` is the teacher's logits (or a :class:`~unikd.token.SparseTeacher`), or for ``uskd`` the weak
    logits. For ``taid`` the module owns a :class:`~unikd.losses.TAIDSchedule` (``self.schedule``) built
    from ``t_start``, ``t_end``, ``alpha``, ``beta``, ``adaptive``; in training mode, a call with
    ``progress=step / total_steps`` updates it with the loss it just computed. ``state_dict()`` holds it.
    """

    def __init__(
        self,
        name: str,
        *,
        ignore_index: int = -100,
        vocab_size: int | None = None,
        reduction: str = "mean",
        **hyperparameters: Any,
    ) -> None:
        super().__init__()
        self.spec = get_spec(name)
        self.name = name
        self.schedule, hp = split_schedule(name, hyperparameters)
        probe = {**hp, "t": 0.0} if self.schedule is not None else hp
        self.spec.hyperparameters(probe)  # fail now, not at the first batch
        self.hyperparameters = hp
        self.ignore_index = check_ignore_index(ignore_index)
        self.vocab_size = vocab_size
        self.reduction = check_reduction(reduction)

    @property
    def requires_teacher(self) -> bool:
        return not self.spec.trains_other

    def forward(
        self, student_logits: Tensor, other: Teacher, labels: Tensor | None, *, progress: float | None = None
    ) -> Tensor:
        hp = dict(self.hyperparameters)
        if self.schedule is not None:
            hp["t"] = self.schedule.t
        loss = token_loss(
            self.name,
            student_logits,
            other,
            labels,
            ignore_index=self.ignore_index,
            vocab_size=self.vocab_size,
            reduction=self.reduction,
            **hp,
        )
        if self.schedule is not None and self.training and progress is not None:
            # A batch without kept tokens has no loss to learn from (its 0 would read as a huge improvement).
            if labels is None or bool((labels != self.ignore_index).any()):
                self.schedule.update(loss.detach(), progress)
        return loss

    def extra_repr(self) -> str:
        hp = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters.items())
        return f"{self.name!r}{', ' + hp if hp else ''}, ignore_index={self.ignore_index}"


class FusedDistillLoss(nn.Module):
    """:func:`~unikd.token.fused_distill_loss` with fixed settings, as a module.

    ``FusedDistillLoss(name, *, chunk_size=None, ce_weight=1.0, weight=1.0, ignore_index=-100,
    vocab_size=None, reduction="mean", **hyperparameters)``, called as
    ``loss(student_hidden, student_head, teacher_hidden, teacher_head, labels, *, student_bias=None,
    teacher_bias=None, progress=None, return_parts=False)``.

    For ``taid`` it owns the :class:`~unikd.losses.TAIDSchedule` (``self.schedule``, in ``state_dict()``);
    in training mode a call with ``progress=step / total_steps`` updates it with the distillation term it
    just computed (not the cross-entropy), skipping batches without kept tokens.
    """

    def __init__(
        self,
        name: str,
        *,
        chunk_size: int | None = None,
        ce_weight: float = 1.0,
        weight: float = 1.0,
        ignore_index: int = -100,
        vocab_size: int | None = None,
        reduction: str = "mean",
        **hyperparameters: Any,
    ) -> None:
        super().__init__()
        self.spec = get_spec(name)
        self.name = name
        self.schedule, hp = split_schedule(name, hyperparameters)
        self.spec.hyperparameters({**hp, "t": 0.0} if self.schedule is not None else hp)
        self.hyperparameters = hp
        self.settings = {
            "chunk_size": chunk_size,
            "ce_weight": check_weight(ce_weight, "ce_weight"),
            "weight": check_weight(weight, "weight"),
            "ignore_index": check_ignore_index(ignore_index),
            "vocab_size": vocab_size,
            "reduction": check_reduction(reduction),
        }

    def forward(
        self,
        student_hidden: Tensor,
        student_head: Tensor,
        teacher_hidden: Any,
        teacher_head: Tensor | None,
        labels: Tensor,
        *,
        student_bias: Tensor | None = None,
        teacher_bias: Tensor | None = None,
        progress: float | None = None,
        return_parts: bool = False,
    ) -> Any:
        hp = dict(self.hyperparameters)
        if self.schedule is not None:
            hp["t"] = self.schedule.t
        loss, parts = fused_distill_loss(
            self.name,
            student_hidden,
            student_head,
            teacher_hidden,
            teacher_head,
            labels,
            student_bias=student_bias,
            teacher_bias=teacher_bias,
            return_parts=True,
            **self.settings,
            **hp,
        )
        if self.schedule is not None and self.training and progress is not None:
            if bool((labels != self.settings["ignore_index"]).any()):
                self.schedule.update(parts["distill"], progress)
        return (loss, parts) if return_parts else loss

    def extra_repr(self) -> str:
        hp = ", ".join(f"{k}={v!r}" for k, v in {**self.hyperparameters, **self.settings}.items())
        return f"{self.name!r}, {hp}"


__all__ = ["FusedDistillLoss", "TokenDistillLoss", "split_schedule"]
