"""Dynamic instance selection of the objective (config section ``selection``; KD³'s first part).

At every step the selection weighs the batch's rows from the student's and the teacher's logits
(:func:`unikd.losses.kd3_select_weights`, the teacher's share on the schedule of
:func:`unikd.losses.kd3_teacher_share`). The whole objective -- the cross-entropy and every term -- is then
computed on the selected rows only (weight > 0): their logits, targets, teacher logits, tapped features,
images and dataset indices. Terms that read ``sample_weights`` also get the selected rows' weights (1 with
``weights: mask``). So any term (``kd``, ``nkd``, ...) distils on the selected instances without knowing
about the selection. A step that selects nothing contributes 0 to every term (and a zero gradient); the
fraction of rows selected is logged as ``train/selected``.

The weights are a pure function of the step's logits and its epoch progress, so there is no state to
checkpoint and a resumed run selects exactly what the uninterrupted one did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

SELECTED = "selected"  # the logged name of the selected fraction


@dataclass(frozen=True)
class InstanceSelection:
    """The ``selection`` settings of a run (``ramp_epochs`` resolved to a number)."""

    threshold: float = 0.5
    share_start: float = 1.0
    share_end: float = 0.5
    ramp_epochs: float = 0.0
    weights: str = "mask"

    def teacher_share(self, epoch_progress: float) -> float:
        from unikd.losses import kd3_teacher_share

        return kd3_teacher_share(epoch_progress, start=self.share_start, end=self.share_end,
                                 ramp_epochs=self.ramp_epochs)

    def __call__(self, logits: Tensor, teacher_logits: Tensor | None, epoch_progress: float) -> Tensor:
        """Weights ``(N,)`` of this step's rows (0: not selected)."""
        from unikd.losses import kd3_select_weights

        if not isinstance(teacher_logits, Tensor):
            raise ValueError("the instance selection needs the teacher's logits, but this step has none")
        share = self.teacher_share(epoch_progress)
        return kd3_select_weights(logits.detach(), teacher_logits, teacher_share=share,
                                  threshold=self.threshold, weights=self.weights)

    def describe(self) -> str:
        """The preflight row."""
        share = (f"a = {self.share_start:g} -> {self.share_end:g} over {self.ramp_epochs:g} epochs"
                 if self.ramp_epochs else f"a = {self.share_end:g}")
        return (f"kd3: rows with max(a*p_teacher + (1-a)*p_student) >= {self.threshold:g} train, {share}; "
                f"weights {self.weights}; every term and the CE on the selected rows (train/{SELECTED})")


def build_selection(cfg: Any) -> InstanceSelection | None:
    """The run's selection from its ``selection`` section, or None when it is off."""
    sel = cfg.selection
    if sel.method is None:
        return None
    ramp = float(cfg.epochs if sel.ramp_epochs is None else sel.ramp_epochs)
    start, end = (float(v) for v in sel.teacher_share)
    return InstanceSelection(float(sel.threshold), start, end, ramp, sel.weights)


def select_rows(selection: InstanceSelection, logits: Tensor, step: dict[str, Any]
                ) -> tuple[Tensor | None, dict[str, Any], dict[str, Tensor]]:
    """The selected rows' ``logits`` (None when no row is selected) and ``step`` inputs, and the logged
    selected fraction ``{"selected": 0-dim}``."""
    weights = selection(logits, step["teacher_logits"], step["epoch_progress"])
    chosen = ~(weights <= 0)  # NaN weights (non-finite logits) keep their rows, so the loss turns NaN
    selected = {SELECTED: chosen.float().mean()}
    if not bool(chosen.any()):
        return None, step, selected
    kept, step = restrict({**step, "sample_weights": weights}, logits, chosen.nonzero().squeeze(1))
    return kept, step, selected


def restrict(step: dict[str, Any], logits: Tensor, keep: Tensor) -> tuple[Tensor, dict[str, Any]]:
    """``logits`` and the per-row values of ``step`` (the objective's inputs) at the rows ``keep``."""
    out = dict(step)
    for key in ("target", "teacher_logits", "indices", "images", "sample_weights"):
        if isinstance(step.get(key), Tensor):
            out[key] = step[key][keep]
    for side in ("student_taps", "teacher_taps"):
        out[side] = {spec: t[keep] for spec, t in step[side].items()}
    out["pooled"] = {}
    return logits[keep], out


__all__ = ["SELECTED", "InstanceSelection", "build_selection", "restrict", "select_rows"]
