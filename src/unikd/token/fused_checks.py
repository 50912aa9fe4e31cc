"""The argument checks of :func:`unikd.token.fused_distill_loss`: hidden states, heads, the teacher side
(hidden states and a head, or a sparse teacher) and the chunk size, each failing with the fix."""

from __future__ import annotations

import torch
from torch import Tensor

from .sparse import SparseTeacher, check_sparse_teacher
from .specs import TokenLossSpec
from .vocab import resolve_vocab

__all__ = ["check_chunk_size", "check_head", "check_hidden", "check_other_side", "default_chunk_size"]

# Default chunk: about this many logits per model (128 MiB in fp32), so the live memory does not grow with V.
CHUNK_FLOATS = 1 << 25
MIN_CHUNK = 16


def default_chunk_size(vocab_size: int) -> int:
    """Tokens per chunk when ``chunk_size`` is None: ``2**25 // V`` (256 at V=128k, 1024 at V=32k), >= 16."""
    return max(MIN_CHUNK, CHUNK_FLOATS // max(1, vocab_size))


def check_hidden(x: object, name: str, layout: tuple[int, ...] | None) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() not in (2, 3):
        raise ValueError(
            f"{name} must be a floating tensor of shape (B, T, d) or (N, d), got "
            f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}"
        )
    if layout is not None and tuple(x.shape[:-1]) != layout:
        raise ValueError(f"{name} covers tokens {tuple(x.shape[:-1])} but the student covers {layout}")
    return x


def check_head(w: object, b: object, d: int, name: str, hidden_name: str, device: torch.device) -> None:
    if not isinstance(w, Tensor) or not w.is_floating_point() or w.dim() != 2:
        raise ValueError(
            f"{name} must be the output-head weight, a floating (V, d) tensor (e.g. model.lm_head.weight), "
            "got "
            f"{tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__}"
        )
    if w.shape[1] != d:
        raise ValueError(
            f"{name} has shape {tuple(w.shape)} but {hidden_name} has d={d} features; "
            f"the head must be (V, {d})"
        )
    if w.device != device:
        raise ValueError(f"{name} is on {w.device} but {hidden_name} on {device}; move both to one device")
    if b is not None and (not isinstance(b, Tensor) or tuple(b.shape) != (w.shape[0],)):
        raise ValueError(
            f"the bias of {name} must have shape ({w.shape[0]},), got "
            f"{tuple(b.shape) if isinstance(b, Tensor) else type(b).__name__}"
        )


def check_other_side(
    spec: TokenLossSpec,
    name: str,
    hs: Tensor,
    student_head: Tensor,
    teacher_hidden: Tensor | SparseTeacher,
    teacher_head: Tensor | None,
    teacher_bias: Tensor | None,
    vocab_size: int | None,
) -> tuple[int, SparseTeacher | None, Tensor | None, Tensor | None, Tensor | None]:
    """The shared vocabulary and the teacher side: ``(vocab, flat sparse teacher or None, hidden, head,
    bias)`` (the last three None for a sparse teacher)."""
    layout = tuple(hs.shape[:-1])
    other_name = spec.other_name
    if isinstance(teacher_hidden, SparseTeacher):
        if not spec.sparse_ok:
            raise ValueError(f"token loss {name!r} needs hidden states and a head for its {other_name} side")
        if teacher_head is not None or teacher_bias is not None:
            raise ValueError(
                "with a SparseTeacher as teacher_hidden, teacher_head and teacher_bias must be None"
            )
        vocab = resolve_vocab(student_head.shape[0], student_head.shape[0], vocab_size)
        if teacher_hidden.device != hs.device:
            raise ValueError(
                f"the sparse teacher is on {teacher_hidden.device} but student_hidden on {hs.device}"
            )
        return vocab, check_sparse_teacher(teacher_hidden, layout, vocab), None, None, None
    ho = check_hidden(teacher_hidden, f"{other_name}_hidden (teacher_hidden)", layout)
    if ho.device != hs.device:
        raise ValueError(f"teacher_hidden is on {ho.device} but student_hidden on {hs.device}")
    head_name = f"{other_name}_head (teacher_head)"
    check_head(teacher_head, teacher_bias, ho.shape[-1], head_name, "teacher_hidden", hs.device)
    vocab = resolve_vocab(student_head.shape[0], teacher_head.shape[0], vocab_size, teacher_name=other_name)
    return vocab, None, ho, teacher_head, teacher_bias


def check_chunk_size(chunk_size: object, vocab: int) -> int:
    """Tokens per chunk: the given positive int, or the default for ``vocab``."""
    if chunk_size is None:
        return default_chunk_size(vocab)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int (tokens per chunk), got {chunk_size!r}")
    return chunk_size
