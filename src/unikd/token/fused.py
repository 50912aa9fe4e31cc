"""Fused output head + token loss, chunked over tokens: the loss of ``head(hidden)`` without its logits.

The logits of a language model are its largest tensor (B*T*V floats, 2 GB in fp32 at 4096 tokens and a 128k
vocabulary, times several for the softmaxes and gradients of two models). :func:`fused_distill_loss` takes
the hidden states and the output-head weights instead, and walks the kept tokens a chunk at a time:

1. ``z_s = h_s W_s^T (+ b_s)`` and ``z_t = h_t W_t^T (+ b_t)`` for the chunk (``chunk x V`` each);
2. the token loss of the chunk (the same kernel as the unfused loss) plus ``ce_weight * CE``, and its
   gradient ``g = dL/dz_s`` by autograd on the chunk alone;
3. ``dL/dh_s = g W_s`` for the chunk's rows, ``dL/dW_s += g^T h_s``, ``dL/db_s += sum g``;

then frees the chunk. Gradients are finished during the forward pass and the backward pass only scales
them, so no logits survive it. Every step is an ordinary PyTorch op: it runs on any device and dtype.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from unikd.losses._common import as_float32, check_weight

from .fused_checks import check_chunk_size, check_head, check_hidden, check_other_side, default_chunk_size
from .grad_buffers import GradBuffers
from .rows import check_ignore_index, check_label_range, check_labels, check_reduction, rows_loss
from .sparse import SparseTeacher
from .specs import TokenLossSpec, get_spec


@dataclass(frozen=True)
class _Plan:
    spec: TokenLossSpec
    hp: dict[str, Any]
    vocab: int
    chunk: int
    ce_weight: float
    weight: float
    ignore_index: int
    mean: bool
    sparse: bool
    needs: tuple[bool, ...]  # gradients wanted for (h_s, W_s, b_s, h_o, W_o, b_o)


class _FusedDistill(torch.autograd.Function):
    """Value and gradients in one chunked pass (:func:`_chunked_pass`); backward scales the stored grads."""

    @staticmethod
    def forward(ctx, hs, ws, bs, ho, wo, bo, sp_logp, sp_ids, sp_tail, labels, plan):  # type: ignore[override]
        other = SparseTeacher(sp_logp, sp_ids, sp_tail) if plan.sparse else (ho, wo, bo)
        loss, distill, ce, grads = _chunked_pass(plan, hs, ws, bs, other, labels)
        ctx.save_for_backward(*grads)
        ctx.mark_non_differentiable(distill, ce)
        return loss, distill, ce

    @staticmethod
    def backward(ctx, grad_loss, _grad_distill, _grad_ce):  # type: ignore[override]
        grads = [None if g is None else g * grad_loss.to(g.dtype) for g in ctx.saved_tensors]
        return (*grads, None, None, None, None, None)


def _chunked_pass(
    plan: _Plan,
    hs: Tensor,
    ws: Tensor,
    bs: Tensor | None,
    other: SparseTeacher | tuple[Tensor, Tensor, Tensor | None],
    labels: Tensor,
):
    """The loss over the kept tokens, chunk by chunk, and the gradients the plan asks for."""
    spec, vocab = plan.spec, plan.vocab
    keep = (labels != plan.ignore_index).nonzero().squeeze(1)  # (n,) kept token rows
    n = keep.numel()
    denom = float(n) if plan.mean else 1.0
    ws_v = ws[:vocab]
    bs_v = None if bs is None else bs[:vocab]
    if not plan.sparse:
        ho, wo, bo = other
        wo_v, bo_v = wo[:vocab], (None if bo is None else bo[:vocab])

    want = plan.needs
    student_grads = GradBuffers(hs, ws, bs, want[:3], vocab)
    other_grads = GradBuffers(ho, wo, bo, want[3:], vocab) if not plan.sparse else None
    grad_student = any(want[:3])
    grad_other = spec.trains_other and not plan.sparse and any(want[3:])

    def other_chunk(rows: Tensor) -> Tensor | SparseTeacher:
        if plan.sparse:
            return other.rows(rows)
        return F.linear(ho.index_select(0, rows), wo_v, bo_v)  # (c, V)

    stats = None
    if spec.batch_stats is not None and n:
        # USKD's customised target needs a batch mean over every kept token before any chunk's loss.
        sums = counts = None
        with torch.no_grad():
            for start in range(0, n, plan.chunk):
                rows = keep[start : start + plan.chunk]
                zs = as_float32(F.linear(hs.index_select(0, rows), ws_v, bs_v))
                s, c = spec.batch_stats(zs, labels.index_select(0, rows).unsqueeze(1))
                sums, counts = (s, c) if sums is None else (sums + s, counts + c)
        stats = (sums, counts)

    acc_dtype = torch.float64 if hs.dtype == torch.float64 else torch.float32
    loss_sum = torch.zeros((), dtype=acc_dtype, device=hs.device)
    distill_sum = torch.zeros((), dtype=acc_dtype, device=hs.device)
    ce_sum = torch.zeros((), dtype=acc_dtype, device=hs.device)
    for start in range(0, n, plan.chunk):
        rows = keep[start : start + plan.chunk]
        h = hs.index_select(0, rows)  # (c, d_s)
        target = labels.index_select(0, rows).unsqueeze(1)  # (c, 1)
        zs_raw = F.linear(h, ws_v, bs_v)  # (c, V), in the caller's dtype / autocast
        zo_raw = other_chunk(rows)
        grad_ctx = torch.enable_grad() if (grad_student or grad_other) else contextlib.nullcontext()
        with grad_ctx:
            zs = as_float32(zs_raw.detach()).requires_grad_(grad_student)
            if isinstance(zo_raw, SparseTeacher):
                zo: Tensor | SparseTeacher = zo_raw
            else:
                zo = as_float32(zo_raw.detach()).requires_grad_(grad_other)
            distill = rows_loss(spec, zs, zo, target, denom, plan.hp, stats)
            ce = (
                F.cross_entropy(zs, target.squeeze(1), reduction="sum") / denom
                if plan.ce_weight
                else distill.new_zeros(())
            )
            total = plan.weight * distill + plan.ce_weight * ce
            inputs = ([zs] if grad_student else []) + ([zo] if grad_other else [])
            grads = torch.autograd.grad(total, inputs) if inputs else ()
        loss_sum += total.detach()
        distill_sum += distill.detach()
        ce_sum += ce.detach()
        del zs, zo, zs_raw, zo_raw, distill, ce, total  # free this chunk before the next one is computed
        grads = list(grads)
        if grad_student:
            student_grads.add(rows, grads.pop(0), h, ws_v)
        if grad_other:
            other_grads.add(rows, grads.pop(0), ho.index_select(0, rows), wo_v)
    out_dtype = torch.float64 if acc_dtype == torch.float64 else torch.float32
    result = [student_grads.finish(), other_grads.finish() if other_grads is not None else (None,) * 3]
    return (
        loss_sum.to(out_dtype),
        distill_sum.to(out_dtype),
        ce_sum.to(out_dtype),
        [g for part in result for g in part],
    )


def fused_distill_loss(
    name: str,
    student_hidden: Tensor,
    student_head: Tensor,
    teacher_hidden: Tensor | SparseTeacher,
    teacher_head: Tensor | None,
    labels: Tensor,
    *,
    student_bias: Tensor | None = None,
    teacher_bias: Tensor | None = None,
    chunk_size: int | None = None,
    ce_weight: float = 1.0,
    weight: float = 1.0,
    ignore_index: int = -100,
    vocab_size: int | None = None,
    reduction: str = "mean",
    return_parts: bool = False,
    **loss_kwargs: Any,
) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
    """``weight * loss(name) + ce_weight * CE`` of the logits ``head(hidden)``, never materialising them.

    Equal in value and gradients to :func:`fused_distill_loss_reference` (materialise both logits, call
    :func:`unikd.token.token_loss` and :func:`unikd.token.cross_entropy`), with at most one chunk of
    ``chunk_size x V`` logits per model alive (plus a few same-sized temporaries of the loss).

    Args:
        name: a token loss (``kd``, ``reverse_kl``, ``jsd``, ``dkd``, ``nkd``, ``uskd``, ``taid``).
        student_hidden: ``(B, T, d_s)`` or ``(N, d_s)``: the student's final hidden states (after the final
            norm), the input of its output head.
        student_head: ``(V_s, d_s)`` output-head weight (``model.lm_head.weight``); ``student_bias``
            ``(V_s,)``.
        teacher_hidden: ``(B, T, d_t)`` teacher final hidden states with ``teacher_head`` ``(V_t, d_t)``
            (``teacher_bias``), run without gradient; or a :class:`~unikd.token.SparseTeacher` with
            ``teacher_head=None``. For ``uskd``: the student's *middle-layer* hidden states and (usually)
            the student's own head, both receiving gradients (the weak logits).
        labels: ``(B, T)`` / ``(N,)`` next-token ids (:func:`~unikd.token.next_token_labels`);
            ``ignore_index`` positions leave the loss and the mean.
        chunk_size: tokens per chunk; default ``2**25 // V`` (see :func:`default_chunk_size`).
        ce_weight: weight of the next-token cross-entropy, computed in the same pass (0 to leave it out);
            >= 0.
        weight: weight of the distillation term, >= 0.
        vocab_size: cut both heads to their first ``vocab_size`` rows (needed when their sizes differ, e.g. a
            padded head; the extra rows get zero gradient). Different sizes without it raise ``ValueError``.
        reduction: ``"mean"`` over the kept tokens (default) or ``"sum"`` (divide by a token count of your
            own, e.g. across gradient-accumulation steps).
        return_parts: also return ``{"loss", "distill", "ce"}`` as detached 0-dim tensors (for logging; the
            distill value is what a TAID schedule needs).
        **loss_kwargs: the loss's hyperparameters (``temperature``, ``beta``, ``gamma``, ``t``, ...).

    Returns:
        A 0-dim float32 tensor (float64 for float64 inputs) whose ``backward()`` fills the gradients of
        ``student_hidden``, ``student_head`` and ``student_bias`` (for ``uskd`` also of the weak side). With
        all tokens ignored the loss is 0 and the gradients are zero.

    Runs eagerly under ``torch.compile`` (the model around it compiles; this function is excluded from
    tracing: its chunk loop and per-chunk autograd would only cause graph breaks).
    """
    return _fused_entry(
        name,
        student_hidden,
        student_head,
        teacher_hidden,
        teacher_head,
        labels,
        student_bias=student_bias,
        teacher_bias=teacher_bias,
        chunk_size=chunk_size,
        ce_weight=ce_weight,
        weight=weight,
        ignore_index=ignore_index,
        vocab_size=vocab_size,
        reduction=reduction,
        return_parts=return_parts,
        loss_kwargs=loss_kwargs,
    )


@torch.compiler.disable
def _fused_entry(
    name,
    student_hidden,
    student_head,
    teacher_hidden,
    teacher_head,
    labels,
    *,
    student_bias,
    teacher_bias,
    chunk_size,
    ce_weight,
    weight,
    ignore_index,
    vocab_size,
    reduction,
    return_parts,
    loss_kwargs,
):
    spec = get_spec(name)
    hp = spec.hyperparameters(loss_kwargs)
    reduction = check_reduction(reduction)
    ignore_index = check_ignore_index(ignore_index)
    ce_weight, weight = check_weight(ce_weight, "ce_weight"), check_weight(weight, "weight")

    hs = check_hidden(student_hidden, "student_hidden", None)
    layout = tuple(hs.shape[:-1])
    check_head(student_head, student_bias, hs.shape[-1], "student_head", "student_hidden", hs.device)
    sparse = isinstance(teacher_hidden, SparseTeacher)
    vocab, flat, ho, wo, bo = check_other_side(
        spec, name, hs, student_head, teacher_hidden, teacher_head, teacher_bias, vocab_size
    )
    y = check_labels(labels, layout, hs.device, required=True, loss_name=name)
    check_label_range(y, y != ignore_index, vocab, ignore_index)
    chunk = check_chunk_size(chunk_size, vocab)

    hs2 = hs.reshape(-1, hs.shape[-1])
    grad_on = torch.is_grad_enabled()
    trains_other = spec.trains_other and not sparse

    def wants(x: Tensor | None, allowed: bool = True) -> bool:
        return bool(grad_on and allowed and x is not None and x.requires_grad)

    ho2 = None if sparse else ho.reshape(-1, ho.shape[-1])
    needs = (
        wants(hs),
        wants(student_head),
        wants(student_bias),
        wants(ho, trains_other),
        wants(wo, trains_other),
        wants(bo, trains_other),
    )
    plan = _Plan(spec, hp, vocab, chunk, ce_weight, weight, ignore_index, reduction == "mean", sparse, needs)
    if not trains_other and not sparse:  # the teacher side is a constant, as in the unfused losses
        ho2, wo, bo = ho2.detach(), wo.detach(), (None if bo is None else bo.detach())
    sp = (flat.logprobs, flat.ids, flat.tail) if sparse else (None, None, None)
    loss, distill, ce = _FusedDistill.apply(hs2, student_head, student_bias, ho2, wo, bo, *sp, y, plan)
    if return_parts:
        return loss, {"loss": loss.detach(), "distill": distill, "ce": ce}
    return loss


__all__ = ["default_chunk_size", "fused_distill_loss"]
