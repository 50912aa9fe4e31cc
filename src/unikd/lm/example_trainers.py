"""The Trainers and arguments of ``unikd lm-distill``'s stages: blocks read in their seeded order, one
``TrainingArguments`` recipe for the teacher and the students, and the logged loss curve kept per run."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ._require import require
from .corpus import Blocks
from .example_common import world
from .example_config import CROSS_METHODS, METHODS, LMExampleConfig
from .trainer import DistillationTrainer

transformers = require("transformers")

__all__ = ["OrderedDistillationTrainer", "OrderedTrainer", "curve", "seeded_blocks", "training_args"]


class _InOrder:
    """Reads the training set sequentially: :class:`Blocks` already holds the seeded order."""

    def _get_train_sampler(self, train_dataset=None):  # noqa: ANN001 - Trainer's signature
        return torch.utils.data.SequentialSampler(
            self.train_dataset if train_dataset is None else train_dataset
        )


class OrderedTrainer(_InOrder, transformers.Trainer):
    pass


class OrderedDistillationTrainer(_InOrder, DistillationTrainer):
    pass


def training_args(cfg: LMExampleConfig, run_dir: Path, *, steps: int, lr: float, seed: int):
    rank, size = world()
    if cfg.batch_size % size:
        raise ValueError(f"batch_size={cfg.batch_size} must be divisible by the {size} processes")
    cuda = torch.cuda.is_available()
    return transformers.TrainingArguments(
        output_dir=str(run_dir / "trainer"),
        per_device_train_batch_size=cfg.batch_size // size,
        max_steps=steps,
        learning_rate=lr,
        lr_scheduler_type="cosine",
        warmup_steps=int(cfg.warmup_ratio * steps),
        weight_decay=cfg.weight_decay,
        logging_steps=cfg.log_steps,
        save_strategy="no",
        report_to=[],
        seed=seed,
        use_cpu=not cuda,
        ddp_backend=None if cuda or size == 1 else "gloo",
        dataloader_num_workers=0,
        disable_tqdm=True,
        log_level="warning",
    )


def seeded_blocks(
    cfg: LMExampleConfig, blocks: torch.Tensor, steps: int, seed: int, index_key: str | None = None
) -> Blocks:
    epochs = max(1, math.ceil(steps * cfg.batch_size / blocks.shape[0]))
    return Blocks(blocks, seed=seed, epochs=epochs, index_key=index_key)


def curve(trainer) -> list[dict[str, float]]:
    keep = ("step", "loss", *METHODS, "taid_t", *CROSS_METHODS[1:])  # METHODS holds "ce" and every term
    return [{k: v for k, v in row.items() if k in keep} for row in trainer.state.log_history if "loss" in row]
