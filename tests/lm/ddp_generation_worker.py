"""One on-policy / sequence-level DistillationTrainer run on prompts of unequal lengths; rank 0 writes its
loss history, final weights and generation counts to OUT. Launched by tests/lm/test_on_policy_ddp.py,
alone and under torchrun (gloo)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lm_support import args, llama  # noqa: E402
from on_policy_support import generation, prompts  # noqa: E402

import unikd.lm as lm  # noqa: E402
from unikd.lm.text_data import PadCollator  # noqa: E402


class InOrder(lm.DistillationTrainer):
    def _get_train_sampler(self, *a, **k):  # the same global batches for any number of processes
        return torch.utils.data.SequentialSampler(self.train_dataset)


def run(out: Path, batch: int, accumulation: int) -> None:
    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    trainer = InOrder(
        llama(seed=2),
        llama(hidden=24, seed=1),
        args(
            out,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=accumulation,
            max_steps=3,
            logging_steps=1,
            learning_rate=0.5,
            optim="sgd",
            ddp_backend="gloo" if ddp else None,
        ),
        train_dataset=prompts(24, completions=True),
        data_collator=PadCollator(0),
        distill=lm.DistillSettings(
            "reverse_kl", ce_weight=0.5, on_policy=0.4, seq_kd=0.4, generation=generation()
        ),
    )
    trainer.train()
    stats = trainer.on_policy_batches.stats
    counts = torch.tensor([stats["student"], stats["teacher"], stats["data"], stats["generated_tokens"]])
    if ddp:  # every process's share of the generated tokens
        torch.distributed.all_reduce(counts)
    if trainer.is_world_process_zero():
        losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
        out.mkdir(parents=True, exist_ok=True)
        torch.save({n: p.detach().cpu() for n, p in trainer.model.named_parameters()}, out / "weights.pt")
        (out / "result.json").write_text(json.dumps({"losses": losses, "counts": counts.tolist()}))


if __name__ == "__main__":
    run(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
