"""Curriculum temperature for KD, CTKD (Li, Li, Yang, Zhao, Song, Luo, Li and Yang, "Curriculum Temperature
for Knowledge Distillation", AAAI 2023, arXiv:2211.16231; official code github.com/zhengli97/CTKD:
``models/temp_global.py``, ``train_student.py`` (``CosineDecay``), ``helper/loops.py``,
``distiller_zoo/KD.py``). The global-temperature variant."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import check_finite, check_logits, check_pair, check_positive, nan_if_nonfinite
from .standardize import check_flag, standardize_logits


def ctkd_lambda(
    epoch_progress: float, *, lambda_max: float = 1.0, lambda_min: float = 0.0, decay_epochs: float = 10.0
) -> float:
    """Strength of the gradient reversal at a training position: the authors' cosine curriculum.

    ``lambda = lambda_min + (lambda_max - lambda_min) * (1 - cos(pi * min(e, E) / E)) / 2`` with E =
    ``decay_epochs`` and e the 1-based index of the epoch being trained, ``e = ceil(epoch_progress)``.
    ``epoch_progress`` counts finished epochs including the current step, ``epoch + (step + 1) / steps``
    with a 0-based epoch (what the trainer passes): every step of the first epoch gives e = 1, as the
    authors' loop, which updates lambda once per epoch with their 1-based epoch counter.

    The code writes the same curve as ``CosineDecay(max_value=0, min_value=-1, num_loops=10)`` and a
    reversal layer that multiplies the gradient by that (negative) value; here lambda is the paper's
    positive strength and the layer multiplies by ``-lambda`` (``lambda_min = -decay_max``,
    ``lambda_max = -decay_min``). A pure function of the position, so a resumed run continues the curve.
    """
    if isinstance(epoch_progress, bool) or not isinstance(epoch_progress, (int, float)):
        raise ValueError(f"epoch_progress must be a number of epochs, got {epoch_progress!r}")
    if not math.isfinite(epoch_progress) or epoch_progress < 0:
        raise ValueError(f"epoch_progress must be a finite number >= 0 (epochs done), got {epoch_progress!r}")
    loops = check_positive(decay_epochs, "decay_epochs")
    e = min(float(math.ceil(epoch_progress)), loops)
    return lambda_min + (lambda_max - lambda_min) * (1.0 - math.cos(math.pi * e / loops)) / 2.0


class _GradientReversal(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``-strength``."""

    @staticmethod
    def forward(ctx, x: Tensor, strength: float) -> Tensor:  # type: ignore[override]
        ctx.strength = strength
        return x.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return grad * (-ctx.strength), None


def curriculum_temperature(
    global_t: Tensor,
    epoch_progress: float,
    *,
    temp_start: float = 1.0,
    temp_range: float = 20.0,
    lambda_max: float = 1.0,
    lambda_min: float = 0.0,
    decay_epochs: float = 10.0,
) -> Tensor:
    """``temp_start + temp_range * sigmoid(GRL(global_t))``, 0-dim; the reversal strength is
    :func:`ctkd_lambda` of ``epoch_progress``."""
    lam = ctkd_lambda(epoch_progress, lambda_max=lambda_max, lambda_min=lambda_min, decay_epochs=decay_epochs)
    return (temp_start + temp_range * torch.sigmoid(_GradientReversal.apply(global_t, lam))).reshape(())


def ctkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    global_t: Tensor,
    epoch_progress: float,
    *,
    temp_start: float = 1.0,
    temp_range: float = 20.0,
    lambda_max: float = 1.0,
    lambda_min: float = 0.0,
    decay_epochs: float = 10.0,
    standardize: bool = False,
) -> Tensor:
    """KD, ``KL(softmax(z_t/tau) || softmax(z_s/tau)) * tau**2`` (batch mean), at the learnable temperature
    ``tau = temp_start + temp_range * sigmoid(global_t)`` behind a gradient-reversal layer.

    The student descends the loss; ``global_t`` ascends it (its gradient is multiplied by ``-lambda``, see
    :func:`ctkd_lambda`), so the temperature moves towards harder distillation as the curriculum raises
    lambda. The gradient reaching ``tau`` flows through both softmaxes and the ``tau**2`` factor, as in the
    authors' code (their teacher logits carry no graph, but the temperature dividing them does).

    Args:
        student_logits, teacher_logits: ``(N, C)``; the teacher is detached.
        global_t: the learnable scalar (``(1,)`` or 0-dim; the authors initialise it to 1, so tau starts at
            ``1 + 20 * sigmoid(1) = 15.6``).
        epoch_progress: epochs done including the current step (0-based epoch + (step + 1) / steps).
        temp_start, temp_range: the authors' ``--t_start`` (1) and ``--t_end`` (20), so tau lies in (1, 21).
        lambda_max, lambda_min, decay_epochs: the curriculum (the authors' CIFAR-100 script: 1, 0, 10 epochs;
            ImageNet: 5 epochs).
        standardize: z-score both logits per sample first (the logit-standardization authors' CTKD runs).
    """
    _check_curriculum(temp_start, temp_range, lambda_max, lambda_min, decay_epochs)
    zs = check_logits(student_logits, "student_logits")
    zt = check_logits(teacher_logits, "teacher_logits").detach()
    check_pair(zs, zt, "teacher_logits")
    if not isinstance(global_t, Tensor) or global_t.numel() != 1:
        raise ValueError("global_t must be a one-element tensor (the learnable temperature parameter)")
    tau = curriculum_temperature(
        global_t,
        epoch_progress,
        temp_start=temp_start,
        temp_range=temp_range,
        lambda_max=lambda_max,
        lambda_min=lambda_min,
        decay_epochs=decay_epochs,
    )
    return _kd_at(zs, zt, tau.to(zs.dtype), check_flag(standardize, "standardize"))


