"""The training objective: ``ce_weight * CE + sum_i weight_i * ramp_i(epoch) * term_i`` over named terms.

A term is a loss module from ``unikd.losses``. The engine never switches on method names: it reads the
module's ``requires`` (the names of its forward() arguments after ``student_logits``) and supplies them from
the step's inputs. :data:`REQUIRES` is that vocabulary and :meth:`Objective._input` its one builder; extend
both together (and docs/architecture.md). The values come back by name (``{"loss", "ce", "kd", "fitnet"}``)
so that logging, the progress bar and the non-finite check reuse them. A module may also declare
``monitors`` (names) and a ``monitor(student_logits, **inputs)`` method returning those values: they are
logged as ``<term>_<name>`` and never enter the loss (NKD and USKD log their non-target terms in KL form).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unikd.engine.objective.selection import SELECTED, select_rows
from unikd.losses.contract import (  # noqa: F401  (re-exported: the contract, read by the objective)
    CONTEXT,
    REQUIRES,
    TEACHER_INPUTS,
    TEACHER_TAP_INPUTS,
    context_arguments,
    hyperparameters,
    needs_teacher,
    requires_of,
)


@dataclass
class Term:
    """One named term: its module, weight, warm-up, and where its feature inputs are tapped."""

    name: str
    module: nn.Module
    weight: float = 1.0
    warmup_epochs: float = 0.0
    student_taps: tuple[str, ...] = ()  # tap specs of student_features
    teacher_taps: tuple[str, ...] = ()
    student_embedding: str | None = None  # tap spec pooled into student_embedding
    teacher_embedding: str | None = None
    requires: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.requires = requires_of(self.module)

    def ramp(self, epoch_progress: float) -> float:
        """Linear warm-up factor; per step rather than per epoch (DKD ramps per epoch), so no jumps."""
        if self.warmup_epochs <= 0:
            return 1.0
        return min(1.0, max(0.0, epoch_progress) / self.warmup_epochs)


class Objective(nn.Module):
    """The named loss terms of one training step; an ``nn.Module`` holding the term modules by name, so its
    ``parameters()`` join the optimizer and its ``state_dict()`` the checkpoint.

    Args:
        terms: the terms, in logging order (names unique, not "loss" or "ce").
        ce_weight: weight of the cross-entropy with the labels.
        smoothing: label smoothing of that cross-entropy.
        monitors: compute and log the terms' monitor values (False skips them: they cost a few ms a step).
        selection: the dynamic instance selection (:mod:`unikd.engine.objective.selection`): the CE and
        every term
            then see the selected rows only, and the selected fraction is logged as ``selected``.
    """

    def __init__(
        self,
        terms: Sequence[Term] = (),
        *,
        ce_weight: float = 1.0,
        smoothing: float = 0.0,
        monitors: bool = True,
        selection: Any = None,
    ) -> None:
        super().__init__()
        names = [t.name for t in terms]
        reserved = ("loss", "ce", SELECTED) if selection is not None else ("loss", "ce")
        bad = [n for n in names if n in reserved or names.count(n) > 1]
        if bad:
            raise ValueError(f"term names must be unique and not {' or '.join(map(repr, reserved))}; "
                             f"got {names}")
        self.selection = selection
        self.specs = list(terms)
        self.terms = nn.ModuleDict({t.name: t.module for t in terms})
        self.ce_weight = float(ce_weight)
        self.smoothing = float(smoothing)
        self.monitors = bool(monitors)
        monitored = self._monitor_names()
        clash = [n for n in monitored if n in names]
        if clash:
            raise ValueError(
                f"term names {clash} clash with the logged monitor values of other terms; rename them"
            )

    def _monitor_names(self) -> list[str]:
        if not self.monitors:
            return []
        return [f"{t.name}_{m}" for t in self.specs for m in getattr(t.module, "monitors", ())]

    def term_names(self) -> list[str]:
        """Logged names: the total, CE, each term, then each term's monitor values (``<term>_<name>``)."""
        selected = [SELECTED] if self.selection is not None else []
        return ["loss", "ce", *(t.name for t in self.specs), *self._monitor_names(), *selected]

    @property
    def needs_teacher(self) -> bool:
        return any(r in TEACHER_INPUTS for t in self.specs for r in t.requires)

    @property
    def needs_teacher_taps(self) -> bool:
        return any(r in TEACHER_TAP_INPUTS for t in self.specs for r in t.requires)

    def forward(
        self,
        logits: Tensor,
        target: Tensor,
        *,
        teacher_logits: Tensor | Sequence[Tensor] | None = None,
        student_taps: Mapping[str, Tensor] | None = None,
        teacher_taps: Mapping[str, Tensor] | None = None,
        indices: Tensor | None = None,
        epoch_progress: float = 0.0,
        images: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Named 0-dim float32 terms; ``"loss"`` is the weighted total that is back-propagated.

        ``student_taps`` / ``teacher_taps`` map tap specs to the tensors captured in this step's forward
        passes (:class:`~unikd.engine.objective.taps.TapSet`). In online training ``teacher_logits`` is
        the list of
        the other networks' logits: a term that reads them is averaged over the list (DML's
        ``1/(K-1) sum_{l != k}``), each element in turn being its ``teacher_logits``. ``images``: the batch.
        """
        logits = logits.float()  # losses in fp32 even under autocast (softmax of low-precision logits)
        step = {
            "target": target,
            "teacher_logits": teacher_logits,
            "student_taps": student_taps or {},
            "teacher_taps": teacher_taps or {},
            "indices": indices,
            "epoch_progress": float(epoch_progress),
            "images": images,
            "sample_weights": None,
            "pooled": {},
        }
        selected: dict[str, Tensor] = {}
        if self.selection is not None:  # the whole objective on the selected rows (selection.py)
            kept, step, selected = select_rows(self.selection, logits, step)
            if kept is None:  # no row to learn from: 0, with a (zero) gradient for every weight
                return {**{n: logits.sum() * 0.0 for n in self.term_names()}, **selected}
            logits = kept
        ce = F.cross_entropy(logits, step["target"], label_smoothing=self.smoothing)
        out: dict[str, Tensor] = {"loss": self.ce_weight * ce, "ce": ce}
        others = list(teacher_logits) if isinstance(teacher_logits, (list, tuple)) else None
        monitors: dict[str, Tensor] = {}
        for term in self.specs:
            module = self.terms[term.name]
            value = self._call(module, term, logits, others, step)
            if self.monitors and getattr(module, "monitors", ()):
                values = self._call(module.monitor, term, logits, others, step)
                monitors.update({f"{term.name}_{key}": v for key, v in values.items()})
            if not isinstance(value, Tensor) or value.dim() != 0:
                shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(f"term {term.name!r} must return a 0-dim loss tensor, got {shape}")
            out[term.name] = value
            out["loss"] = out["loss"] + (term.weight * term.ramp(epoch_progress)) * value
        out.update(monitors)
        out.update(selected)
        return out

    def _call(
        self, fn: Any, term: Term, logits: Tensor, others: list[Tensor] | None, step: dict[str, Any]
    ) -> Any:
        """``fn`` (a term module or its ``monitor``) on this step's inputs for ``term``; averaged over the
        other networks' logits when ``others`` is given and the term reads ``teacher_logits`` (online)."""
        if others is not None and "teacher_logits" in term.requires:
            return self._over_others(term, logits, others, step, fn)
        return fn(logits, **{name: self._input(name, term, step) for name in term.requires})

    def _over_others(
        self, term: Term, logits: Tensor, others: list[Tensor], step: dict[str, Any], fn: Any
    ) -> Any:
        """The mean of ``fn`` (a term module or its ``monitor``) over the other networks' logits (online
        training); ``fn`` returns a tensor or a dict of tensors."""
        if not others:
            raise ValueError(f"term {term.name!r} needs teacher_logits, but this step has no other network")
        values = []
        for other in others:
            here = {**step, "teacher_logits": other}
            values.append(fn(logits, **{name: self._input(name, term, here) for name in term.requires}))
        if isinstance(values[0], dict):
            return {k: sum(v[k] for v in values) / len(values) for k in values[0]}
        total = values[0]
        for v in values[1:]:
            total = total + v
        return total / len(values) if len(values) > 1 else total

    @staticmethod
    def _input(name: str, term: Term, step: dict[str, Any]) -> Any:
        """The value of one ``requires`` name for ``term`` (the one place that knows the vocabulary)."""
        if name in ("target", "epoch_progress"):
            return step[name]
        if name == "sample_weights":  # all 1 without a selection
            w = step[name]
            return w if w is not None else torch.ones(len(step["target"]), device=step["target"].device)
        if name in ("teacher_logits", "indices", "images"):
            value = step[name]
            if value is None:
                raise ValueError(f"term {term.name!r} needs {name}, but this step has none")
            return value.float() if name == "teacher_logits" else value
        side = "student" if name.startswith("student") else "teacher"
        taps = step[f"{side}_taps"]
        if name.endswith("_features"):
            specs = term.student_taps if side == "student" else term.teacher_taps
            return [_tapped(taps, spec, term.name) for spec in specs]
        spec = term.student_embedding if side == "student" else term.teacher_embedding
        assert spec is not None, f"term {term.name!r} has no {name} tap"
        key = (side, spec)
        if key not in step["pooled"]:
            from unikd.models import pool_feature

            step["pooled"][key] = pool_feature(_tapped(taps, spec, term.name))
        return step["pooled"][key]


def _tapped(taps: Mapping[str, Tensor], spec: str, term: str) -> Tensor:
    if spec not in taps:
        raise ValueError(f"term {term!r} reads tap {spec!r}, which this step did not capture")
    return taps[spec]
