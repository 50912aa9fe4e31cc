"""The loop's own progress state (epoch, position, best, history, running sums): resumable and plain."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class TrainState:
    """Where the loop is. ``epoch`` is the 0-based index of the current epoch (the number of finished epochs
    when ``position`` is 0); ``position`` counts the finished steps of that epoch."""

    epoch: int = 0
    position: int = 0
    global_step: int = 0
    saved_step: int = 0
    best_top1: float | None = None
    best_epoch: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    # running sums of the current epoch (so a mid-epoch resume logs the same epoch means)
    epoch_sums: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))
    epoch_steps: int = 0
    epoch_images: int = 0
    epoch_correct: int = 0
    epoch_train_seconds: float = 0.0
    wall_seconds: float = 0.0
    last_lr: float | None = None  # lr of the latest step (logged per epoch)

    def reset_epoch(self, n_terms: int) -> None:
        self.epoch_sums = torch.zeros(n_terms, dtype=torch.float64)
        self.epoch_steps = 0
        self.epoch_images = 0
        self.epoch_correct = 0
        self.epoch_train_seconds = 0.0

    def state_dict(self) -> dict[str, Any]:
        """Plain containers and tensors only (``weights_only=True`` loadable)."""
        return {
            "epoch": self.epoch,
            "position": self.position,
            "global_step": self.global_step,
            "best_top1": self.best_top1,
            "best_epoch": self.best_epoch,
            "history": [dict(r) for r in self.history],
            "epoch_sums": self.epoch_sums.clone(),
            "epoch_steps": self.epoch_steps,
            "epoch_images": self.epoch_images,
            "epoch_correct": self.epoch_correct,
            "epoch_train_seconds": self.epoch_train_seconds,
            "wall_seconds": self.wall_seconds,
            "last_lr": self.last_lr,
        }

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.epoch = int(sd["epoch"])
        self.position = int(sd["position"])
        self.global_step = self.saved_step = int(sd["global_step"])
        self.best_top1 = sd["best_top1"]
        self.best_epoch = sd["best_epoch"]
        self.history = [dict(r) for r in sd["history"]]
        self.epoch_sums = sd["epoch_sums"].clone().to(torch.float64)
        self.epoch_steps = int(sd["epoch_steps"])
        self.epoch_images = int(sd["epoch_images"])
        self.epoch_correct = int(sd.get("epoch_correct", 0))  # absent in checkpoints of older versions
        self.epoch_train_seconds = float(sd["epoch_train_seconds"])
        self.wall_seconds = float(sd["wall_seconds"])
        self.last_lr = sd.get("last_lr")
