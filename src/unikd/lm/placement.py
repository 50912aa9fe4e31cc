"""Where the frozen teacher runs: its device and dtype, and the one transfer per micro-batch between the two.

A teacher on its own device (the CPU beside a GPU student, a second GPU) receives the batch's model inputs
there and returns its last hidden state, ``(B, T, d)``, moved to the student's device once per micro-batch;
the fused loss then applies the teacher's head there chunk by chunk, so the transfer is ``d`` numbers per
token instead of ``V``. The head itself (frozen) is copied to the student's device once and reused, in the
teacher's dtype: ``V * d`` numbers, the price of never moving logits. ``fused=False`` moves the teacher's
``(B, T, V)`` logits instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .capture import output_head
from .settings import parse_device, parse_dtype
from .sharding import is_sharded


def freeze_teacher(
    teacher: nn.Module, device: torch.device | str, dtype: torch.dtype | str | None = None
) -> nn.Module:
    """Eval mode, no gradients, on ``device`` (and in ``dtype`` when given)."""
    teacher.eval()
    teacher.requires_grad_(False)
    dtype = parse_dtype(dtype, "teacher_dtype")
    return teacher.to(device=device, dtype=dtype) if dtype is not None else teacher.to(device)


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class TeacherPlacement:
    """The teacher on ``device`` (default: the training device) in ``dtype`` (default: its own)."""

    def __init__(
        self, teacher: nn.Module, train_device: torch.device, device: Any = None, dtype: Any = None
    ) -> None:
        if is_sharded(teacher):  # FSDP2 placed its shards; moving them would break the sharding
            if device is not None or dtype is not None:
                raise ValueError(
                    "the teacher is sharded (FSDP2): it stays where fully_shard put it, in its own dtype; "
                    "drop teacher_device / teacher_dtype, or shard a teacher already on that device and dtype"
                )
            self.teacher = teacher.eval().requires_grad_(False)
        else:
            target = parse_device(device, "teacher_device") or train_device
            self.teacher = freeze_teacher(teacher, target, dtype)
        self.device = _device_of(self.teacher)
        self._head: tuple[torch.device, Tensor, Tensor | None] | None = None

    def inputs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """The model inputs on the teacher's device (the same tensors when it is already there)."""
        return {k: v.to(self.device) if isinstance(v, Tensor) else v for k, v in inputs.items()}

    def head(self, device: torch.device) -> tuple[Tensor, Tensor | None]:
        """The teacher's output head on ``device``: its own tensors there, else a copy made once (a sharded
        teacher's head is gathered at each call: a cached copy would undo the sharding)."""
        weight, bias = output_head(self.teacher, "teacher")
        if weight.device == device:
            return weight, bias
        if self._head is None or self._head[0] != device:
            self._head = (device, weight.to(device), None if bias is None else bias.to(device))
        return self._head[1], self._head[2]


__all__ = ["TeacherPlacement", "freeze_teacher"]
