"""Optimiser factory: SGD (momentum, Nesterov) and AdamW with no-decay parameter groups.

Weight decay on normalisation weights and biases hurts accuracy and is excluded by the common
CIFAR/ImageNet recipes (e.g. "Bag of Tricks", He et al. 2019); we exclude every parameter with fewer
than two dimensions, which covers BatchNorm/LayerNorm/GroupNorm scales, shifts and all biases.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from unikd.registry import unknown_name_message

OPTIMIZERS = ("sgd", "adamw")


def _unique_trainable(modules: Iterable[nn.Module]) -> list[tuple[str, nn.Parameter]]:
    """Trainable parameters of all ``modules``, each exactly once (shared/tied weights are common)."""
    seen: set[int] = set()
    out: list[tuple[str, nn.Parameter]] = []
    for m_idx, module in enumerate(modules):
        if not isinstance(module, nn.Module):
            raise ValueError(
                f"modules[{m_idx}] is a {type(module).__name__}, not an nn.Module; pass the student model "
                "(and the USKD weak head) as modules"
            )
        for name, param in module.named_parameters():
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            out.append((f"{m_idx}.{name}", param))
    return out


def param_groups(
    modules: Sequence[nn.Module], *, weight_decay: float, no_decay_norm_bias: bool = True
) -> list[dict]:
    """Split the unique trainable parameters into a decayed and (optionally) an undecayed group.

    Empty groups are dropped so that the optimiser's ``param_groups`` only contains real parameters.
    """
    params = _unique_trainable(modules)
    if not params:
        raise ValueError("modules have no trainable parameters; nothing to optimise (check requires_grad)")
    if not no_decay_norm_bias or weight_decay == 0:
        return [{"params": [p for _, p in params], "weight_decay": weight_decay}]
    decay = [p for _, p in params if p.ndim >= 2]
    no_decay = [p for _, p in params if p.ndim < 2]
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(
    modules: Sequence[nn.Module],
    *,
    name: str = "sgd",
    lr: float,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 5e-4,
    betas: Sequence[float] = (0.9, 0.999),
    no_decay_norm_bias: bool = True,
) -> torch.optim.Optimizer:
    """Build the optimiser for the parameters of ``modules`` (e.g. ``[student, uskd_loss]``).

    Args:
        modules: modules whose trainable parameters are optimised; a parameter shared between modules
            is included once.
        name: ``"sgd"`` or ``"adamw"``.
        lr: base learning rate (> 0).
        momentum, nesterov: SGD only. Nesterov needs ``momentum > 0``.
        weight_decay: L2 (SGD) / decoupled (AdamW) weight decay (>= 0).
        betas: AdamW only.
        no_decay_norm_bias: exclude 1-D parameters (norm weights, biases) from weight decay.
    """
    if isinstance(modules, nn.Module):
        modules = [modules]
    key = str(name).lower()
    if key not in OPTIMIZERS:
        raise ValueError(unknown_name_message("optimizer (optim.name)", str(name), OPTIMIZERS))
    if not lr > 0:
        raise ValueError(f"optim.lr must be > 0, got {lr}; set e.g. optim.lr=0.05")
    if weight_decay < 0:
        raise ValueError(f"optim.weight_decay must be >= 0, got {weight_decay}")
    groups = param_groups(modules, weight_decay=weight_decay, no_decay_norm_bias=no_decay_norm_bias)
    if key == "sgd":
        if momentum < 0:
            raise ValueError(f"optim.momentum must be >= 0, got {momentum}")
        if nesterov and momentum == 0:
            raise ValueError("optim.nesterov=true needs optim.momentum > 0 (e.g. optim.momentum=0.9)")
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=bool(nesterov))
    betas = tuple(float(b) for b in betas)
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ValueError(f"optim.betas must be two numbers in [0, 1), got {list(betas)}")
    return torch.optim.AdamW(groups, lr=lr, betas=betas)  # type: ignore[arg-type]
