"""Build the objective's terms from the config: find each term's loss class and what it requires, resolve its
taps on the student and the teacher, measure the tapped shapes with one dummy forward of each network, and
construct the modules with their hyperparameters plus the context arguments they accept."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from unikd.engine.config import Config
from unikd.engine.config.plan import TermPlan, plan_terms  # noqa: F401  (re-exported)
from unikd.engine.objective.context import network_context
from unikd.engine.objective.objective import Objective, Term
from unikd.engine.objective.selection import build_selection
from unikd.engine.objective.taps import TapSet, resolve_taps


@dataclass
class _Taps:
    student_features: tuple[str, ...] = ()
    teacher_features: tuple[str, ...] = ()
    student_embedding: str | None = None
    teacher_embedding: str | None = None


def _resolve(plan: TermPlan, cfg: Config, student: nn.Module, teacher: nn.Module | None) -> _Taps:
    taps = _Taps()
    kind = getattr(plan.cls, "taps", None)
    embedding_kind = getattr(plan.cls, "embedding_tap", "embedding")
    for side, model in (("student", student), ("teacher", teacher)):
        overrides = cfg.taps.student if side == "student" else cfg.taps.teacher
        if not (plan.wants(side, "features") or plan.wants(side, "embedding")):
            continue
        if model is None:
            raise ValueError(
                f"term {plan.name!r} reads the teacher's features, which need the live teacher: set "
                "teacher.model and teacher.checkpoint"
            )
        common: dict[str, Any] = {"role": side, "overrides": overrides, "feature": cfg.feature}
        if plan.wants(side, "features"):
            if not isinstance(kind, str):
                raise ValueError(
                    f"loss module {plan.cls.__name__} reads {side}_features but declares no `taps` kind "
                    "(e.g. taps = 'stages'); see docs/architecture.md"
                )
            setattr(taps, f"{side}_features", tuple(resolve_taps(model, kind, **common)))
        if plan.wants(side, "embedding"):
            specs = resolve_taps(model, embedding_kind, **common)
            if len(specs) != 1:
                raise ValueError(
                    f"term {plan.name!r} pools one {side} embedding, but taps.{side}.{embedding_kind} lists "
                    f"{len(specs)} modules: {specs}"
                )
            setattr(taps, f"{side}_embedding", specs[0])
    return taps


@torch.no_grad()
def _measure(model: nn.Module | None, specs: list[str], sample: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """``{spec: per-sample shape}`` from one eval-mode forward (BN statistics untouched)."""
    if model is None or not specs:
        return {}
    was_training = model.training
    model.eval()
    try:
        with TapSet(model, specs) as taps:
            model(sample)
            return taps.shapes()
    finally:
        model.train(was_training)


def _pooled_width(shape: tuple[int, ...], spec: str) -> int:
    """Width of ``pool_feature`` of a tensor with this per-sample shape: (C, H, W) -> C, (L, D) -> D, (D,)."""
    if len(shape) in (1, 3):
        return shape[0]
    if len(shape) == 2:
        return shape[1]
    raise ValueError(
        f"tap {spec!r} gives per-sample shape {shape}, which cannot be pooled into an embedding; tap a "
        "module whose output is (N, C, H, W), (N, L, D) or (N, D)"
    )


def build_objective(
    cfg: Config,
    plans: list[TermPlan],
    *,
    student: nn.Module,
    teacher: nn.Module | None,
    sample: torch.Tensor,
    num_classes: int,
    num_samples: int,
    role: str = "student",
    train_labels: torch.Tensor | None = None,
) -> tuple[Objective, list[tuple[str, str]]]:
    """The objective (on the sample's device) and the preflight rows that describe its terms.

    ``role`` is the network's role in online training (``"peer"`` for the other networks), a context
    argument. ``train_labels``: int64 ``(num_samples,)`` classes of the training set, for modules that take
    them."""
    from unikd.losses import create_loss

    resolved = [_resolve(p, cfg, student, teacher) for p in plans]
    s_specs = sorted({s for t in resolved for s in (*t.student_features, t.student_embedding) if s})
    t_specs = sorted({s for t in resolved for s in (*t.teacher_features, t.teacher_embedding) if s})
    found = {"student": _measure(student, s_specs, sample), "teacher": _measure(teacher, t_specs, sample)}
    terms, rows = [], []
    for plan, taps in zip(plans, resolved):
        context: dict[str, Any] = {
            "num_classes": num_classes,
            "num_samples": num_samples,
            "train_labels": train_labels,
            "total_epochs": cfg.epochs,
            "role": role,
            "student_shapes": [found["student"][s] for s in taps.student_features],
            "teacher_shapes": [found["teacher"][s] for s in taps.teacher_features],
        }
        if taps.student_embedding:
            spec = taps.student_embedding
            context["in_features"] = _pooled_width(found["student"][spec], spec)
        if taps.teacher_embedding:
            spec = taps.teacher_embedding
            context["teacher_in_features"] = _pooled_width(found["teacher"][spec], spec)
        context.update(network_context(plan, taps, student, teacher))  # classifiers, a second student pass
        kwargs = {**plan.config.params, **{k: context[k] for k in plan.context if k in context}}
        module = create_loss(plan.loss_name, **kwargs).to(sample.device)
        tc = plan.config
        terms.append(
            Term(
                tc.name,
                module,
                weight=tc.weight,
                warmup_epochs=tc.warmup_epochs,
                student_taps=taps.student_features,
                teacher_taps=taps.teacher_features,
                student_embedding=taps.student_embedding,
                teacher_embedding=taps.teacher_embedding,
            )
        )
        rows.append((f"term {tc.name}", _describe(plan, taps, found)))
    smoothing = cfg.loss.smoothing if cfg.method == "ls" else 0.0
    objective = Objective(terms, ce_weight=cfg.loss.ce_weight, smoothing=smoothing,
                          monitors=cfg.diagnostics.monitors, selection=build_selection(cfg))
    return objective, rows


def _describe(plan: TermPlan, taps: _Taps, found: dict[str, Any]) -> str:
    tc = plan.config
    text = f"{tc.weight:g} x {plan.cls.__name__}"
    if tc.warmup_epochs:
        text += f", ramped over {tc.warmup_epochs:g} epochs"
    reads = []
    for side in ("student", "teacher"):
        for spec in getattr(taps, f"{side}_features"):
            reads.append(f"{side} {spec} {'x'.join(map(str, found[side][spec]))}")
        emb = getattr(taps, f"{side}_embedding")
        if emb:
            reads.append(f"{side} embedding {emb} ({_pooled_width(found[side][emb], emb)})")
    return text + (f"; reads {', '.join(reads)}" if reads else "")


def student_specs(objective: Objective) -> list[str]:
    """Every student tap spec the objective reads (for the training TapSet)."""
    return sorted({s for t in objective.specs for s in (*t.student_taps, t.student_embedding) if s})


def teacher_specs(objective: Objective) -> list[str]:
    return sorted({s for t in objective.specs for s in (*t.teacher_taps, t.teacher_embedding) if s})
