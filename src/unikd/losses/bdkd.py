"""BD-KD: balanced divergences for online distillation (Amara, Sepahvand, Meyer, Gross and Clark, "BD-KD:
Balancing the Divergences for Online Knowledge Distillation", arXiv:2212.12965).

Online distillation of a student with a (larger) peer trained alongside it: the student's distillation term
mixes, sample by sample, the forward KL ``KL(p_t || p_s)`` and the reverse KL ``KL(p_s || p_t)`` according
to the entropy gap between the two predictions, and the peer ("teacher") keeps a KL regulariser towards the
student. No official code is public; every choice the published description leaves open is a
hyperparameter here and is listed in docs/losses.md ("BD-KD"):

- the mixing weight ``w = sigmoid(gap_scale * (H(p_s) - H(p_t)))`` per sample (``gap_scale=0``: an equal
  mix; a large ``gap_scale``: a hard switch on the sign of the gap), entropies in nats of the
  temperature-softened distributions, ``w`` detached (a sample weight, not a path for gradients);
- a student less confident than the peer (``H(p_s) > H(p_t)``) gets more of the mode-seeking reverse KL,
  which sharpens it; a more confident one more of the mass-covering forward KL, which softens it;
- the peer's term (``role="peer"``): ``KL(p_s || p_t)`` differentiated w.r.t. the peer, the "reverse KL"
  in the notation above (which is also DML's term for that network); the other reading, ``KL(p_t || p_s)``
  w.r.t. the peer (mode-seeking for the peer), is not offered;
- one temperature ``T`` for both sides (default 1, as in DML) and the usual ``T**2`` factor.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._common import check_finite, check_logits, check_pair, check_positive, nan_if_nonfinite

ROLES = ("student", "peer")


def _log_probs(student_logits: Tensor, other_logits: Tensor, t: float, other: str) -> tuple[Tensor, Tensor]:
    zs = check_logits(student_logits, "student_logits")
    zo = check_logits(other_logits, other).detach()
    check_pair(zs, zo, other)
    return (zs / t).log_softmax(dim=1), (zo / t).log_softmax(dim=1)  # (N, C) each


def _check_gap_scale(gap_scale: float) -> float:
    g = check_finite(gap_scale, "gap_scale")
    if g < 0:
        raise ValueError(f"gap_scale must be >= 0 (0 = an equal mix of the two KLs), got {gap_scale!r}")
    return g


def bdkd_weights(
    student_logits: Tensor, teacher_logits: Tensor, *, temperature: float = 1.0, gap_scale: float = 1.0
) -> Tensor:
    """Per-sample weight of the reverse KL, ``w = sigmoid(gap_scale * (H(p_s) - H(p_t)))``, ``(N,)``,
    detached."""
    t = check_positive(temperature, "temperature")
    g = _check_gap_scale(gap_scale)
    with torch.no_grad():
        log_s, log_t = _log_probs(student_logits, teacher_logits, t, "teacher_logits")
        h_s = -(log_s.exp() * log_s).sum(dim=1)  # (N,) student entropy, nats
        h_t = -(log_t.exp() * log_t).sum(dim=1)  # (N,) teacher entropy
        return torch.sigmoid(g * (h_s - h_t))


def bdkd_loss(
    student_logits: Tensor, teacher_logits: Tensor, *, temperature: float = 1.0, gap_scale: float = 1.0
) -> Tensor:
    """Student objective: ``T**2 * mean_i [(1 - w_i) KL(p_t^i || p_s^i) + w_i KL(p_s^i || p_t^i)]``.

    ``p = softmax(z / T)``; ``w_i`` from :func:`bdkd_weights` (detached). Both KLs are differentiated w.r.t.
    the student only (``teacher_logits`` is detached).

    Args:
        student_logits: ``(N, C)`` (computed in float32).
        teacher_logits: ``(N, C)``: the peer's logits in online training, or a fixed teacher's.
        temperature: T > 0. Default 1.
        gap_scale: >= 0, the slope of the weight in the entropy gap (per nat). Default 1.

    Returns:
        0-dim float32 tensor; the cross-entropy is not included.
    """
    t = check_positive(temperature, "temperature")
    w = bdkd_weights(student_logits, teacher_logits, temperature=t, gap_scale=gap_scale)  # (N,)
    log_s, log_t = _log_probs(student_logits, teacher_logits, t, "teacher_logits")
    forward = (log_t.exp() * (log_t - log_s)).sum(dim=1)  # (N,) KL(p_t || p_s)
    reverse = (log_s.exp() * (log_s - log_t)).sum(dim=1)  # (N,) KL(p_s || p_t)
    loss = ((1.0 - w) * forward + w * reverse).mean() * (t * t)
    return nan_if_nonfinite(loss, student_logits, teacher_logits)  # NaN for non-finite logits


def bdkd_peer_loss(peer_logits: Tensor, student_logits: Tensor, *, temperature: float = 1.0) -> Tensor:
    """The peer's ("teacher's") regulariser: ``T**2 * mean_i KL(p_s^i || p_peer^i)``, differentiated w.r.t.
    the peer only.

    Args:
        peer_logits: ``(N, C)`` logits of the network being trained (the peer).
        student_logits: ``(N, C)`` the student's logits, detached.
        temperature: T > 0. Default 1.
    """
    t = check_positive(temperature, "temperature")
    log_p, log_s = _log_probs(peer_logits, student_logits, t, "student_logits")
    kl = (log_s.exp() * (log_s - log_p)).sum(dim=1)  # (N,) KL(p_s || p_peer)
    return nan_if_nonfinite(kl.mean() * (t * t), peer_logits, student_logits)  # NaN for non-finite logits


class BDKDLoss(nn.Module):
    """Module form: :func:`bdkd_loss` for the student, :func:`bdkd_peer_loss` for a peer.

    ``role`` is supplied by the training harness (``"student"`` for the run's student, and in every run
    without peers; ``"peer"`` for the other networks of online training). Called as
    ``loss(student_logits, teacher_logits)`` where ``student_logits`` are the logits of the network being
    trained and ``teacher_logits`` the other network's.
    """

    requires = ("teacher_logits",)

    def __init__(
        self,
        role: str = "student",
        *,
        temperature: float = 1.0,
        gap_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        self.role = role
        self.temperature = check_positive(temperature, "temperature")
        self.gap_scale = _check_gap_scale(gap_scale)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        if self.role == "peer":
            return bdkd_peer_loss(student_logits, teacher_logits, temperature=self.temperature)
        t, g = self.temperature, self.gap_scale
        return bdkd_loss(student_logits, teacher_logits, temperature=t, gap_scale=g)

    def extra_repr(self) -> str:
        return f"role={self.role}, temperature={self.temperature}, gap_scale={self.gap_scale}"
