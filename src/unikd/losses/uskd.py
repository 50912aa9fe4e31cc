"""Universal self-knowledge distillation, USKD (Yang, Zeng, Li, Zhang, Yuan and Li, "From Knowledge
Distillation to Self-Knowledge Distillation: A Unified Approach with Normalized Loss and Customized Soft
Labels", ICCV 2023, arXiv:2303.13005; official code github.com/yzd-v/cls_KD, ``uskd.py``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._common import (
    MASK_VALUE,
    check_logits,
    check_pair,
    check_weight,
    nan_if_nonfinite,
    normalise_nontarget,
    parse_target,
)
from ._zipf_ranks import zipf_rank_weights
from .uskd_ranks import RANK_MODES, check_rank, rank_score, uskd_nontarget_kl

__all__ = ["RANK_MODES", "USKDLoss", "uskd_kernel", "uskd_loss", "uskd_nontarget_kl", "uskd_target_stats"]


def uskd_loss(
    student_logits: Tensor,
    weak_logits: Tensor,
    target: Tensor,
    *,
    alpha: float = 1.0,
    beta: float = 0.1,
    mu: float = 0.005,
    rank: str = "paper",
) -> Tensor:
    """``alpha * L_target + beta * L_non + L_weak`` (batch means; the ordinary CE is not included).

    - ``L_target = -sum_t P_t log S_t`` with the customised soft target
      ``P_t = S_t**2 + V_t - mean_batch(S_t**2)`` per target column (0 where V_t = 0; detached; the batch
      mean runs over the rows where that column is a target).
    - ``L_weak = mu * CE(weak_logits, 0.9 * V + 0.1 / C)`` trains the weak head (V: one-hot or soft label).
    - ``L_non = -sum_{i not target} Z_i log N(S)_i`` where N(S) is the softmax over the non-target logits and
      Z are Zipf weights ``1/r`` by each class's 1-based position r in the descending order of a rank score
      over **all** classes, then restricted to the non-targets and renormalised (detached).

    Rank score: ``rank="paper"``: ``R = W/(1 - W_T) + S/(1 - S_T)`` with W = softmax(weak_logits),
    S = softmax(student_logits) and W_T/S_T their summed target probabilities, as in the paper.
    ``rank="legacy"``: the published code since 2023-07 (cls_KD commit 1c2c0ff), which uses the student's
    *log*-probabilities in the second term: ``W/(1 - W_T + 1e-6) + log S/(1 - sum_t log S_t + 1e-6)``.
    ``rank="student"``: an ablation that ranks by the final logits alone, ``R = S/(1 - S_T)`` (the weak head
    still trains, but no longer orders the Zipf labels); an option of this library, not of the paper.
    Ranks are taken on R rounded to float32; exact ties are ordered by class index (lower first when R >= 0).
    The gradient is built analytically in the forward pass (no double backward); the loss value uses
    ``sum Z log N = sum Z z - logsumexp``, accurate to ~1e-7 times the logit magnitude.

    Args:
        student_logits: ``(N, C)`` final logits. weak_logits: ``(N, C)`` output of the weak linear head on an
            intermediate feature (gradients flow into both).
        target: int64 ``(N,)`` indices, or float ``(N, C)`` soft labels: the two largest classes are the
            targets, with their label values as V_t, and both leave the non-target term (as the official
            code). A column whose value is 0 is not a target, so a one-hot soft label equals its index
            (the official code would still drop an arbitrary zero-valued second class). Other non-zero
            entries beyond the top two are treated as non-targets, as in the official code.
        alpha, beta, mu: term weights, >= 0. Defaults 1, 0.1, 0.005: the official ImageNet configs (their
            CIFAR-100 ResNet18 config uses 0.1, 0.1, 0.1).
        rank: ``"paper"``, ``"legacy"`` or ``"student"``.
    """
    check_rank(rank)
    a, b, m = check_weight(alpha, "alpha"), check_weight(beta, "beta"), check_weight(mu, "mu")
    zs = check_logits(student_logits, "student_logits")
    zw = check_logits(weak_logits, "weak_logits")
    check_pair(zs, zw, "weak_logits")
    n, c = zs.shape
    tg = parse_target(target, n, c, max_targets=2, device=zs.device)  # class indices give one column
    # label values in the logits' dtype: float64 labels with float32 logits must not mix dtypes
    value = tg.value.to(zs.dtype)
    loss = uskd_kernel(zs, zw, tg.index, value, tg.soft, alpha=a, beta=b, mu=m, rank=rank, denom=n)
    return nan_if_nonfinite(loss, zs, zw, tg.soft)  # NaN for non-finite logits (docs/losses.md)


def uskd_kernel(
    zs: Tensor,
    zw: Tensor,
    idx: Tensor,
    value: Tensor,
    soft: Tensor | None,
    *,
    alpha: float,
    beta: float,
    mu: float,
    rank: str,
    denom: float,
    s_t2_mean: Tensor | None = None,
) -> Tensor:
    """The USKD sum over the rows of validated ``(N, C)`` student and weak logits, divided by ``denom``.

    ``idx``/``value``/``soft`` are the parsed target (:class:`~unikd.losses._common.Targets`). The customised
    soft target needs the mean of ``S_t**2`` over the whole batch: ``s_t2_mean`` ``(1, k)`` supplies it when
    the rows are one chunk of a larger batch (see :func:`uskd_target_stats`); None computes it from these
    rows. Shared by :func:`uskd_loss` (``denom`` = N) and the token-level forms in :mod:`unikd.token`.
    """
    return _USKD.apply(zs, zw, idx, value, soft, alpha, beta, mu, rank, float(denom), s_t2_mean)


def uskd_target_stats(zs: Tensor, idx: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
    """Per target column, the sum of ``S_t**2`` and the number of rows where it is a target, ``(1, k)`` each.

    Summed over chunks and divided, they give the batch mean that :func:`uskd_kernel` takes as
    ``s_t2_mean`` (no gradient).
    """
    with torch.no_grad():
        valid = value > 0
        log_s_t = zs.gather(1, idx) - zs.logsumexp(dim=1, keepdim=True)  # (N, k)
        s_t2 = (2 * log_s_t).exp()
        return (s_t2 * valid).sum(dim=0, keepdim=True), valid.sum(dim=0, keepdim=True).to(zs.dtype)


class _USKD(torch.autograd.Function):
    """USKD with both gradients built in the forward pass (backward is one multiply per input).

    With B the denominator (the batch size), N the non-target softmax, S the softmax, W the weak softmax,
    P_t, Z detached and
    sum_t over the target columns:
    ``d/dz_s = (alpha (sum_t P_t S - sum_t P_t e_t) + beta (N sum(Z) - Z)) / B`` and
    ``d/dz_w = mu (sum(V~) W - V~) / B``; off the targets ``S = N (1 - S_T)``. This replaces ~20 autograd
    passes over ``(N, C)`` tensors (gathers, masked copies, log-softmax backward) with a handful.
    """

    @staticmethod
    def forward(ctx, zs, zw, idx, value, soft, alpha, beta, mu, rank, n, s_t2_mean):  # type: ignore[override]
        c = zs.shape[1]
        valid = value > 0  # (N, k); an unused column repeats column 0's class
        # Student: one masked softmax gives N(S); the non-target log-sum-exp follows from its largest entry
        # (lse = max z - log max N) and with it log S_t, without a full log-softmax.
        ms = zs.scatter(1, idx, MASK_VALUE)  # (N, C) non-target logits, ~MASK at the targets
        n_s = ms.softmax(dim=1)  # (N, C) N(S); exactly 0 at the targets
        lse_nt = ms.amax(dim=1, keepdim=True) - n_s.amax(dim=1, keepdim=True).log()  # (N, 1)
        zs_t = zs.gather(1, idx)  # (N, k)
        if c > idx.shape[1]:
            lse_t = zs_t.masked_fill(~valid, float("-inf")).logsumexp(dim=1, keepdim=True)
            lse_all = torch.logaddexp(lse_nt, lse_t)
        else:  # C=2 with two target columns: some rows may have no non-target class at all
            lse_all = zs.logsumexp(dim=1, keepdim=True)
        log_s_t = zs_t - lse_all  # (N, k) log S_t
        s_t = log_s_t.exp()
        # Batch mean of S_t^2 per label column over the rows where that column is a target.
        s_t2 = s_t.square()
        if s_t2_mean is None:
            mean = (s_t2 * valid).sum(dim=0, keepdim=True) / valid.sum(dim=0, keepdim=True).clamp_min(1)
        else:
            mean = s_t2_mean.to(s_t2.dtype)
        p_t = torch.where(valid, s_t2 + value - mean, 0.0)  # (N, k)
        loss_target = -(p_t * log_s_t).sum() / n

        # Weak head: CE against 0.9 V + 0.1 / C with log W = z_w - lse_w, written as sums (no label tensor).
        w = zw.softmax(dim=1)  # (N, C)
        lse_w = zw.amax(dim=1, keepdim=True) - w.amax(dim=1, keepdim=True).log()  # (N, 1)
        log_w_t = zw.gather(1, idx) - lse_w  # (N, k)
        if soft is None:
            ce_label = log_w_t.sum()
            v_sum = torch.ones(zs.shape[0], 1, dtype=zs.dtype, device=zs.device)
        else:
            soft = soft.to(zs.dtype)
            v_sum = soft.sum(dim=1, keepdim=True)
            ce_label = torch.dot(soft.view(-1), zw.reshape(-1)) - (v_sum * lse_w).sum()
        loss_weak = -mu * (0.9 * ce_label + (0.1 / c) * (zw.sum() - c * lse_w.sum())) / n

        score = rank_score(rank, zs, zw, n_s, w, log_w_t, log_s_t, lse_nt, lse_all, idx, valid)
        zipf = normalise_nontarget(zipf_rank_weights(score), idx)  # (N, C) Z, 0 at the targets
        z_sum = zipf.sum(dim=1, keepdim=True) if c <= idx.shape[1] else 1.0  # 0 for rows without non-targets
        # sum_i Z_i log N_i = sum_i Z_i z_i - lse_nt sum(Z); 0 * ~MASK == 0 at the targets.
        loss_non = -(torch.dot(zipf.view(-1), ms.view(-1)) - (z_sum * lse_nt).sum()) / n
        loss = alpha * loss_target + beta * loss_non + loss_weak

        # d/dz_s. Off the targets: N * (alpha sum(P) (1 - S_T) + beta sum(Z)) - beta Z, all over B.
        p_sum = p_t.sum(dim=1, keepdim=True)
        rest = (lse_nt - lse_all).exp()  # (N, 1) 1 - S_T
        g_s = n_s.mul_((alpha * p_sum * rest + beta * z_sum) / n).sub_(zipf, alpha=beta / n)
        g_t = alpha * (p_sum * s_t - p_t) / n  # (N, k) target columns
        g_s.scatter_(1, idx, torch.where(valid, g_t, g_t[:, :1]))  # duplicates must write equal values
        # d/dz_w = mu (sum(V~) W - 0.9 V - 0.1 / C) / B with sum(V~) = 0.9 sum(V) + 0.1.
        g_w = w.mul_(mu * (0.9 * v_sum + 0.1) / n).sub_(mu * 0.1 / (c * n))
        if soft is None:
            g_w.scatter_add_(1, idx, torch.full_like(s_t, -0.9 * mu / n))
        else:
            g_w.sub_(soft, alpha=0.9 * mu / n)
        ctx.save_for_backward(g_s, g_w)
        return loss

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        g_s, g_w = ctx.saved_tensors
        return g_s * grad_out, g_w * grad_out, None, None, None, None, None, None, None, None, None


class USKDLoss(nn.Module):
    """USKD with its weak head: ``loss(student_logits, student_embedding, target)``.

    Owns ``self.head = nn.Linear(in_features, num_classes)``, applied to ``student_embedding``
    ``(N, in_features)``: an intermediate feature pooled to a vector (e.g. with
    ``unikd.models.pool_feature``); the training harness pools the output of the ``uskd`` tap (the config
    key ``feature``). Put this module's parameters in the optimizer together with the student's.
    :meth:`monitor` gives the non-target term in KL form (:func:`uskd_nontarget_kl`), which the training
    harness logs as ``train/<term>_kl`` beside the optimised value.
    """

    requires = ("student_embedding", "target")
    monitors = ("kl",)
    # the pooled feature comes from the USKD tap (an intermediate stage), not the pre-classifier feature
    embedding_tap = "uskd"

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        alpha: float = 1.0,
        beta: float = 0.1,
        mu: float = 0.005,
        rank: str = "paper",
    ) -> None:
        super().__init__()
        for name, v in (("in_features", in_features), ("num_classes", num_classes)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        check_rank(rank)
        self.head = nn.Linear(in_features, num_classes)
        self.alpha = check_weight(alpha, "alpha")
        self.beta = check_weight(beta, "beta")
        self.mu = check_weight(mu, "mu")
        self.rank = rank

    def forward(self, student_logits: Tensor, student_embedding: Tensor, target: Tensor) -> Tensor:
        features = student_embedding
        if (
            not isinstance(features, Tensor)
            or features.dim() != 2
            or features.shape[1] != self.head.in_features
        ):
            shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
            raise ValueError(
                f"student_embedding (the weak head's features) must have shape (N, {self.head.in_features}), "
                f"got {shape}; pool 4-D feature maps (or take the ViT cls token) first, e.g. with "
                "unikd.models.pool_feature"
            )
        weak = self.head(features.to(self.head.weight.dtype))
        return uskd_loss(
            student_logits, weak, target, alpha=self.alpha, beta=self.beta, mu=self.mu, rank=self.rank
        )

    @torch.no_grad()
    def monitor(self, student_logits: Tensor, student_embedding: Tensor, target: Tensor) -> dict[str, Tensor]:
        """``{"kl": beta KL(Z || N(S))}`` with the weak head's current ranking (no gradient)."""
        weak = self.head(student_embedding.to(self.head.weight.dtype))
        return {"kl": uskd_nontarget_kl(student_logits, weak, target, beta=self.beta, rank=self.rank)}

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, mu={self.mu}, rank={self.rank!r}"
