"""The plain, readable form of :func:`~unikd.token.fused_distill_loss`: materialise the logits, call the loss.

It needs ``B*T*V`` floats per model (and autograd keeps several such tensors), which is what the fused path
avoids; it is kept beside the fast path as its specification, and the tests compare the two.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .functional import cross_entropy, token_loss
from .sparse import SparseTeacher
from .specs import get_spec


def fused_distill_loss_reference(
    name: str,
    student_hidden: Tensor,
    student_head: Tensor,
    teacher_hidden: Tensor | SparseTeacher,
    teacher_head: Tensor | None,
    labels: Tensor,
    *,
    student_bias: Tensor | None = None,
    teacher_bias: Tensor | None = None,
    ce_weight: float = 1.0,
    weight: float = 1.0,
    ignore_index: int = -100,
    vocab_size: int | None = None,
    reduction: str = "mean",
    **loss_kwargs: Any,
) -> Tensor:
    """``weight * token_loss(name) + ce_weight * cross_entropy`` of the materialised logits (same arguments
    as :func:`~unikd.token.fused_distill_loss`, without ``chunk_size``)."""
    spec = get_spec(name)
    student_logits = F.linear(student_hidden, student_head, student_bias)  # (B, T, V_s)
    if isinstance(teacher_hidden, SparseTeacher):
        other: Tensor | SparseTeacher = teacher_hidden
    else:
        with torch.set_grad_enabled(spec.trains_other and torch.is_grad_enabled()):
            other = F.linear(teacher_hidden, teacher_head, teacher_bias)  # (B, T, V_t)
    common = {"ignore_index": ignore_index, "vocab_size": vocab_size, "reduction": reduction}
    distill = token_loss(name, student_logits, other, labels, **common, **loss_kwargs)
    if not ce_weight:
        return weight * distill
    return weight * distill + ce_weight * cross_entropy(student_logits, labels, **common)


__all__ = ["fused_distill_loss_reference"]
