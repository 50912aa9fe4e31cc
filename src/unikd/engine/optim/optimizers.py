"""Optimiser registry and factory: SGD (momentum, Nesterov) and AdamW with no-decay parameter groups.

``optim.name`` is looked up in :data:`OPTIMIZERS` (timm style: :func:`register_optimizer`,
:func:`create_optimizer`, :func:`list_optimizers`), so an optimiser registered from outside the package can be
named in a config.

Weight decay on normalisation weights and biases hurts accuracy and is excluded by the common
CIFAR/ImageNet recipes (e.g. "Bag of Tricks", He et al. 2019); we exclude every parameter with fewer
than two dimensions, which covers BatchNorm/LayerNorm/GroupNorm scales, shifts and all biases.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from unikd.registry import Registry, unknown_name_message

__all__ = [
    "OPTIMIZERS",
    "build_optimizer",
    "create_optimizer",
    "list_optimizers",
    "param_groups",
    "register_optimizer",
]

# name -> factory(param_groups, *, lr, momentum, nesterov, betas) -> Optimizer. A factory takes every keyword
# (extra ones via **kwargs) and validates the ones it uses; lr and weight_decay are checked before it runs.
OPTIMIZERS: Registry[torch.optim.Optimizer] = Registry("optimizer (optim.name)")


def register_optimizer(name: str, factory: Callable[..., torch.optim.Optimizer]) -> None:
    """Register ``factory(param_groups, *, lr, momentum, nesterov, betas, **kwargs) -> Optimizer``."""
    OPTIMIZERS.register(name, factory)


def list_optimizers() -> list[str]:
    """Sorted names accepted by ``optim.name``."""
    return OPTIMIZERS.names()


def create_optimizer(name: str, param_groups: list[dict], **kwargs: Any) -> torch.optim.Optimizer:
    """The registered optimiser ``name`` over ``param_groups``; unknown names fail with the closest one."""
    return OPTIMIZERS.get(name)(param_groups, **kwargs)


def _sgd(
    groups: list[dict], *, lr: float, momentum: float, nesterov: bool, **_: Any
) -> torch.optim.Optimizer:
    if momentum < 0:
        raise ValueError(f"optim.momentum must be >= 0, got {momentum}")
    if nesterov and momentum == 0:
        raise ValueError("optim.nesterov=true needs optim.momentum > 0 (e.g. optim.momentum=0.9)")
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=bool(nesterov))


def _adamw(groups: list[dict], *, lr: float, betas: Sequence[float], **_: Any) -> torch.optim.Optimizer:
    pair = tuple(float(b) for b in betas)
    if len(pair) != 2 or not all(0 <= b < 1 for b in pair):
        raise ValueError(f"optim.betas must be two numbers in [0, 1), got {list(pair)}")
    return torch.optim.AdamW(groups, lr=lr, betas=pair)  # type: ignore[arg-type]


register_optimizer("sgd", _sgd)
register_optimizer("adamw", _adamw)


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
        name: a registered optimiser (``"sgd"``, ``"adamw"`` or one added by :func:`register_optimizer`).
        lr: base learning rate (> 0).
        momentum, nesterov: SGD only. Nesterov needs ``momentum > 0``.
        weight_decay: L2 (SGD) / decoupled (AdamW) weight decay (>= 0).
        betas: AdamW only.
        no_decay_norm_bias: exclude 1-D parameters (norm weights, biases) from weight decay.
    """
    if isinstance(modules, nn.Module):
        modules = [modules]
    key = str(name).lower()
    if key not in OPTIMIZERS:  # the message names the value as written, before any other check
        raise ValueError(unknown_name_message(OPTIMIZERS.kind, str(name), list_optimizers()))
    if not lr > 0:
        raise ValueError(f"optim.lr must be > 0, got {lr}; set e.g. optim.lr=0.05")
    if weight_decay < 0:
        raise ValueError(f"optim.weight_decay must be >= 0, got {weight_decay}")
    groups = param_groups(modules, weight_decay=weight_decay, no_decay_norm_bias=no_decay_norm_bias)
    return OPTIMIZERS.get(key)(groups, lr=lr, momentum=momentum, nesterov=nesterov, betas=betas)
