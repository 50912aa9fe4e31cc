"""Process-group setup for ``torchrun`` (DDP), the few collectives the trainer needs, and the device and
precision context every forward pass runs under.

``torchrun --nproc_per_node N -m unikd train ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous variables; a plain ``python -m unikd train`` leaves them unset and runs single-process. The
backend is nccl for CUDA devices and gloo for CPU.

BatchNorm under DDP normalises with each rank's own batch statistics, so a 2-rank run differs from one
process with the same global batch. ``sync_bn=true`` converts every BatchNorm layer to torch's
``SyncBatchNorm`` (statistics over the global batch); torch implements its forward for CUDA devices only
(it raises for CPU tensors), so with gloo on CPU the option is refused with a clear error.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size``, its ``device`` and whether it owns the files."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when CUDA is available, else cpu; validates explicit devices."""
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device={spec!r} but CUDA is not available here; use device=cpu or device=auto")
        if spec == "cuda":
            return torch.device(f"cuda:{local_rank}")
    if spec == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError("device='mps' but MPS is not available here; use device=cpu or device=auto")
    return torch.device(spec)


def init_distributed(device_spec: str) -> DistInfo:
    """Initialise the process group when launched by torchrun (``WORLD_SIZE`` > 1); else a 1-rank info."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec, local_rank)
    if world_size <= 1:
        return DistInfo(0, 1, 0, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    created = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        created = True
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device, created)


def has_batchnorm(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def sync_batchnorm(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """``sync_bn=true``: BatchNorm -> SyncBatchNorm when running distributed (no-op in one process)."""
    if not info.distributed:
        return model
    if info.device.type != "cuda":
        raise ValueError(
            f"sync_bn=true: torch's SyncBatchNorm only runs on CUDA devices (nccl), not on "
            f"{info.device.type} (gloo); set sync_bn=false (each rank then normalises with its own batch "
            "statistics) or train on GPUs"
        )
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


def cleanup_distributed(info: DistInfo) -> None:
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``t`` over ranks in place (no-op single-process) and return it."""
    if info.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_max(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def average_gradients(params: list[torch.nn.Parameter], info: DistInfo) -> None:
    """Average the gradients of parameters that live outside the DDP wrapper (USKD's weak head)."""
    if not info.distributed:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(info.world_size)


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def autocast_factory(precision: str, device: torch.device) -> Callable[[], Any]:
    """A zero-argument context factory: autocast for bf16/fp16, a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)
