"""One trained network of a run and everything trained or tracked for it: :class:`Network`.

A run trains a list of networks: ``[student]`` offline, ``[student, *peers]`` online (``online.peers``).
Each is built by :func:`build_parts` with the same optimiser, schedule, EMA and DDP / compile settings, is
stepped by the one step of :mod:`unikd.engine.loop.step`, and saves and restores its state the same way
(the student's at the top level of a checkpoint, each peer's under ``online.peers``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unikd.engine.config import Config
from unikd.engine.config.inputs import model_kwargs
from unikd.engine.config.step_options import compile_mode
from unikd.engine.objective.objective import Objective
from unikd.engine.objective.taps import TapSet
from unikd.engine.optim.ema import ModelEMA
from unikd.engine.optim.optimizers import build_optimizer
from unikd.engine.optim.schedules import build_scheduler
from unikd.engine.run.distributed import DistInfo


@dataclass
class Network:
    """A network with its objective (its own term modules), feature taps, optimiser, schedule and EMA.
    ``model`` is the bare network; ``ddp_model`` is what runs forward (DDP and/or compiled when set)."""

    name: str  # "student", or peer1, peer2, ... (the key prefix of a peer's logged values)
    model_name: str
    model: nn.Module
    ddp_model: nn.Module
    objective: Objective
    taps: TapSet
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ema: Any  # ModelEMA or None
    best_top1: float | None = None
    best_epoch: int | None = None
    epoch_correct: int = 0  # training rows of this epoch (all ranks) whose top-1 hit the target

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are evaluated, saved as ``model`` and exported: the EMA when it is on."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def extra_params(self) -> list[nn.Parameter]:
        """Trainable parameters outside the DDP wrapper: the term modules' (heads, connectors, ...)."""
        return [p for p in self.objective.parameters() if p.requires_grad]

    @property
    def trainable_params(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad] + self.extra_params

    def eval_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.eval_model.state_dict().items()}

    def train_state(self) -> dict[str, Any]:
        """Weights (``model``: the evaluated ones), optimiser, schedule, terms, and the raw weights and EMA
        when the EMA is on: plain containers and tensors only."""
        sd: dict[str, Any] = {
            "model": self.eval_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }
        if self.ema is not None:
            sd["train_model"] = self.model.state_dict()  # raw weights; "model" holds the EMA
            sd["ema"] = self.ema.state_dict()
        sd["objective"] = self.objective.state_dict()  # term modules by name (heads, connectors, banks)
        return sd

    def load_train_state(self, sd: dict[str, Any], path: Path, *, objective: dict[str, Any] | None = None,
                         whose: str = "its") -> None:
        """Inverse of :meth:`train_state`; ``objective`` replaces ``sd["objective"]`` (older checkpoints),
        ``whose`` names the network in the error when its terms' state does not fit."""
        self.model.load_state_dict(sd["train_model"] if "train_model" in sd else sd["model"])
        if self.ema is not None:
            if "ema" in sd:
                self.ema.load_state_dict(sd["ema"])
            else:
                self.ema.module.load_state_dict(sd["model"])
        state = sd.get("objective", {}) if objective is None else objective
        load_objective(self.objective, state, path, whose)
        self.optimizer.load_state_dict(sd["optimizer"])
        self.scheduler.load_state_dict(sd["scheduler"])

    def remove_taps(self) -> None:
        self.taps.remove()


def load_objective(objective: nn.Module, state: dict[str, Any], path: Path, whose: str = "its") -> None:
    """The term modules' state, or an error that names the checkpoint and the fix."""
    try:
        objective.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(
            f"cannot resume from {str(path)!r}: the state of {whose} loss terms does not fit this config's "
            f"terms ({exc}). Use a fresh out_dir or resume=no"
        ) from None


def create_network(
    cfg: Config, name: str, num_classes: int, in_chans: int, device: torch.device
) -> nn.Module:
    """``create_model(name)`` on ``device`` (channels-last when configured)."""
    from unikd.models import create_model

    model = create_model(name, num_classes=num_classes, **model_kwargs(in_chans)).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def build_parts(
    cfg: Config, info: DistInfo, model: nn.Module, objective: nn.Module, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, Any, Any, nn.Module]:
    """Optimiser over ``model`` and ``objective`` (the term modules' trainable state), schedule, EMA and the
    DDP / compile wrapper, from the config's ``optim``, ``sched``, ``ema_decay`` and ``compile`` keys."""
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
    if compile_mode(cfg) == "model":  # compile=step compiles the whole forward in the step instead
        ddp_model = torch.compile(ddp_model)
    return optimizer, scheduler, ema, ddp_model
