"""docs/lm.md's TRL recipe: DistillationMixin on TRL's SFTTrainer (runs where trl is installed)."""

from __future__ import annotations

import pytest
import torch
from lm_support import VOCAB, args, llama, transformers

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")
lm = pytest.importorskip("unikd.lm")


def _tokenizer():
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {f"t{i}": i for i in range(VOCAB)}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="t1"))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="t0", eos_token="t0")


class SFTDistillTrainer(lm.DistillationMixin, trl.SFTTrainer):
    pass


def test_sft_trainer_with_distillation(tmp_path):
    g = torch.Generator().manual_seed(0)
    # pre-tokenized rows, prompt tokens masked by SFT's completion_mask
    rows = [
        {
            "prompt_ids": torch.randint(1, VOCAB, (4,), generator=g).tolist(),
            "completion_ids": torch.randint(1, VOCAB, (8,), generator=g).tolist(),
        }
        for _ in range(16)
    ]
    ds = datasets.Dataset.from_list(
        [
            {"input_ids": r["prompt_ids"] + r["completion_ids"], "completion_mask": [0] * 4 + [1] * 8}
            for r in rows
        ]
    )
    base = args(tmp_path).to_dict()
    cfg = trl.SFTConfig(
        **{
            k: base[k]
            for k in (
                "output_dir",
                "per_device_train_batch_size",
                "max_steps",
                "logging_steps",
                "report_to",
                "save_strategy",
                "use_cpu",
                "learning_rate",
                "seed",
            )
        },
        max_length=16,
        completion_only_loss=True,
    )
    student, teacher = llama(seed=2), llama(hidden=24, seed=1)
    trainer = SFTDistillTrainer(model=student, args=cfg, train_dataset=ds, processing_class=_tokenizer())
    with pytest.raises(RuntimeError, match="setup_distillation"):
        trainer.compute_loss(
            student, trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])
        )
    trainer.setup_distillation(teacher, lm.DistillSettings("reverse_kl"))
    batch = trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])
    assert (batch["labels"][:, :4] == -100).all()  # SFT masked the prompt
    trainer.train()
    logged = [row for row in trainer.state.log_history if "loss" in row]
    assert logged and {"ce", "reverse_kl"} <= logged[0].keys()
    assert all(not p.requires_grad for p in trainer.teacher.parameters())
