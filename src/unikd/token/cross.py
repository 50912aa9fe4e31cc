"""Shared machinery of the cross-tokenizer losses: input checks, the aligned rows, the reductions, and the
registry :data:`CROSS_TOKENIZER_LOSSES` (names -> modules, :func:`create_cross_tokenizer_loss`).

Every cross-tokenizer loss is called as ``loss(student_logits, teacher_logits, alignment)`` with
``student_logits`` ``(B, Ts, Vs)``, ``teacher_logits`` ``(B, Tt, Vt)`` (any lengths and vocabulary sizes)
and a :class:`~unikd.token.alignment.TokenAlignment`. It computes one value per aligned pair and reduces
them: ``mean`` over pairs, ``sum``, or ``sequence_mean`` (mean over each sequence's pairs, then over the
sequences that have at least one pair). The cross-entropy on the student's own labels is not included: add
:func:`unikd.token.cross_entropy` with the weight you want.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from unikd.losses._common import as_float32, nan_if_nonfinite
from unikd.registry import Registry

from .alignment import TokenAlignment

CROSS_REDUCTIONS = ("mean", "sum", "sequence_mean")


def check_cross_reduction(reduction: Any) -> str:
    if reduction not in CROSS_REDUCTIONS:
        raise ValueError(
            f"reduction must be 'mean' (over aligned pairs), 'sum' or 'sequence_mean' (per sequence, then "
            f"over sequences), got {reduction!r}"
        )
    return reduction


def _check_logits(x: Any, name: str) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError(
            f"{name} must be a floating tensor (B, T, V), got {getattr(x, 'dtype', type(x).__name__)}"
        )
    if x.dim() != 3:
        raise ValueError(
            f"{name} must have shape (B, T, V) (one row of positions per text), got {tuple(x.shape)}; add a "
            "batch dimension with .unsqueeze(0)"
        )
    if x.shape[-1] < 2:
        raise ValueError(f"{name} has V={x.shape[-1]} entries; a vocabulary needs V >= 2")
    return x


def _check_positions(pos: Tensor, length: int, name: str) -> None:
    if pos.numel() and (int(pos.min()) < 0 or int(pos.max()) >= length):
        raise ValueError(
            f"alignment {name} positions must lie in [0, {length - 1}] (the logits' length), got min "
            f"{int(pos.min())} and max {int(pos.max())}; build the alignment from the same batch"
        )


def aligned_rows(student_logits: Any, teacher_logits: Any, alignment: Any) -> tuple[Tensor, Tensor, Tensor]:
    """Validate the inputs and gather the aligned rows: student ``(P, Vs)``, detached teacher ``(P, Vt)``
    (float32, or float64 when given) and the pairs' sequence ids ``(P,)``."""
    zs = _check_logits(student_logits, "student_logits")
    zt = _check_logits(teacher_logits, "teacher_logits")
    if not isinstance(alignment, TokenAlignment):
        raise ValueError(
            f"alignment must be a TokenAlignment (from truncation_alignment or span_alignment), got "
            f"{type(alignment).__name__}"
        )
    if zs.shape[0] != zt.shape[0] or alignment.num_sequences != zs.shape[0]:
        raise ValueError(
            f"batch sizes differ: student_logits {zs.shape[0]}, teacher_logits {zt.shape[0]}, alignment "
            f"{alignment.num_sequences} sequences; all three must come from the same texts"
        )
    if zt.device != zs.device:
        raise ValueError(
            f"student_logits are on {zs.device} but teacher_logits on {zt.device}; move both to one device"
        )
    a = alignment.to(zs.device)
    _check_positions(a.sequence, zs.shape[0], "sequence")
    _check_positions(a.student_position, zs.shape[1], "student")
    _check_positions(a.teacher_position, zt.shape[1], "teacher")
    rs = as_float32(zs[a.sequence, a.student_position])
    rt = as_float32(zt.detach()[a.sequence, a.teacher_position])
    return rs, rt, a.sequence


def reduce_pairs(
    per_pair: Tensor, sequence: Tensor, num_sequences: int, reduction: str, *inputs: Tensor
) -> Tensor:
    """Reduce the per-pair values; NaN when an aligned row holds a non-finite logit (as every token loss)."""
    if reduction == "sum":
        loss = per_pair.sum()
    elif reduction == "mean":
        loss = per_pair.mean()
    else:
        sums = per_pair.new_zeros(num_sequences).index_add(0, sequence, per_pair)
        counts = torch.bincount(sequence, minlength=num_sequences).to(per_pair.dtype)
        has = counts > 0
        loss = (sums[has] / counts[has]).mean()
    return nan_if_nonfinite(loss, *inputs)


def empty_cross_loss(student_logits: Tensor) -> Tensor:
    """0 attached to the student's graph (zero gradient) when no position is aligned."""
    return student_logits.reshape(-1)[:0].float().sum()


CROSS_TOKENIZER_LOSSES: Registry[nn.Module] = Registry("cross-tokenizer loss")


def create_cross_tokenizer_loss(
    name: str, *, student_tokenizer: Any = None, teacher_tokenizer: Any = None, **hyperparameters: Any
) -> nn.Module:
    """The cross-tokenizer loss module ``name`` (``uld``, ``span_kl``); ``span_kl`` needs both tokenizers
    (or their ``{token: id}`` vocabularies) to find the shared tokens, ``uld`` needs neither."""
    if not isinstance(name, str):
        raise ValueError(f"the loss name must be a string, got {type(name).__name__}")
    factory = CROSS_TOKENIZER_LOSSES.get(name)
    return factory(
        student_tokenizer=student_tokenizer, teacher_tokenizer=teacher_tokenizer, **hyperparameters
    )


def list_cross_tokenizer_losses() -> list[str]:
    """The cross-tokenizer loss names, sorted."""
    return CROSS_TOKENIZER_LOSSES.names()


__all__ = [
    "CROSS_TOKENIZER_LOSSES",
    "aligned_rows",
    "create_cross_tokenizer_loss",
    "list_cross_tokenizer_losses",
    "reduce_pairs",
]
