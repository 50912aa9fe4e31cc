"""Sampled sparse teachers: an unbiased, importance-sampled estimate of the teacher distribution.

Sparse Logit Sampling (Anshumann, Zaidi, Kedia, Ahn, Kwon, Lee, Lee and Lee, "Sparse Logit Sampling:
Accelerating Knowledge Distillation in LLMs", ACL 2025, arXiv:2503.16870): instead of the top-k
log-probabilities, which are a *biased* picture of the teacher however the tail is handled, store ``m``
tokens drawn from the teacher. Per token position, ``x_1..x_m ~ r`` i.i.d. with the proposal
``r ∝ q^(1/τ)`` (``q`` the teacher's distribution, ``τ`` the proposal temperature), importance weights
``w_j = q(x_j) / r(x_j)``, and the estimate

    q̂(i) = Σ_j w_j [x_j = i] / Σ_j w_j .

At ``τ = 1`` (the default) every weight is 1 and ``q̂(i) = count_i / m``, so ``E[q̂] = q`` exactly; at
``τ ≠ 1`` the estimate is self-normalised importance sampling (consistent, bias O(1/m)). Stored in the
:class:`~unikd.token.SparseTeacher` format with an empty tail, ``q̂`` sums to 1 over its ids, and the
forward KL / cross-entropy against a student ``s`` over the full vocabulary,
``Σ_i q̂(i) log q̂(i) − Σ_i q̂(i) log s(i)``, has the gradient ``s − q̂`` with respect to the student logits:
**unbiased** for the dense gradient ``s − q`` at ``τ = 1``, for any m (``kd`` at temperature 1 on the
``(k + 1)``-bucket form is exactly this). The loss *value* is not unbiased (``−H(q̂)`` underestimates
``−H(q)``), nor are losses that are not linear in the teacher (reverse KL, JSD, a loss temperature ≠ 1).

Choices that are unikd's (the paper's exact procedure was not available to follow):

- ``m`` draws give ``m + 1`` slots: the distinct sampled ids (ascending), then one slot reserved for the
  label (its estimate ``q̂(label)``, 0 when it was not drawn, so target-aware losses find it without bias),
  then distinct zero-mass padding ids (the smallest ids not drawn); every slot's id is distinct.
- The tail bucket is empty (``TAIL_FLOOR``): ``q̂`` carries all the mass.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .sparse import TAIL_FLOOR, SparseTeacher


def _check(logits: object, m: object, proposal_temperature: object) -> int:
    if not isinstance(logits, Tensor) or not logits.is_floating_point() or logits.dim() < 2:
        raise ValueError(
            f"logits must be a floating tensor of shape (..., V), got {getattr(logits, 'shape', logits)!r}"
        )
    v = logits.shape[-1]
    if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m < v:
        raise ValueError(f"m (draws per token) must be an int in [1, V - 1 = {v - 1}], got {m!r}")
    t = proposal_temperature
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < float(t) < float("inf"):
        raise ValueError(f"proposal_temperature must be a positive finite number, got {t!r}")
    return v


def sparse_sample(
    logits: Tensor,
    m: int,
    *,
    labels: Tensor | None = None,
    ignore_index: int = -100,
    proposal_temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> SparseTeacher:
    """The sampled :class:`SparseTeacher` of dense teacher logits ``(..., V)``: ``m`` draws, ``m + 1`` slots.

    ``labels`` (the layout ``...``, optional): each kept position's label gets a slot (its estimated
    probability, possibly 0). ``generator`` makes the draws reproducible. Computed in float32. Non-finite
    teacher logits are an error (a distribution cannot be sampled from NaN).
    """
    v = _check(logits, m, proposal_temperature)
    layout = logits.shape[:-1]
    logq = logits.detach().float().reshape(-1, v).log_softmax(dim=-1)  # (N, V)
    if not bool(torch.isfinite(logq).any(dim=1).all()) or bool(torch.isnan(logq).any()):
        raise ValueError("the teacher logits hold NaN or no finite entry in some row; nothing to sample from")
    n = logq.shape[0]
    logr = logq if proposal_temperature == 1 else (logq / proposal_temperature).log_softmax(dim=-1)
    draws = torch.multinomial(logr.exp(), m, replacement=True, generator=generator)  # (N, m)
    weights = (logq.gather(1, draws) - logr.gather(1, draws)).exp()  # 1 at τ = 1
    reserved = _label_column(labels, layout, v, ignore_index, draws)  # (N, 1): label, or a draw when ignored
    draws = torch.cat([draws, reserved], dim=1)
    weights = torch.cat([weights, torch.zeros(n, 1)], dim=1)  # the reserved slot adds no mass
    ids, mass = _distinct(draws, weights, v)
    values = (mass / mass.sum(dim=1, keepdim=True)).log().clamp_min(TAIL_FLOOR)
    tail = torch.full((n,), TAIL_FLOOR)
    k = m + 1
    return SparseTeacher(values.reshape(*layout, k), ids.reshape(*layout, k), tail.reshape(layout))


def _label_column(
    labels: Tensor | None, layout: torch.Size, v: int, ignore_index: int, draws: Tensor
) -> Tensor:
    if labels is None:
        return draws[:, :1]  # a duplicate of a draw: merges into its slot, the reserved slot becomes padding
    if not isinstance(labels, Tensor) or labels.shape != layout:
        raise ValueError(
            f"labels must have the token layout {tuple(layout)} of the logits, got "
            f"{tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__}"
        )
    lab = labels.reshape(-1, 1).to(draws.device).long()
    kept = lab != ignore_index
    if bool(((lab < 0) | (lab >= v))[kept].any()):
        raise ValueError(f"labels hold ids outside [0, {v - 1}] (V={v}) at non-ignored positions")
    return torch.where(kept, lab, draws[:, :1])


def _distinct(draws: Tensor, weights: Tensor, v: int) -> tuple[Tensor, Tensor]:
    """Per row: the distinct drawn ids (ascending) with their summed weights, padded to the same number of
    slots with distinct ids that were not drawn (weight 0)."""
    n, k = draws.shape
    order = draws.argsort(dim=1)
    d, w = draws.gather(1, order), weights.gather(1, order)
    first = torch.ones_like(d, dtype=torch.bool)
    first[:, 1:] = d[:, 1:] != d[:, :-1]
    slot = first.long().cumsum(dim=1) - 1  # (n, k): the slot of each draw
    mass = torch.zeros(n, k).scatter_add_(1, slot, w)
    uniq = torch.full((n, k), v, dtype=torch.long).scatter_(1, slot, d)  # v marks an unused slot
    distinct = first.sum(dim=1, keepdim=True)  # (n, 1)
    # Padding: the smallest ids that were not drawn; among the first min(2k, V) ids at least k are free.
    cand = torch.arange(min(2 * k, v)).expand(n, -1).contiguous()
    pos = torch.searchsorted(uniq, cand).clamp_max(k - 1)
    drawn = uniq.gather(1, pos) == cand
    free = torch.where(drawn, v + cand, cand).sort(dim=1).values[:, :k]  # drawn ones pushed to the end
    j = torch.arange(k).expand(n, -1)
    pad = free.gather(1, (j - distinct).clamp_min(0))
    ids = torch.where(j < distinct, uniq, pad)
    return ids, mass


__all__ = ["sparse_sample"]
