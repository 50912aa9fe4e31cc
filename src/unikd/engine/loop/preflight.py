"""Preflight: checks and a short table printed before the first training step.

The checks catch the mistakes that otherwise cost a whole run: a teacher with a different class count, a
teacher that is not actually trained (its measured val top-1 below ``teacher.min_top1``), a teacher trained
on differently normalised inputs, and schedules that silently differ (effective batch, lr, step counts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class Preflight:
    """Rows of the preflight table (label, value) plus the facts the trainer records."""

    rows: list[tuple[str, str]] = field(default_factory=list)
    teacher_top1: float | None = None

    def add(self, label: str, value: Any) -> None:
        self.rows.append((label, str(value)))

    def table(self) -> str:
        width = max(len(label) for label, _ in self.rows)
        line = "-" * (width + 2 + max(len(v) for _, v in self.rows))
        body = "\n".join(f"{label.ljust(width)}  {value}" for label, value in self.rows)
        return f"preflight\n{line}\n{body}\n{line}"


def count_parameters(module: nn.Module) -> str:
    n = sum(p.numel() for p in module.parameters())
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def check_teacher_input(sample: torch.Tensor, meta: dict[str, Any], name: str) -> None:
    """The data's images must have the channel count and size the teacher was trained on (as recorded in a
    unikd checkpoint): a teacher fed other images fails with a raw error or, worse, runs and is wrong."""
    chans, size = int(sample.shape[1]), tuple(int(s) for s in sample.shape[2:])
    t_chans, t_size = meta.get("in_chans"), meta.get("input_size")
    if t_chans is not None and int(t_chans) != chans:
        raise ValueError(
            f"teacher {name!r} was trained on {t_chans}-channel images but the data has {chans}-channel "
            f"images {size[0]}x{size[1]}; distil on data in the teacher's input format (or train a teacher "
            "on this data)"
        )
    if t_size is not None and tuple(int(s) for s in t_size) != size:
        raise ValueError(
            f"teacher {name!r} was trained on {t_size[0]}x{t_size[1]} images but the data gives "
            f"{size[0]}x{size[1]}; set data.image_size={t_size[0]} to resize the data to the teacher's input "
            "size (or train a teacher at this size)"
        )


def check_teacher_classes(teacher: nn.Module, sample: torch.Tensor, num_classes: int, name: str) -> int:
    """The teacher's output width, measured with one eval-mode forward; must equal the student's."""
    try:
        with torch.no_grad():
            out = teacher(sample)
    except RuntimeError as exc:  # e.g. a conv whose input channels differ: name the cause, not the layer
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(
            f"teacher {name!r} cannot run on the data's images (shape {tuple(sample.shape[1:])}): {first}. "
            "Check teacher.model, the data's channels and data.image_size"
        ) from exc
    width = int(out.shape[-1])
    if width != num_classes:
        raise ValueError(
            f"teacher {name!r} predicts {width} classes but the student has {num_classes}; distil on the "
            "data the teacher was trained on (or set num_classes to match)"
        )
    return width


def check_teacher_top1(top1: float, min_top1: float | None, name: str) -> None:
    if min_top1 is not None and top1 < min_top1:
        raise ValueError(
            f"teacher {name!r} reaches only {top1:.2f}% val top-1, below teacher.min_top1={min_top1}; "
            "check teacher.checkpoint (is it trained? on this data and normalisation?) or lower "
            "teacher.min_top1"
        )


def normalisation_note(student: tuple[tuple[float, ...], tuple[float, ...]], teacher_data: Any) -> str:
    """Compare the input normalisation of the data with the one recorded in a unikd teacher checkpoint."""
    mean, std = student
    text = f"mean={_fmt(mean)} std={_fmt(std)}"
    if not isinstance(teacher_data, dict) or "mean" not in teacher_data:
        return text
    t_mean, t_std = tuple(teacher_data["mean"]), tuple(teacher_data["std"])
    same = len(t_mean) == len(mean) and all(abs(a - b) < 1e-3 for a, b in zip(t_mean + t_std, mean + std))
    if same:
        return f"{text} (teacher: same)"
    return f"{text} (teacher trained with mean={_fmt(t_mean)} std={_fmt(t_std)}: DIFFERENT)"


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in values) + ")"
