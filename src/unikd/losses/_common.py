"""Shared helpers of the losses: input checks, target parsing and masked log-softmax (Zipf rank weights:
:mod:`unikd.losses._zipf_ranks`).

Every loss computes in float32 whatever the input dtype (bf16/fp16 logits are upcast once here; float64 stays
float64 so that ``torch.autograd.gradcheck`` works), creates its helper tensors on the input's device, and
avoids ``(N, C-1)`` copies: target columns are overwritten with the most negative finite float32 and one
ordinary (log-)softmax is taken. A finite value instead of ``-inf`` keeps
rows without any non-target class (C=2 with a two-class soft label) finite in value and gradient.

Bad values, the same for every loss (see docs/losses.md, "Non-finite inputs, soft labels and weights"):

- non-finite logits (NaN, +inf or -inf anywhere, target columns included) give a NaN loss, as torch's own
  losses do: :func:`nan_if_nonfinite` (no host sync, so it also holds under ``torch.compile`` and on GPU);
  the token losses (:mod:`unikd.token`) apply the same helper to the rows they keep;
- loss weights (the coefficients of a method's terms) must be finite and >= 0: :func:`check_weight`;
- soft labels are checked by :func:`check_soft_labels`: finite, non-negative, each row summing to 1 within
  ``SOFT_LABEL_ATOL`` (a ``ValueError`` names the problem). Like every check that reads tensor values (a
  host sync), it runs only when :func:`unikd.losses.checks.checks_enabled` (mode ``"full"``, eager); with
  checks off or under ``torch.compile`` it is skipped and non-finite labels still give NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .checks import checks_enabled

# |row sum - 1| allowed for soft labels: rounding of a mixup/cutmix mixture stored in that dtype (bf16 keeps
# 8 significant bits, fp16 11), with room for the accumulation error of a float32 sum over ~1e4 classes.
SOFT_LABEL_ATOL = {torch.float64: 1e-3, torch.float32: 1e-3, torch.float16: 1e-2, torch.bfloat16: 1e-2}
# Most negative finite float32: exp(MASK - anything) == 0, yet 0 * MASK == 0 (no NaN from 0 * -inf).
MASK_VALUE = torch.finfo(torch.float32).min


def as_float32(x: Tensor) -> Tensor:
    """``x`` upcast to float32 when it is a half type; float32 and float64 (used by gradcheck) stay."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def check_logits(x: object, name: str) -> Tensor:
    """Validate a ``(N, C)`` floating tensor of logits with N >= 1 and C >= 2; return it as float32."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (N, C), got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(
            f"{name} must be a floating tensor (float32/bf16/fp16), got {x.dtype}; cast it with .float()"
        )
    if x.dim() != 2:
        raise ValueError(
            f"{name} must have shape (N, C), got {tuple(x.shape)}; flatten extra dimensions "
            "(e.g. logits.flatten(0, -2)) before calling the loss"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (N=0); skip the loss for empty batches")
    if x.shape[1] < 2:
        raise ValueError(f"{name} has C={x.shape[1]} classes; these losses need C >= 2")
    return as_float32(x)


def check_pair(student: Tensor, other: Tensor, other_name: str) -> None:
    """Student and teacher/weak logits must be on one device with the same batch size and class count."""
    if student.device != other.device:
        raise ValueError(
            f"student_logits is on {student.device} but {other_name} on {other.device}; move both to one "
            "device"
        )
    if student.shape[1] != other.shape[1]:
        raise ValueError(
            f"student/{other_name.split('_')[0]} class count mismatch: student_logits has "
            f"C={student.shape[1]} but {other_name} has C={other.shape[1]}; both heads must predict the same "
            "classes"
        )
    if student.shape[0] != other.shape[0]:
        raise ValueError(
            f"shape mismatch: student_logits has N={student.shape[0]} rows but {other_name} has "
            f"N={other.shape[0]}; pass the outputs for the same batch"
        )


def check_positive(value: float, name: str) -> float:
    """A finite number > 0 (temperatures, powers)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_finite(value: float, name: str) -> float:
    """A finite real number (exponents, curriculum strengths; loss weights use :func:`check_weight`)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def check_weight(value: float, name: str) -> float:
    """A loss weight: a finite number >= 0 (0 switches its term off).

    Every weighted term of these methods is a divergence or a cross-entropy that training minimises; a
    negative weight would make the optimiser maximise it instead, which no method defines, and the run would
    train away from its target without any error. So it is rejected here, naming the parameter.
    """
    w = check_finite(value, name)
    if w < 0:
        raise ValueError(
            f"{name} must be >= 0, got {value!r}: it weights a term that training minimises, and a negative "
            f"weight would maximise it instead. Pass {name}=0 to switch the term off, or a positive weight"
        )
    return w


@dataclass
class Targets:
    """A parsed target.

    ``index`` ``(N, k)`` int64: the target column(s); ``value`` ``(N, k)`` float32: their label values V_t
    (0 marks an unused column, whose index repeats column 0 so that masking it is harmless); ``soft``: the
    float ``(N, C)`` label or None for class indices.
    """

    index: Tensor
    value: Tensor
    soft: Tensor | None


def parse_target(
    target: object, n: int, c: int, *, max_targets: int = 1, device: torch.device | None = None
) -> Targets:
    """Validate ``target`` (int64 ``(N,)`` indices or float ``(N, C)`` soft labels) and pick target columns.

    With soft labels the ``max_targets`` largest entries are the targets (``max_targets=1``: the argmax).
    Columns whose label value is 0 are not targets (a one-hot soft label then equals its class index).
    Range and sign checks read values (a host sync): they run only when checks are enabled
    (:mod:`unikd.losses.checks`; never under ``torch.compile``, where they would break the graph).
    """
    if not isinstance(target, Tensor):
        raise ValueError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if device is not None and target.device != device:
        raise ValueError(f"target is on {target.device} but the logits on {device}; move it with .to(device)")
    if target.is_floating_point():
        if target.dim() == 1:
            raise ValueError(
                "target is a float 1-D tensor; class indices must be int64 (use target.long()), "
                f"soft labels must have shape (N, C) = ({n}, {c})"
            )
        if target.shape != (n, c):
            raise ValueError(
                f"soft-label target must have shape (N, C) = ({n}, {c}) like student_logits, "
                f"got {tuple(target.shape)}"
            )
        soft = as_float32(target)
        check_soft_labels(soft, atol=SOFT_LABEL_ATOL.get(target.dtype, 1e-2))
        value, index = soft.topk(max_targets, dim=1) if max_targets > 1 else soft.max(dim=1, keepdim=True)
        if max_targets > 1:
            # Unused columns (label value 0) point at column 0's class so masking them changes nothing.
            index = torch.where(value > 0, index, index[:, :1])
        return Targets(index=index, value=value, soft=soft)
    if target.dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        if target.shape != (n,):
            raise ValueError(
                f"class-index target must have shape (N,) = ({n},), got {tuple(target.shape)}; "
                "for soft labels pass a float (N, C) tensor"
            )
        index = target.long().view(n, 1)
        if checks_enabled() and bool(((index < 0) | (index >= c)).any()):
            raise ValueError(
                f"target out of range: class indices must lie in [0, {c - 1}] (C={c}), got min "
                f"{int(index.min())} and max {int(index.max())}"
            )
        return Targets(index=index, value=torch.ones(n, 1, device=index.device), soft=None)
    raise ValueError(
        f"target must be int64 class indices (N,) or float soft labels (N, C), got dtype {target.dtype}"
    )


def check_soft_labels(soft: Tensor, *, atol: float = 1e-3, name: str = "target") -> None:
    """Soft labels ``(N, C)`` must be finite, non-negative and sum to 1 per row (within ``atol``).

    Needs a host sync, so it runs only when checks are enabled (:mod:`unikd.losses.checks`: mode
    ``"full"``, not while ``torch.compile`` traces).
    """
    if not checks_enabled():
        return
    finite = torch.isfinite(soft)
    if not bool(finite.all()):
        row = int((~finite).any(dim=1).nonzero()[0])
        raise ValueError(
            f"soft-label {name} holds non-finite values (row {row}: {soft[row].tolist()[:8]}...); "
            "labels must be finite probabilities: check the mixing weights / label pipeline"
        )
    if bool((soft < 0).any()):
        raise ValueError(
            f"soft-label {name} has negative entries; labels must be non-negative (mixup weights)"
        )
    sums = soft.sum(dim=1, dtype=torch.float64)
    bad = (sums - 1.0).abs() > atol
    if bool(bad.any()):
        row = int(bad.nonzero()[0])
        raise ValueError(
            f"soft-label {name} rows must sum to 1 (within {atol:g}), but row {row} sums to "
            f"{float(sums[row]):.6g}; normalise the labels (target / target.sum(1, keepdim=True)) or pass "
            "class indices"
        )


def nan_if_nonfinite(loss: Tensor, *inputs: Tensor | None) -> Tensor:
    """``loss``, or NaN when the loss or any of ``inputs`` holds NaN or +-inf (torch's own losses give NaN).

    Pass the inputs whose bad values masking (target columns, top-k, ranks, softmax weights that underflow
    to 0) could hide from the result; a loss to which every input element contributes (an MSE) needs none:
    its own inf becomes NaN here. A diverging run's loss is then NaN, so the trainer stops with its
    non-finite-loss message instead of training on. ``min * 0 + max * 0`` of each input is 0 when it is
    finite and NaN otherwise (the min catches -inf, the max +inf, both propagate NaN): one ``aminmax``
    reduction per input, without a temporary of the input's size, an overflow or a host sync (about 4x
    cheaper than ``sum(x * 0)`` and 10x cheaper than ``isfinite().all()`` on CPU). Gradients are those of
    ``loss``.
    """
    guard = loss.detach() - loss.detach()  # 0, or NaN when the loss itself is inf or NaN
    for x in inputs:
        if x is not None and x.numel():
            lo, hi = torch.aminmax(x.detach())
            guard = guard + (lo * 0 + hi * 0).to(loss.dtype)
    return loss + guard


def masked_log_softmax(logits: Tensor, index: Tensor) -> Tensor:
    """log-softmax over the non-target classes; target columns ``index`` ``(N, k)`` hold ~MASK_VALUE."""
    return logits.scatter(1, index, MASK_VALUE).log_softmax(dim=1)


def nontarget_lse(logits: Tensor, masked_logp: Tensor) -> Tensor:
    """log-sum-exp over the non-target logits, ``(N, 1)``, from a masked log-softmax (no extra pass).

    For any non-target column j, ``logits_j - masked_logp_j`` is that log-sum-exp; the largest non-target
    column gives the most accurate value. Exact identity, so gradients flow correctly through both terms.
    """
    j = masked_logp.detach().argmax(dim=1, keepdim=True)
    return logits.gather(1, j) - masked_logp.gather(1, j)


def normalise_nontarget(weights: Tensor, index: Tensor) -> Tensor:
    """Zero the target columns of ``weights`` (in place) and renormalise each row over the rest."""
    weights.scatter_(1, index, 0.0)
    return weights / weights.sum(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
