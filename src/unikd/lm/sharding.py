"""Models sharded with FSDP2 (``torch.distributed.fsdp.fully_shard``): their heads, hooks and gradient sync.

The fused loss applies the student's output head outside the model's forward, so it needs the head's whole
weight. Under FSDP2 that weight is either the unsharded parameter FSDP left in place after the forward (the
root unit keeps its parameters gathered until the backward) or a ``DTensor`` shard. :func:`whole` turns the
shard into the full tensor with ``full_tensor()``, its gradient declared a partial sum so autograd
reduce-scatters it back to the shards; the gradient is divided by the mesh size there, because FSDP averages
its own reduce-scatters over the ranks and the two must add up to the gradient DDP would give.

The fused path never uses the logits of the model's forward, so the FSDP units whose outputs only reach those
logits (the head's unit, the root) would see no gradient and skip their backward hooks. :func:`anchor` ties
those logits into the loss with a zero gradient, so every unit's hooks fire as in an ordinary backward.
DeepSpeed ZeRO-3 partitions (empty local tensors) cannot be gathered here and are refused on the fused path.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


def _dtensor_type() -> type | None:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch built without distributed support
        return None
    return DTensor


def is_dtensor(value: Any) -> bool:
    cls = _dtensor_type()
    return cls is not None and isinstance(value, cls)


def fsdp_modules(model: nn.Module) -> list[nn.Module]:
    """The FSDP2 units inside ``model`` (itself included), outermost first; empty when it is not sharded."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return []
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def is_sharded(model: nn.Module) -> bool:
    """``model`` holds FSDP2 units or ``DTensor`` parameters."""
    return bool(fsdp_modules(model)) or any(is_dtensor(p) for p in model.parameters())


def head_shape(weight: Tensor) -> tuple[int, ...]:
    """The full shape of a head weight: a ``DTensor``'s global shape, a ZeRO-3 partition's ``ds_shape``."""
    full = getattr(weight, "ds_shape", None)
    return tuple(full) if full is not None else tuple(weight.shape)


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


def whole(tensor: Tensor | None, name: str = "model") -> Tensor | None:
    """``tensor`` itself, or the full tensor of a ``DTensor`` (differentiable, averaged over the mesh)."""
    if tensor is None or not is_dtensor(tensor):
        if tensor is not None and tensor.numel() == 0:
            raise ValueError(
                f"the {name}'s output head weight is an empty partition (shape {tuple(tensor.shape)}, full "
                f"shape {head_shape(tensor)}; DeepSpeed ZeRO-3): the fused loss needs the whole head outside "
                "the model's forward. Use fused=False (the loss from the logits the model computes), or "
                "shard with FSDP2 (fully_shard), whose head the fused loss gathers"
            )
        return tensor
    from torch.distributed.tensor import Partial

    mesh = tensor.device_mesh
    if not tensor.requires_grad:  # a frozen teacher's head: a plain all-gather
        return tensor.full_tensor()
    full = tensor.full_tensor(grad_placements=[Partial()] * mesh.ndim)
    return _ScaleGrad.apply(full, 1.0 / mesh.size())


class _Anchor(torch.autograd.Function):
    """``loss``, with ``output`` in its graph receiving an exact zero gradient (0 * inf would give nan)."""

    @staticmethod
    def forward(ctx: Any, loss: Tensor, output: Tensor) -> Tensor:
        ctx.save_for_backward(output)
        return loss.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor]:
        (output,) = ctx.saved_tensors
        return grad, torch.zeros_like(output)


def anchor(loss: Tensor, output: Tensor | None) -> Tensor:
    """``loss`` whose backward also reaches ``output`` (the model's own logits) with a zero gradient."""
    if output is None or not output.requires_grad:
        return loss
    return _Anchor.apply(loss, output)


def reshard(model: nn.Module) -> None:
    """Every FSDP2 unit of ``model`` back to its shards (the root keeps its parameters after a forward)."""
    for module in fsdp_modules(model):
        module.reshard()


def set_gradient_sync(model: nn.Module, sync: bool) -> None:
    """Gradient accumulation under FSDP2: reduce-scatter only on the micro-batch that ends the step."""
    for module in fsdp_modules(model):
        module.set_requires_gradient_sync(sync, recurse=False)


def check_saving(args: Any) -> None:
    """FSDP2's optimizer state is sharded: the Trainer's checkpoints would save rank 0's shard only."""
    strategy = getattr(args, "save_strategy", "no")
    if getattr(strategy, "value", strategy) == "no" or getattr(args, "save_only_model", False):
        return
    raise ValueError(
        "the student is sharded with FSDP2, whose optimizer state is sharded across the processes; the "
        "Trainer's checkpoints would keep only the first process's shard. Pass save_only_model=True "
        "(the full model weights are gathered and saved) or save_strategy='no'"
    )


def full_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Every process joins the gather; the first process receives the full weights on the CPU."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


__all__ = [
    "anchor",
    "check_saving",
    "fsdp_modules",
    "full_state_dict",
    "head_shape",
    "is_dtensor",
    "is_sharded",
    "reshard",
    "set_gradient_sync",
    "whole",
]
