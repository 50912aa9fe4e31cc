"""Exponential moving average of model weights (Polyak averaging), as used by timm and YOLO trainers."""

from __future__ import annotations

import copy

import torch
from torch import nn


def _unwrap(model: nn.Module) -> nn.Module:
    """The wrapped module of DDP / torch.compile wrappers, so EMA keys match the bare model."""
    model = getattr(model, "_orig_mod", model)
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class ModelEMA:
    """Keep ``ema = decay * ema + (1 - decay) * weights`` after every optimiser step.

    Floating-point parameters and buffers are averaged; integer buffers (e.g. BatchNorm's
    ``num_batches_tracked``) are copied. ``.module`` is an eval-mode, no-grad copy of the model that is
    evaluated and exported in place of the raw weights.

    Args:
        model: the model to track (DDP / compiled wrappers are unwrapped).
        decay: in [0, 1); e.g. 0.9998. ``0`` makes the EMA a copy of the latest weights.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        decay = float(decay)
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) (e.g. 0.9998) or null to disable EMA, got {decay}")
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(_unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current weights of ``model`` into the average (call after ``optimizer.step()``)."""
        src = _unwrap(model).state_dict()
        dst = self.module.state_dict()
        if src.keys() != dst.keys():
            raise ValueError("ModelEMA.update got a model whose state_dict keys differ from the tracked one")
        self.updates += 1
        for key, ema_t in dst.items():
            new = src[key].detach()
            if ema_t.dtype.is_floating_point:
                ema_t.lerp_(new.to(ema_t.dtype), 1.0 - self.decay)
            else:
                ema_t.copy_(new)

    def state_dict(self) -> dict:
        """``{"module": weights, "decay": float, "updates": int}``; loadable with ``weights_only=True``."""
        return {"module": self.module.state_dict(), "decay": self.decay, "updates": self.updates}

    def load_state_dict(self, sd: dict) -> None:
        """Restore the averaged weights and counter (the decay of the current config is kept)."""
        if not isinstance(sd, dict) or "module" not in sd:
            raise ValueError("ModelEMA.load_state_dict expects the dict returned by ModelEMA.state_dict()")
        self.module.load_state_dict(sd["module"])
        self.updates = int(sd.get("updates", 0))
