"""Temporally adaptive interpolated distillation, TAID (Shing, Misaki, Bao, Yokoi and Akiba, "TAID: Temporally
Adaptive Interpolated Distillation for Efficient Knowledge Transfer in Language Models", ICLR 2025,
arXiv:2501.16937; official code github.com/SakanaAI/TAID, commit a0628922, ``src/distil_losses/taid.py``)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ._common import check_logits, check_pair, check_positive, nan_if_nonfinite
from .checks import checks_enabled


def check_interpolation(value: float | Tensor, name: str = "t") -> float | Tensor:
    """The interpolation coefficient: a number (or 0-dim tensor) in [0, 1]."""
    if isinstance(value, Tensor):
        if value.dim() != 0 or not value.is_floating_point():
            raise ValueError(
                f"{name} must be a float or a 0-dim floating tensor, got shape {tuple(value.shape)}"
            )
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(
            f"{name} must be a number in [0, 1] (0: the student itself, 1: the teacher), got {value!r}"
        )
    return float(value)


def taid_loss(
    student_logits: Tensor, teacher_logits: Tensor, *, t: float | Tensor = 0.4, temperature: float = 1.0
) -> Tensor:
    """``-T**2 sum_i P_t,i log S_i`` with the interpolated target ``P_t = softmax(((1-t) z_s' + t z_t) / T)``.

    ``z_s'`` is the *detached* student logits, so the target moves with the student; ``t`` goes from
    ``t_start`` to 1 during training (:class:`TAIDSchedule`). S is the student's softmax at temperature T.
    Summed over classes, averaged over the rows.

    The value is the cross-entropy ``KL(P_t || S) + H(P_t)``, exactly as the official code computes it
    (its ``forward_kl`` with ``teacher_probs=P_t``); the gradient equals that of ``KL(P_t || S)``. The
    schedule's adaptive update reads this value, so keeping the entropy term keeps the official dynamics.
    The official code has no temperature; ``T = 1`` (default) reproduces it, other T scale like KD (``T**2``).

    Args:
        student_logits, teacher_logits: ``(N, C)``; the teacher is detached.
        t: interpolation coefficient in [0, 1], a float or a 0-dim tensor (e.g. ``TAIDSchedule.t``);
            default 0.4, the official ``t_start``.
        temperature: T > 0 (default 1.0).
    """
    tt = check_interpolation(t)
    temp = check_positive(temperature, "temperature")
    zs = check_logits(student_logits, "student_logits")
    zt = check_logits(teacher_logits, "teacher_logits").detach()
    check_pair(zs, zt, "teacher_logits")
    loss = taid_kernel(zs, zt, t=tt, temperature=temp, denom=zs.shape[0])
    return nan_if_nonfinite(loss, zs, zt)  # NaN for non-finite logits (docs/losses.md)


def taid_kernel(zs: Tensor, zt: Tensor, *, t: float | Tensor, temperature: float, denom: float) -> Tensor:
    """The TAID sum over the rows of validated ``(N, C)`` logits, divided by ``denom``.

    Shared by :func:`taid_loss` (``denom`` = N) and the token-level forms in :mod:`unikd.token`.
    """
    if isinstance(t, Tensor):
        t = t.to(zs.dtype)
    with torch.no_grad():
        mixed = (1 - t) * zs + t * zt  # (N, C)
        target = (mixed if temperature == 1.0 else mixed / temperature).softmax(dim=1)  # P_t, detached
        del mixed
    log_s = (zs if temperature == 1.0 else zs / temperature).log_softmax(dim=1)  # (N, C)
    return -torch.dot(target.view(-1), log_s.view(-1)) * (temperature * temperature / denom)


class TAIDSchedule(nn.Module):
    """TAID's adaptive schedule of the interpolation coefficient ``t``, as the official ``TAID.update_t``.

    State (buffers, so ``state_dict()`` saves it and ``load_state_dict()`` resumes it exactly): ``t``
    (starts at ``t_start``), ``prev_loss`` (inf before the first update) and ``momentum`` (0), float32.
    Call :meth:`update` once per training loss evaluation with the loss value computed at the current ``t``:

    - the first call only records the loss;
    - then ``m <- beta m + (1 - beta) (L_prev - L) / (L_prev + 1e-15)``,
      ``t <- min(t_end, max(t_start + (t_end - t_start) progress, t + alpha sigmoid(m) (1 - t)))``
      (``adaptive=False``: ``t`` follows the linear ramp only).

    ``progress`` is ``step / total_steps``, the official ``global_step / estimated_stepping_batches``. Unlike
    the official Lightning module, nothing updates in evaluation: :class:`TAIDLoss` updates only in training
    mode. Under DDP pass a loss averaged over the ranks, so every rank keeps the same ``t``.
    """

    def __init__(
        self,
        *,
        t_start: float = 0.4,
        t_end: float = 1.0,
        alpha: float = 5e-4,
        beta: float = 0.99,
        adaptive: bool = True,
    ) -> None:
        super().__init__()
        for name, v, lo, hi in (
            ("t_start", t_start, 0.0, 1.0),
            ("t_end", t_end, 0.0, 1.0),
            ("alpha", alpha, 0.0, 1.0),
            ("beta", beta, 0.0, 1.0),
        ):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise ValueError(f"{name} must be a number in [{lo}, {hi}], got {v!r}")
        if not t_start < t_end:
            raise ValueError(f"t_start={t_start} must be smaller than t_end={t_end}")
        self.t_start, self.t_end = float(t_start), float(t_end)
        self.alpha, self.beta, self.adaptive = float(alpha), float(beta), bool(adaptive)
        self.register_buffer("t", torch.tensor(self.t_start, dtype=torch.float32))
        self.register_buffer("prev_loss", torch.tensor(math.inf, dtype=torch.float32))
        self.register_buffer("momentum", torch.zeros((), dtype=torch.float32))

    @torch.no_grad()
    def update(self, loss: Tensor | float, progress: float) -> float:
        """Advance ``t`` after a loss ``loss`` (computed at the current ``t``) at training ``progress``.

        Returns the new ``t`` (reading it is a host sync; :meth:`advance` does the same without one).
        """
        self.advance(loss, progress)
        return float(self.t)

    @torch.no_grad()
    def advance(self, loss: Tensor | float, progress: float) -> None:
        """:meth:`update` without a host sync: the branches are selected on the device.

        A non-finite loss raises when checks are enabled (:mod:`unikd.losses.checks`); with checks off it
        leaves the schedule unchanged (the trainer stops on that loss anyway).
        """
        if isinstance(progress, bool) or not isinstance(progress, (int, float)) or not progress >= 0:
            raise ValueError(f"progress must be a number >= 0 (step / total_steps), got {progress!r}")
        loss = torch.as_tensor(loss, dtype=torch.float32, device=self.t.device).detach().reshape(())
        finite = torch.isfinite(loss)
        if checks_enabled() and not bool(finite):
            raise ValueError(f"TAID schedule got a non-finite loss {loss.item()}; t is left unchanged")
        first = torch.isinf(self.prev_loss)  # the first loss only sets prev_loss
        relative = (self.prev_loss - loss) / (self.prev_loss + 1e-15)
        momentum = self.momentum * self.beta + (1 - self.beta) * relative
        ramp = self.t_start + (self.t_end - self.t_start) * float(progress)
        if self.adaptive:
            step = self.alpha * torch.sigmoid(momentum) * (1 - self.t)
            new_t = torch.clamp(torch.clamp(self.t + step, min=ramp), max=self.t_end)
        else:
            new_t = torch.full_like(self.t, ramp)
        keep = finite & ~first
        self.momentum.copy_(torch.where(keep, momentum, self.momentum))
        self.t.copy_(torch.where(keep, new_t, self.t))
        self.prev_loss.copy_(torch.where(finite, loss, self.prev_loss))

    def extra_repr(self) -> str:
        return (
            f"t_start={self.t_start}, t_end={self.t_end}, alpha={self.alpha}, beta={self.beta}, "
            f"adaptive={self.adaptive}"
        )


class TAIDLoss(nn.Module):
    """:func:`taid_loss` at the schedule's current ``t``, with the schedule (``self.schedule``) as its state.

    Called as ``loss(student_logits, teacher_logits, epoch_progress=None, target=None, *, progress=None)``.
    In training mode with ``progress`` (= ``step / total_steps``) given, the schedule is updated with this
    call's loss after it is computed, as the official code does on every training forward. The training
    harness passes ``epoch_progress`` (finished epochs) and builds the module with ``total_epochs``, which
    give ``progress = epoch_progress / total_epochs``. Save and resume the schedule with the module's
    ``state_dict()``.
    """

    requires = ("teacher_logits", "epoch_progress")

    def __init__(
        self,
        *,
        t_start: float = 0.4,
        t_end: float = 1.0,
        alpha: float = 5e-4,
        beta: float = 0.99,
        adaptive: bool = True,
        temperature: float = 1.0,
        total_epochs: int | None = None,
    ) -> None:
        super().__init__()
        if total_epochs is not None and (isinstance(total_epochs, bool) or int(total_epochs) != total_epochs
                                         or total_epochs < 1):
            raise ValueError(f"total_epochs must be a positive integer or None, got {total_epochs!r}")
        self.total_epochs = None if total_epochs is None else int(total_epochs)
        self.schedule = TAIDSchedule(t_start=t_start, t_end=t_end, alpha=alpha, beta=beta, adaptive=adaptive)
        self.temperature = check_positive(temperature, "temperature")

    def forward(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor,
        epoch_progress: float | None = None,
        target: Tensor | None = None,
        *,
        progress: float | None = None,
    ) -> Tensor:
        if progress is None and epoch_progress is not None and self.total_epochs is not None:
            progress = min(1.0, float(epoch_progress) / self.total_epochs)
        loss = taid_loss(student_logits, teacher_logits, t=self.schedule.t, temperature=self.temperature)
        if self.training and progress is not None:
            self.schedule.advance(loss.detach(), progress)
        return loss

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
