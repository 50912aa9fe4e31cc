"""From token tensors to the rows a kernel sees: layout and label checks, the vocabulary cut, the kept rows.

Student logits are ``(B, T, V)`` or ``(N, V)``; labels have the token layout ``(B, T)`` / ``(N,)`` and give,
at each position, the id of the token these logits should predict (the *next* token: labels already shifted
by one, see :func:`next_token_labels`). Positions whose label is ``ignore_index`` leave the loss and its mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from unikd.losses._common import as_float32, nan_if_nonfinite
from unikd.losses.checks import checks_enabled

from .sparse import SparseTeacher, bucketize, check_sparse_teacher
from .specs import TokenLossSpec
from .vocab import resolve_vocab

REDUCTIONS = ("mean", "sum")


def next_token_labels(
    input_ids: Tensor, *, ignore_index: int = -100, attention_mask: Tensor | None = None
) -> Tensor:
    """Labels aligned with causal-LM logits: position t gets token t + 1; the last position is ignored.

    ``input_ids`` ``(B, T)`` (or a Hugging Face ``labels`` tensor, whose ``-100`` entries stay ignored);
    positions whose *next* token is masked out by ``attention_mask`` are ignored too.
    """
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
        raise ValueError(
            f"input_ids must be an integer tensor (B, T), got {getattr(input_ids, 'shape', input_ids)!r}"
        )
    out = torch.full_like(input_ids, ignore_index)
    out[:, :-1] = input_ids[:, 1:]
    if attention_mask is not None:
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, got "
                f"{tuple(attention_mask.shape)}"
            )
        out[:, :-1] = out[:, :-1].masked_fill(attention_mask[:, 1:] == 0, ignore_index)
    return out


def check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be 'mean' (over the kept tokens) or 'sum', got {reduction!r}")
    return reduction


def check_ignore_index(ignore_index: int) -> int:
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise ValueError(f"ignore_index must be an int, got {ignore_index!r}")
    return ignore_index


def check_token_logits(x: object, name: str) -> Tensor:
    """A floating ``(B, T, V)`` or ``(N, V)`` tensor with V >= 2."""
    if not isinstance(x, Tensor):
        raise ValueError(
            f"{name} must be a torch.Tensor of shape (B, T, V) or (N, V), got {type(x).__name__}"
        )
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor (float32/bf16/fp16), got {x.dtype}")
    if x.dim() not in (2, 3):
        raise ValueError(f"{name} must have shape (B, T, V) or (N, V), got {tuple(x.shape)}")
    if x.shape[-1] < 2:
        raise ValueError(f"{name} has V={x.shape[-1]} entries; a vocabulary needs V >= 2")
    return x


def check_labels(
    labels: object, layout: tuple[int, ...], device: torch.device, *, required: bool, loss_name: str
) -> Tensor | None:
    """Integer labels of the token layout, on ``device`` (None allowed when the loss needs no target)."""
    if labels is None:
        if required:
            raise ValueError(
                f"token loss {loss_name!r} uses the next token as its target class: pass labels of shape "
                f"{layout} (ids, ignore_index where no token is predicted)"
            )
        return None
    if not isinstance(labels, Tensor) or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(
            f"labels must be an integer tensor of shape {layout}, got "
            f"{labels.dtype if isinstance(labels, Tensor) else type(labels).__name__}"
        )
    if tuple(labels.shape) != tuple(layout):
        raise ValueError(
            f"labels must have the token layout of the logits {layout}, got {tuple(labels.shape)}; "
            "labels give one id per position (already shifted to the next token)"
        )
    if labels.device != device:
        raise ValueError(
            f"labels are on {labels.device} but the logits on {device}; move them with .to(device)"
        )
    return labels.reshape(-1).long()


def check_label_range(labels: Tensor, keep: Tensor | None, vocab: int, ignore_index: int) -> None:
    """Every kept label must be a valid id below ``vocab`` (a host sync: only when checks are enabled,
    :mod:`unikd.losses.checks`)."""
    if not checks_enabled() or labels.numel() == 0:
        return
    kept = labels if keep is None else labels[keep]
    if kept.numel() and bool(((kept < 0) | (kept >= vocab)).any()):
        raise ValueError(
            f"labels out of range: ids must lie in [0, {vocab - 1}] (V={vocab}) or equal ignore_index="
            f"{ignore_index}; got min {int(kept.min())} and max {int(kept.max())}"
        )


@dataclass
class Rows:
    """The kept rows: student logits ``(n, V)``, the other side (logits ``(n, V)`` or a flat SparseTeacher),
    targets ``(n, 1)`` or None, and the number n."""

    student: Tensor
    other: Tensor | SparseTeacher
    target: Tensor | None
    count: int


def kept_rows(
    spec: TokenLossSpec,
    student_logits: object,
    other: object,
    labels: object,
    *,
    ignore_index: int,
    vocab_size: int | None,
) -> Rows:
    """Validate the token inputs of ``spec`` and gather the rows whose label is not ignored."""
    zs = check_token_logits(student_logits, "student_logits")
    layout = tuple(zs.shape[:-1])
    sparse = isinstance(other, SparseTeacher)
    other_name = f"{spec.other_name}_logits"
    if sparse and not spec.sparse_ok:
        raise ValueError(f"token loss {spec.name!r} takes dense {other_name}, not a SparseTeacher")
    if sparse:
        vocab = resolve_vocab(zs.shape[-1], zs.shape[-1], vocab_size)
        if other.device != zs.device:
            raise ValueError(f"the sparse teacher is on {other.device} but student_logits on {zs.device}")
        flat_other = check_sparse_teacher(other, layout, vocab)
    else:
        zo = check_token_logits(other, other_name)
        if tuple(zo.shape[:-1]) != layout:
            raise ValueError(
                f"student_logits cover tokens {layout} but {other_name} cover {tuple(zo.shape[:-1])}; pass "
                "outputs for the same batch and positions"
            )
        if zo.device != zs.device:
            raise ValueError(
                f"student_logits are on {zs.device} but {other_name} on {zo.device}; move both to one device"
            )
        vocab = resolve_vocab(zs.shape[-1], zo.shape[-1], vocab_size, teacher_name=spec.other_name)
    ignore_index = check_ignore_index(ignore_index)
    y = check_labels(labels, layout, zs.device, required=spec.uses_target, loss_name=spec.name)
    keep = None if y is None else (y != ignore_index)
    if y is not None:
        check_label_range(y, keep, vocab, ignore_index)
    # (n,) kept rows; None keeps every row as a view (no copy of the logits when nothing is ignored)
    index = None if keep is None or bool(keep.all()) else keep.nonzero().squeeze(1)

    def take(x: Tensor) -> Tensor:
        x = x.reshape(-1, x.shape[-1])
        x = x if index is None else x.index_select(0, index)
        return as_float32(x[:, :vocab])

    student = take(zs)
    if sparse:
        rows_other: Tensor | SparseTeacher = flat_other.rows(
            index if index is not None else torch.arange(flat_other.tail.shape[0], device=zs.device)
        )
    else:
        rows_other = take(zo)
        if not spec.trains_other:
            rows_other = rows_other.detach()
    target = None if y is None else (y if index is None else y.index_select(0, index)).unsqueeze(1)
    return Rows(student, rows_other, target, student.shape[0])


def rows_loss(
    spec: TokenLossSpec,
    student: Tensor,
    other: Tensor | SparseTeacher,
    target: Tensor | None,
    denom: float,
    hp: dict,
    stats: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """The loss of ``spec`` summed over these rows / ``denom``; a sparse teacher is bucketed first.

    NaN when any of these rows holds a non-finite logit (or the sparse teacher a non-finite log-probability),
    as the classification losses (docs/losses.md): a softmax gives a -inf logit probability 0, so the
    kernels alone would return a finite loss or +inf for it. The check sees only the rows and vocabulary
    entries the loss uses, so ignored positions and the padded entries beyond ``vocab_size`` may hold any
    value, -inf and NaN included.
    """
    if isinstance(other, SparseTeacher):
        zs, zt, idx = bucketize(student, other, target if spec.uses_target else None)
        loss = spec.kernel(zs, zt, idx, denom, hp, stats)
        return nan_if_nonfinite(loss, student, other.logprobs, other.tail)
    return nan_if_nonfinite(spec.kernel(student, other, target, denom, hp, stats), student, other)


def empty_loss(student_logits: Tensor, other: object = None) -> Tensor:
    """0 for a batch whose tokens are all ignored, attached to the graph (zero gradient, never NaN): to the
    student's logits, and to ``other`` too when it is a tensor that trains (USKD's weak logits), so every
    trained input gets a zero gradient rather than none (DDP and ``autograd.grad`` expect one)."""
    zero = student_logits.reshape(-1)[:0].float().sum()
    if isinstance(other, Tensor) and other.requires_grad:
        zero = zero + other.reshape(-1)[:0].float().sum()
    return zero


__all__ = ["Rows", "check_reduction", "empty_loss", "kept_rows", "next_token_labels", "rows_loss"]
