"""USKD's non-target ranking: the rank modes, the score the Zipf labels are ranked by, and the non-target
term in KL form for monitoring (:func:`uskd_nontarget_kl`). The loss itself is in :mod:`unikd.losses.uskd`.
"""

from __future__ import annotations

import torch
from torch import Tensor

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

__all__ = ["RANK_MODES", "check_rank", "rank_score", "uskd_nontarget_kl"]

RANK_MODES = ("paper", "legacy", "student")


def check_rank(rank: str) -> None:
    if rank not in RANK_MODES:
        raise ValueError(
            f"unknown rank {rank!r}; use 'paper' (the paper's formula), 'legacy' (published code) or "
            "'student' (ranks from the final logits only, an ablation)"
        )


def rank_score(
    rank: str,
    zs: Tensor,
    zw: Tensor,
    n_s: Tensor,
    w: Tensor,
    log_w_t: Tensor,
    log_s_t: Tensor,
    lse_nt: Tensor,
    lse_all: Tensor,
    idx: Tensor,
    valid: Tensor,
) -> Tensor:
    """The ``(N, C)`` rank score (no gradient)."""
    # An unused target column repeats column 0's class, so it has the same values; it is not counted.
    w_mass = (log_w_t.exp() * valid).sum(dim=1, keepdim=True)  # W_T
    if rank == "legacy":
        log_s = zs - lse_all  # full student log-probabilities
        ls_mass = log_s_t.masked_fill(~valid, 0.0).sum(dim=1, keepdim=True)
        return w / (1 - w_mass + 1e-6) + log_s / (1 - ls_mass + 1e-6)
    if rank == "student":  # S_i/(1-S_T): the non-target softmax, targets exp(z_t - lse_nt)
        return n_s.clone().scatter_(1, idx, (zs.gather(1, idx) - lse_nt).exp())
    # Paper: W_i/(1-W_T) + S_i/(1-S_T). For non-targets these are the non-target softmaxes; the target
    # columns get exp(z_t - non-target log-sum-exp) (may overflow to inf, which still ranks them first).
    q_w = zw.scatter(1, idx, MASK_VALUE).softmax(dim=1)
    score = q_w.add_(n_s)
    w_rest = torch.log1p(-w_mass.clamp(max=1.0))  # log(1 - W_T); -inf when W_T rounds to 1
    target_score = (log_w_t - w_rest).exp() + (zs.gather(1, idx) - lse_nt).exp()  # (N, k)
    return score.scatter_(1, idx, target_score)


@torch.no_grad()
def uskd_nontarget_kl(
    student_logits: Tensor,
    weak_logits: Tensor,
    target: Tensor,
    *,
    beta: float = 0.1,
    rank: str = "paper",
) -> Tensor:
    """USKD's non-target term in KL form: ``beta * KL(Z || N(S))``, batch mean, Z the Zipf labels.

    :func:`uskd_loss` uses ``-beta sum_{i not target} Z_i log N(S)_i`` = ``beta (H(Z) + KL(Z || N(S)))``.
    H(Z), the entropy of the Zipf labels, depends only on the class count and on the target's rank (for
    C = 100: 3.95 nats when the target ranks first, 3.67 when it ranks last), so it is a floor of the logged
    term that no student can go below; the KL form is >= 0 and is 0 exactly when N(S) equals the Zipf
    labels. Same arguments, ranking and target handling as :func:`uskd_loss` (``alpha`` and ``mu`` do not
    enter this term); for monitoring (no gradient). Per-row values are clamped at 0.
    """
    check_rank(rank)
    b = check_weight(beta, "beta")
    zs = check_logits(student_logits, "student_logits")
    zw = check_logits(weak_logits, "weak_logits")
    check_pair(zs, zw, "weak_logits")
    n, c = zs.shape
    tg = parse_target(target, n, c, max_targets=2, device=zs.device)
    idx, valid = tg.index, tg.value > 0
    # The same quantities as _USKD.forward (see there), computed without the gradient bookkeeping.
    ms = zs.scatter(1, idx, MASK_VALUE)  # (N, C) non-target logits
    log_n_s = ms.log_softmax(dim=1)  # (N, C) log N(S)
    n_s = log_n_s.exp()
    lse_nt = ms.logsumexp(dim=1, keepdim=True)
    zs_t = zs.gather(1, idx)
    if c > idx.shape[1]:
        lse_all = torch.logaddexp(lse_nt, zs_t.masked_fill(~valid, float("-inf")).logsumexp(1, keepdim=True))
    else:
        lse_all = zs.logsumexp(dim=1, keepdim=True)
    log_s_t = zs_t - lse_all
    w = zw.softmax(dim=1)
    log_w_t = zw.gather(1, idx) - zw.logsumexp(dim=1, keepdim=True)
    score = rank_score(rank, zs, zw, n_s, w, log_w_t, log_s_t, lse_nt, lse_all, idx, valid)
    zipf = normalise_nontarget(zipf_rank_weights(score), idx)  # (N, C), 0 at the targets
    kl = torch.where(zipf > 0, zipf * (zipf.clamp_min(1e-45).log() - log_n_s), 0.0).sum(dim=1)
    # the masked softmaxes and the ranks hide a non-finite logit: NaN, as uskd_loss gives (docs/losses.md)
    return nan_if_nonfinite(b * kl.clamp_min(0.0).mean(), zs, zw, tg.soft)
