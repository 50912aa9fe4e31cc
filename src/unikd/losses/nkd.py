"""Normalized knowledge distillation, NKD (Yang, Zeng, Li, Zhang, Yuan and Li, "From Knowledge Distillation to
Self-Knowledge Distillation: A Unified Approach with Normalized Loss and Customized Soft Labels", ICCV 2023,
arXiv:2303.13005; official code github.com/yzd-v/cls_KD), optionally on standardized logits (a combination
with Sun et al., CVPR 2024, that neither paper evaluated)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import (
    MASK_VALUE,
    check_logits,
    check_pair,
    check_positive,
    check_weight,
    nan_if_nonfinite,
    parse_target,
)
from .standardize import check_flag, standardize_logits


def nkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor,
    *,
    temperature: float = 1.0,
    gamma: float = 1.5,
    standardize: bool = False,
) -> Tensor:
    """``-T_t log S_t - gamma * lambda**2 * sum_{i != t} N(T^lambda)_i log N(S^lambda)_i``, batch mean.

    ``T_t``/``S_t`` are the teacher/student target probabilities at temperature 1; ``N(p^lambda)`` is the
    softmax over the non-target logits divided by lambda (= ``temperature``), i.e. the normalised non-target
    distribution. The teacher side is detached. The ordinary cross-entropy is not included (the paper adds it
    unweighted).

    Args:
        student_logits, teacher_logits: ``(N, C)``, any float dtype (computed in float32).
        target: int64 ``(N,)`` class indices, or float ``(N, C)`` soft labels, of which NKD uses the argmax
            class (as the official code does for mixup/cutmix labels).
        temperature: lambda > 0. Default 1.0 (official ImageNet configs; their CIFAR-100 config uses 3.0).
        gamma: weight of the non-target term, >= 0. Default 1.5 (ImageNet CNNs; DeiT configs use 1.0, the
            CIFAR-100 config 3.5).
        standardize: z-score both logits per sample first (logit standardization); T_t, S_t and both
            non-target distributions are then taken on the standardized logits. This combination is new:
            no published setting or result exists for it.

    The gradient is computed analytically in the forward pass (double backward is not supported); the loss
    value uses ``sum q log N = sum q z - logsumexp``, accurate to ~1e-7 times the logit magnitude.
    """
    lam = check_positive(temperature, "temperature")
    g = check_weight(gamma, "gamma")
    zs = check_logits(student_logits, "student_logits")
    zt = check_logits(teacher_logits, "teacher_logits").detach()
    check_pair(zs, zt, "teacher_logits")
    n, c = zs.shape
    tg = parse_target(target, n, c, max_targets=1, device=zs.device)  # index (N, 1)
    if check_flag(standardize, "standardize"):
        # autograd carries _NKD's analytic gradient back through the z-score
        zs, zt = standardize_logits(zs), standardize_logits(zt)
    loss = nkd_kernel(zs, zt, tg.index, temperature=lam, gamma=g, denom=n)
    return nan_if_nonfinite(loss, zs, zt, tg.soft)  # docs/losses.md


@torch.no_grad()
def nkd_nontarget_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor,
    *,
    temperature: float = 1.0,
    gamma: float = 1.5,
) -> Tensor:
    """NKD's non-target term in KL form: ``gamma * lambda**2 * KL(N(T^lambda) || N(S^lambda))``, batch mean.

    :func:`nkd_loss` uses the cross-entropy form ``-gamma lambda^2 sum_{i != t} N(T^lambda)_i log
    N(S^lambda)_i``, which equals ``gamma lambda^2 (H(N(T^lambda)) + KL(N(T^lambda) || N(S^lambda)))``: the
    teacher's non-target entropy is a constant for the student, so both forms have the same gradient, but
    only the KL form is >= 0 and reaches 0 when the student's non-target distribution matches the teacher's.
    For monitoring (no gradient); same arguments and target handling as :func:`nkd_loss`. Per-row values
    are clamped at 0 (float rounding could otherwise leave -1e-9).
    """
    lam = check_positive(temperature, "temperature")
    g = check_weight(gamma, "gamma")
    zs = check_logits(student_logits, "student_logits")
    zt = check_logits(teacher_logits, "teacher_logits")
    check_pair(zs, zt, "teacher_logits")
    n, c = zs.shape
    tg = parse_target(target, n, c, max_targets=1, device=zs.device)
    idx = tg.index  # (N, 1)
    log_n_s = (zs / lam).scatter(1, idx, MASK_VALUE).log_softmax(dim=1)  # (N, C) log N(S^lambda)
    log_q = (zt / lam).scatter(1, idx, MASK_VALUE).log_softmax(dim=1)  # (N, C) log N(T^lambda)
    q = log_q.exp()  # exactly 0 at the target
    kl = torch.where(q > 0, q * (log_q - log_n_s), 0.0).sum(dim=1).clamp_min(0.0)  # (N,)
    # the masked softmaxes hide a non-finite logit (a -inf gets probability 0): NaN, as nkd_loss gives
    return nan_if_nonfinite(g * lam * lam * kl.mean(), zs, zt, tg.soft)  # (docs/losses.md)


def nkd_kernel(
    zs: Tensor, zt: Tensor, idx: Tensor, *, temperature: float, gamma: float, denom: float
) -> Tensor:
    """The NKD sum over the rows of validated ``(N, C)`` logits with targets ``idx`` ``(N, 1)``, / ``denom``.

    Shared by :func:`nkd_loss` (``denom`` = N) and the token-level forms in :mod:`unikd.token`. The teacher
    must be detached.
    """
    return _NKD.apply(zs, zt, idx, temperature, gamma, float(denom))


class _NKD(torch.autograd.Function):
    """NKD with its gradient built in the forward pass (one ``(N, C)`` buffer, one multiply in backward).

    With N = softmax over the non-target ``z/lambda``, q the teacher's, S the student softmax at T=1 and
    B the denominator (the batch size), the gradient w.r.t. the student logits is
    ``(T_t (S - e_t) + gamma * lambda * (N - q)) / B``; for lambda = 1, ``S = N (1 - S_t)`` off the target.
    Autograd through the equivalent formula would need ~3x the memory passes (gathers, masked copies).
    """

    @staticmethod
    def forward(ctx, zs: Tensor, zt: Tensor, idx: Tensor, lam: float, gamma: float, n: float) -> Tensor:  # type: ignore[override]
        zs_l, zt_l = (zs, zt) if lam == 1.0 else (zs / lam, zt / lam)
        ms = zs_l.scatter(1, idx, MASK_VALUE)  # (N, C) non-target logits / lambda, ~MASK at the target
        n_s = ms.softmax(dim=1)  # (N, C) N(S^lambda); exactly 0 at the target
        mt = zt_l.scatter(1, idx, MASK_VALUE)
        q = mt.softmax(dim=1)  # (N, C) N(T^lambda)
        # Non-target log-sum-exps from the largest entries: lse = max z - log max N (two cheap amax passes).
        lse_sl = (
            ms.amax(dim=1, keepdim=True) - n_s.amax(dim=1, keepdim=True).log()
        )  # (N, 1) over z_s / lambda
        if lam == 1.0:
            lse_t = mt.amax(dim=1, keepdim=True) - q.amax(dim=1, keepdim=True).log()
            lse_s = lse_sl
        else:
            lse_s = zs.scatter(1, idx, MASK_VALUE).logsumexp(dim=1, keepdim=True)
            lse_t = zt.scatter(1, idx, MASK_VALUE).logsumexp(dim=1, keepdim=True)
        d = zs.gather(1, idx) - lse_s  # (N, 1) log S_t - log(1 - S_t): p_t = sigmoid(d)
        t_t = (zt.gather(1, idx) - lse_t).sigmoid()  # (N, 1) T_t
        loss_target = -(t_t * F.logsigmoid(d)).sum() / n
        # sum_i q_i log N_i = sum_i q_i z_i / lambda - lse (q sums to 1); 0 * ~MASK == 0 at the target.
        loss_non = -(torch.dot(q.view(-1), ms.view(-1)) - lse_sl.sum()) / n
        loss = loss_target + gamma * lam * lam * loss_non

        one_minus_s_t = (-d).sigmoid()  # (N, 1) 1 - S_t, exact for S_t -> 1
        grad = n_s  # (N, C), reusing the buffer; 0 at the target
        if lam == 1.0:
            grad.mul_((t_t * one_minus_s_t + gamma) / n).sub_(q, alpha=gamma / n)
        else:
            s = zs.softmax(dim=1)
            grad.sub_(q).mul_(gamma * lam / n).add_(s.mul_(t_t / n))
        grad.scatter_(1, idx, -t_t * one_minus_s_t / n)
        ctx.save_for_backward(grad)
        return loss

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad * grad_out, None, None, None, None, None


class NKDLoss(nn.Module):
    """Module form of :func:`nkd_loss`, called as ``loss(student_logits, teacher_logits, target)``.

    :meth:`monitor` gives the non-target term in KL form (:func:`nkd_nontarget_kl`), which the training
    harness logs as ``train/<term>_kl`` beside the optimised value.
    """

    requires = ("teacher_logits", "target")
    monitors = ("kl",)

    def __init__(self, *, temperature: float = 1.0, gamma: float = 1.5, standardize: bool = False) -> None:
        super().__init__()
        self.temperature = check_positive(temperature, "temperature")
        self.gamma = check_weight(gamma, "gamma")
        self.standardize = check_flag(standardize, "standardize")

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, target: Tensor) -> Tensor:
        return nkd_loss(
            student_logits,
            teacher_logits,
            target,
            temperature=self.temperature,
            gamma=self.gamma,
            standardize=self.standardize,
        )

    @torch.no_grad()
    def monitor(self, student_logits: Tensor, teacher_logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        """``{"kl": gamma lambda^2 KL(N(T^lambda) || N(S^lambda))}`` on the loss's logits (no gradient)."""
        zs, zt = student_logits.float(), teacher_logits.float()
        if self.standardize:
            zs, zt = standardize_logits(zs), standardize_logits(zt)
        return {"kl": nkd_nontarget_kl(zs, zt, target, temperature=self.temperature, gamma=self.gamma)}

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, gamma={self.gamma}, standardize={self.standardize}"
