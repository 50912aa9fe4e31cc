"""One DistillationTrainer run on examples with unequal kept-token counts; rank 0 writes its loss history
and final weights to OUT. Launched by tests/lm/test_trainer.py, alone and under torchrun (gloo)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lm_support import args, examples, llama  # noqa: E402

import unikd.lm as lm  # noqa: E402


def masked_examples(n: int = 16) -> list[dict]:
    # unequal kept-token counts: example i has its first (i * 5) % 13 labels ignored
    out = examples(n)
    for i, e in enumerate(out):
        e["labels"][: (i * 5) % 13] = -100
    return out


class InOrder(lm.DistillationTrainer):
    def _get_train_sampler(self, *a, **k):  # the same global batches for any number of processes
        return torch.utils.data.SequentialSampler(self.train_dataset)


def run(out: Path, batch: int, accumulation: int, loss: str = "kd") -> None:
    trainer = InOrder(
        llama(seed=2),
        llama(hidden=24, seed=1),
        # SGD: Adam's normalisation would magnify rounding differences into visible weight differences
        args(out, per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation, max_steps=2,
             logging_steps=1, learning_rate=0.5, optim="sgd",
             ddp_backend="gloo" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None),
        train_dataset=masked_examples(),
        distill=lm.DistillSettings(loss, ce_weight=0.5),
    )
    trainer.train()
    if trainer.is_world_process_zero():
        losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
        out.mkdir(parents=True, exist_ok=True)
        torch.save({n: p.detach().cpu() for n, p in trainer.model.named_parameters()}, out / "weights.pt")
        (out / "losses.json").write_text(json.dumps(losses))


if __name__ == "__main__":
    run(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
