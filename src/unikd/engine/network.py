"""What every trained network of a run gets: its optimiser (over its weights and its loss terms' trainable
state), its learning-rate schedule, its EMA and its DDP / compile wrapper.

The student of every run and each peer of online training (``online.peers``) are built by the same function,
so they are trained with exactly the same settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from unikd.engine.config import Config
from unikd.engine.distributed import DistInfo


@dataclass
class TrainParts:
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ema: Any  # ModelEMA or None
    ddp_model: nn.Module  # what runs forward: the model, wrapped in DDP and/or torch.compile when set


def create_network(
    cfg: Config, name: str, num_classes: int, in_chans: int, device: torch.device
) -> nn.Module:
    """``create_model(name)`` on ``device`` (channels-last when configured)."""
    from unikd.engine.evaluate import model_kwargs
    from unikd.models import create_model

    model = create_model(name, num_classes=num_classes, **model_kwargs(in_chans)).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def train_parts(
    cfg: Config, info: DistInfo, model: nn.Module, objective: nn.Module, steps_per_epoch: int
) -> TrainParts:
    """Optimiser over ``model`` and ``objective`` (the term modules' trainable state), schedule, EMA and the
    DDP / compile wrapper, from the config's ``optim``, ``sched``, ``ema_decay`` and ``compile`` keys."""
    from unikd.engine.ema import ModelEMA
    from unikd.engine.optim import build_optimizer
    from unikd.engine.schedule import build_scheduler

    o, s = cfg.optim, cfg.sched
    optimizer = build_optimizer(
        [model, objective],
        name=o.name,
        lr=o.lr,
        momentum=o.momentum,
        nesterov=o.nesterov,
        weight_decay=o.weight_decay,
        betas=tuple(o.betas),
        no_decay_norm_bias=o.no_decay_norm_bias,
    )
    scheduler = build_scheduler(
        optimizer,
        name=s.name,
        epochs=cfg.epochs,
        steps_per_epoch=steps_per_epoch,
        milestones=s.milestones,
        gamma=s.gamma,
        warmup_epochs=s.warmup_epochs,
        min_lr_factor=s.min_lr_factor,
    )
    ema = ModelEMA(model, cfg.ema_decay) if cfg.ema_decay is not None else None
    ddp_model: nn.Module = model
    if info.distributed:
        dev = info.device
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None
        )
    if cfg.compile:
        ddp_model = torch.compile(ddp_model)
    return TrainParts(optimizer, scheduler, ema, ddp_model)
