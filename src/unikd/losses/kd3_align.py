"""KD³ knowledge memorization (Tang, Chen, Niu, Sugiyama and Gong, "Distribution Shift Matters for Knowledge
Distillation with Webly Collected Images", ICCV 2023, arXiv:2307.11469), part 2 of 3: "we align both the
weighted features and classifier parameters of the two networks for knowledge memorization" (the paper's
abstract).

    kd3_align = sum_i w_i ||P f_S,i - f_T,i||^2 / (D_T sum_i w_i)            (weighted features)
              + head_weight * mean(([W_S | b_S] - [W_T P | b_T])^2)          (classifier parameters)

``f_S`` / ``f_T`` the pooled inputs of the student's / teacher's final ``nn.Linear`` (the ``embedding``
taps), ``W``, ``b`` those classifiers' weights and biases, ``P`` a trainable ``D_S -> D_T`` linear map (no
bias), ``w_i`` the per-sample weights of the dynamic instance selection (:mod:`unikd.losses.kd3_select`;
all 1 without it). ``W_T P`` is the teacher's classifier seen through ``P``: when ``P f_S = f_T``, the
student's classifier equal to it gives the teacher's logits, which is what aligning parameters of
different widths can mean. The teacher's features and parameters are constants; ``W_S``, ``b_S`` (the
student's own classifier) and ``P`` are trained.

The paper's method section could not be read, so these choices are this library's, not the paper's: the
features are the classifier inputs; "weighted" means weighted by the selection weights; the squared
distances (feature mean over D_T, parameter mean over entries); the projector ``P`` (the identity at the
start when both widths agree, PyTorch's default initialisation otherwise) and the ``W_T P`` form of the
parameter alignment; biases aligned when both classifiers have one; ``head_weight`` 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ._common import nan_if_nonfinite
from ._features import check_embedding, check_same_batch, common_dtype
from .checks import checks_enabled

HeadParams = Callable[[], tuple[Tensor, Tensor | None]]


def _matrix(x: object, name: str) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() != 2 or 0 in x.shape:
        what = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a non-empty floating (C, D) classifier weight, got {what}")
    return x


def _weights(sample_weights: Tensor | None, n: int, like: Tensor) -> Tensor:
    if sample_weights is None:
        return torch.ones(n, dtype=like.dtype, device=like.device)
    w = sample_weights
    if not isinstance(w, Tensor) or not w.is_floating_point() or w.shape != (n,):
        what = f"{w.dtype} {tuple(w.shape)}" if isinstance(w, Tensor) else type(w).__name__
        raise ValueError(f"sample_weights must be a floating (N,) = ({n},) tensor, got {what}")
    if checks_enabled() and bool((w < 0).any()):
        raise ValueError("sample_weights must be >= 0 (the selection weights)")
    return w.detach().to(like.dtype)


def kd3_align_loss(
    student_feat: Tensor,
    teacher_feat: Tensor,
    student_weight: Tensor,
    teacher_weight: Tensor,
    *,
    student_bias: Tensor | None = None,
    teacher_bias: Tensor | None = None,
    sample_weights: Tensor | None = None,
    head_weight: float = 1.0,
) -> Tensor:
    """Weighted feature MSE plus ``head_weight`` times the classifier-parameter MSE (module docstring).

    Args:
        student_feat: ``(N, D_T)`` student features AFTER the projector ``P``.
        teacher_feat: ``(N, D_T)`` teacher features; detached.
        student_weight: ``(C, D_S)`` the student's classifier weight (trained).
        teacher_weight: ``(C, D_S)`` the teacher's classifier weight through the projector, ``W_T P`` (not
            detached: the projector's gradient flows through it; pass ``W_T`` detached).
        student_bias, teacher_bias: ``(C,)``; aligned when both are given.
        sample_weights: ``(N,)`` non-negative weights (default all 1); all zero gives a 0 feature part.
        head_weight: finite number >= 0.

    Returns:
        0-dim float32 tensor (float64 for float64 inputs); NaN when an input is not finite.
    """
    s = check_embedding(student_feat, "student_feat")
    t = check_embedding(teacher_feat, "teacher_feat").detach()
    check_same_batch(s, t, "student_feat", "teacher_feat")
    if s.shape[1] != t.shape[1]:
        raise ValueError(f"student_feat has D={s.shape[1]} but teacher_feat D={t.shape[1]}; project the "
                         "student's "
                         "features to the teacher's width first (KD3AlignLoss owns that projector)")
    ws, wt = _matrix(student_weight, "student_weight"), _matrix(teacher_weight, "teacher_weight")
    if ws.shape != wt.shape:
        raise ValueError(f"student_weight {tuple(ws.shape)} and teacher_weight {tuple(wt.shape)} differ; "
                         "pass "
                         "the teacher's weight through the projector (W_T @ P), of the student's shape (C, "
                         "D_S)")
    if isinstance(head_weight, bool) or not isinstance(head_weight, (int, float)) or not (
            math.isfinite(head_weight) and head_weight >= 0):
        raise ValueError(f"head_weight must be a finite number >= 0, got {head_weight!r}")
    dtype = common_dtype(s, t, ws, wt)
    s, t, ws, wt = s.to(dtype), t.to(dtype), ws.to(dtype), wt.to(dtype)
    w = _weights(sample_weights, s.shape[0], s)
    feature = (w * (s - t).square().mean(dim=1)).sum() / w.sum().clamp_min(torch.finfo(dtype).tiny)
    head = (ws - wt).square().sum()
    count = ws.numel()
    if student_bias is not None and teacher_bias is not None:
        if student_bias.shape != (ws.shape[0],) or teacher_bias.shape != (ws.shape[0],):
            raise ValueError(f"student_bias and teacher_bias must have shape ({ws.shape[0]},), got "
                             f"{tuple(student_bias.shape)} and {tuple(teacher_bias.shape)}")
        head = head + (student_bias.to(dtype) - teacher_bias.to(dtype)).square().sum()
        count += ws.shape[0]
    # every element reaches one of the squares: a non-finite input makes the sum inf or NaN, NaN either way
    return nan_if_nonfinite(feature + head_weight * head / count)


class KD3AlignLoss(nn.Module):
    """KD³ knowledge memorization: :func:`kd3_align_loss` on the embeddings and the two classifiers.

    Called as ``loss(student_logits, student_embedding, teacher_embedding, sample_weights)``. Built with the
    embedding widths and two callables returning ``(weight, bias)`` of each network's final ``nn.Linear``
    (the harness reads them at every step, so the student's are its current, trained parameters). Owns the
    projector ``P`` (trained with the student, saved in the checkpoint).
    """

    requires = ("student_embedding", "teacher_embedding", "sample_weights")

    def __init__(self, in_features: int, teacher_in_features: int, student_head: HeadParams,
                 teacher_head: HeadParams, *, head_weight: float = 1.0) -> None:
        super().__init__()
        for name, f in (("student_head", student_head), ("teacher_head", teacher_head)):
            if not callable(f) or isinstance(f, nn.Module):
                raise ValueError(f"{name} must be a callable returning (weight, bias) of the classifier, not "
                                 "a "
                                 "module (the loss must not own the network's parameters)")
        self.proj = nn.Linear(in_features, teacher_in_features, bias=False)
        if in_features == teacher_in_features:
            with torch.no_grad():
                self.proj.weight.copy_(torch.eye(in_features))
        self._heads = (student_head, teacher_head)  # a tuple: not registered, not in the state dict
        self.head_weight = float(head_weight)

    def forward(self, student_logits: Tensor, student_embedding: Tensor, teacher_embedding: Tensor,
                sample_weights: Tensor | None = None) -> Tensor:
        (ws, bs), (wt, bt) = self._heads[0](), self._heads[1]()
        s = check_embedding(student_embedding, "student_embedding")
        p = self.proj.weight
        projected = self.proj(s.to(p.dtype))
        teacher_through_p = wt.detach().to(p.dtype) @ p  # (C, D_T) @ (D_T, D_S): W_T P
        return kd3_align_loss(
            projected, teacher_embedding, ws, teacher_through_p, student_bias=bs,
            teacher_bias=None if bt is None else bt.detach(), sample_weights=sample_weights,
            head_weight=self.head_weight,
        )

    def extra_repr(self) -> str:
        return f"head_weight={self.head_weight}"


__all__ = ["KD3AlignLoss", "kd3_align_loss"]