def _kd_at(zs: Tensor, zt: Tensor, tau: Tensor, standardize: bool) -> Tensor:
    """KD at a tensor temperature (gradient flows to ``tau``); 0-dim."""
    raw = (zs, zt)
    if standardize:
        zs, zt = standardize_logits(zs), standardize_logits(zt)
    log_s = (zs / tau).log_softmax(dim=1)  # (N, C)
    log_t = (zt / tau).log_softmax(dim=1)  # (N, C); no graph to the teacher, but one to tau
    loss = F.kl_div(log_s, log_t, reduction="batchmean", log_target=True) * (tau * tau)
    return nan_if_nonfinite(loss, *raw)  # NaN for non-finite logits (docs/losses.md)


def _check_curriculum(
    temp_start: float, temp_range: float, lambda_max: float, lambda_min: float, decay_epochs: float
) -> None:
    check_positive(temp_start, "temp_start")
    check_positive(temp_range, "temp_range")
    check_finite(lambda_max, "lambda_max")
    check_finite(lambda_min, "lambda_min")
    check_positive(decay_epochs, "decay_epochs")


class CTKDTemperature(nn.Module):
    """The learnable global temperature: ``tau = temp_start + temp_range * sigmoid(global_t)``, called as
    ``module(epoch_progress)`` -> 0-dim tau whose backward reverses (and scales by the curriculum's lambda)
    the gradient reaching ``global_t``.

    ``global_t`` is an ``nn.Parameter`` of shape ``(1,)`` initialised to 1 (as the authors' ``Global_T``):
    it joins the optimizer and the checkpoint with the module. The curriculum is a pure function of
    ``epoch_progress`` (:func:`ctkd_lambda`), so the module holds no schedule state.
    """

    def __init__(
        self,
        *,
        temp_start: float = 1.0,
        temp_range: float = 20.0,
        lambda_max: float = 1.0,
        lambda_min: float = 0.0,
        decay_epochs: float = 10.0,
    ) -> None:
        super().__init__()
        _check_curriculum(temp_start, temp_range, lambda_max, lambda_min, decay_epochs)
        self.temp_start, self.temp_range = float(temp_start), float(temp_range)
        self.lambda_max, self.lambda_min = float(lambda_max), float(lambda_min)
        self.decay_epochs = float(decay_epochs)
        self.global_t = nn.Parameter(torch.ones(1))

    def forward(self, epoch_progress: float) -> Tensor:
        return curriculum_temperature(
            self.global_t,
            epoch_progress,
            temp_start=self.temp_start,
            temp_range=self.temp_range,
            lambda_max=self.lambda_max,
            lambda_min=self.lambda_min,
            decay_epochs=self.decay_epochs,
        )

    def current(self) -> float:
        """The temperature now (for logging; no graph)."""
        return self.temp_start + self.temp_range * float(torch.sigmoid(self.global_t.detach()).item())

    def extra_repr(self) -> str:
        return (
            f"temp_start={self.temp_start}, temp_range={self.temp_range}, lambda_max={self.lambda_max}, "
            f"lambda_min={self.lambda_min}, decay_epochs={self.decay_epochs}"
        )


class CTKDLoss(nn.Module):
    """KD at a :class:`CTKDTemperature`, called as ``loss(student_logits, teacher_logits, epoch_progress)``.

    The engine must pass ``epoch_progress`` (see :func:`ctkd_lambda`) and put ``loss.parameters()`` (the
    one temperature parameter) into the optimizer; ``state_dict()`` holds it for exact resume.
    """

    requires = ("teacher_logits", "epoch_progress")

    def __init__(
        self,
        *,
        temp_start: float = 1.0,
        temp_range: float = 20.0,
        lambda_max: float = 1.0,
        lambda_min: float = 0.0,
        decay_epochs: float = 10.0,
        standardize: bool = False,
    ) -> None:
        super().__init__()
        self.temperature = CTKDTemperature(
            temp_start=temp_start,
            temp_range=temp_range,
            lambda_max=lambda_max,
            lambda_min=lambda_min,
            decay_epochs=decay_epochs,
        )
        self.standardize = check_flag(standardize, "standardize")

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, epoch_progress: float) -> Tensor:
        zs = check_logits(student_logits, "student_logits")
        zt = check_logits(teacher_logits, "teacher_logits").detach()
        check_pair(zs, zt, "teacher_logits")
        return _kd_at(zs, zt, self.temperature(epoch_progress).to(zs.dtype), self.standardize)

    def extra_repr(self) -> str:
        return f"standardize={self.standardize}"
