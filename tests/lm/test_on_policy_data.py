"""On-policy training from text prompt datasets (TRL's ``prompt`` and chat ``messages`` formats), packed
text with ``prompt_length``, the data errors, and a resumed run sampling what the uninterrupted one did."""

from __future__ import annotations

import math

import pytest
import torch
from lm_support import args, examples, llama
from on_policy_support import generation, prompts, tokenizer, words

lm = pytest.importorskip("unikd.lm")
datasets = pytest.importorskip("datasets")
from unikd.lm.prompt_data import PromptCollator  # noqa: E402
from unikd.lm.text_data import PadCollator  # noqa: E402


def _rows(n=8, *, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randint(11, 96, (2 + i % 3,), generator=g).tolist(),
            torch.randint(11, 96, (3,), generator=g).tolist(),
        )
        for i in range(n)
    ]


def _train(tmp_path, data, steps=2, **distill):
    trainer = lm.DistillationTrainer(
        llama(seed=2),
        llama(hidden=24, seed=1),
        args(tmp_path, max_steps=steps, logging_steps=1, per_device_train_batch_size=2),
        train_dataset=data,
        processing_class=tokenizer(),
        distill=lm.DistillSettings("reverse_kl", ce_weight=0.0, generation=generation(), **distill),
    )
    trainer.train()
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    assert len(losses) == steps and all(math.isfinite(x) for x in losses)
    return trainer


@pytest.mark.parametrize("container", ["list", "datasets"])
def test_a_prompt_column_dataset_trains_on_policy(tmp_path, container):
    rows = [{"prompt": words(p)} for p, _ in _rows()]
    data = rows if container == "list" else datasets.Dataset.from_list(rows)
    trainer = _train(tmp_path, data, on_policy=1.0)
    stats = trainer.on_policy_batches.stats
    assert stats["student"] == 2 and stats["data"] == 0 and stats["generated_tokens"] > 0
    assert isinstance(trainer.data_collator, PromptCollator) and trainer.args.remove_unused_columns is False


def test_prompt_only_rows_need_every_batch_generated(tmp_path):
    rows = [{"prompt": words(p)} for p, _ in _rows()]
    with pytest.raises(ValueError, match="prompts without completions"):
        _train(tmp_path, rows, on_policy=0.5)


def test_text_prompts_need_a_tokenizer(tmp_path):
    with pytest.raises(ValueError, match="pass the tokenizer"):
        lm.DistillationTrainer(
            llama(seed=2),
            llama(hidden=24, seed=1),
            args(tmp_path),
            train_dataset=[{"prompt": "t11 t12"}],
            distill=lm.DistillSettings("kd", on_policy=1.0),
        )


def test_chat_messages_are_rendered_with_the_template_and_the_reply_masked():
    tok = tokenizer()
    (p, c), (q, _) = _rows(2)
    rows = [
        {"messages": [{"role": "user", "content": words(p)}, {"role": "assistant", "content": words(c)}]},
        {"messages": [{"role": "user", "content": words(q)}]},  # TRL's prompt-only conversation
    ]
    batch = PromptCollator(tok)(rows)
    # template: "t4 <user> t5 <assistant> "; the prompt ends with the generation prompt t5; t1 ends the reply
    assert batch["prompt_input_ids"][0, : len(p) + 2].tolist() == [4, *p, 5]
    assert batch["prompt_input_ids"][1, : len(q) + 2].tolist() == [4, *q, 5]
    n = len(p) + 2 + len(c) + 1
    assert batch["input_ids"][0, :n].tolist() == [4, *p, 5, *c, 1]
    assert batch["labels"][0, :n].tolist() == [-100] * (len(p) + 2) + [*c, 1]
    assert (batch["labels"][1] == -100).all()


def test_a_messages_dataset_mixes_sampled_and_dataset_batches(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": words(p)}, {"role": "assistant", "content": words(c)}]}
        for p, c in _rows(16)
    ]
    trainer = _train(tmp_path, datasets.Dataset.from_list(rows), steps=6, on_policy=0.5)
    stats = trainer.on_policy_batches.stats
    assert stats["student"] > 0 and stats["data"] > 0 and stats["student"] + stats["data"] == 6


def test_packed_text_needs_a_prompt_length(tmp_path):
    trainer = lm.DistillationTrainer(
        llama(seed=2),
        llama(hidden=24, seed=1),
        args(tmp_path, max_steps=1),
        train_dataset=examples(8),
        distill=lm.DistillSettings("kd", on_policy=1.0),
    )
    with pytest.raises(ValueError, match="has no prompt.*prompt_length"):
        trainer.train()
    trainer = lm.DistillationTrainer(
        llama(seed=2),
        llama(hidden=24, seed=1),
        args(tmp_path, max_steps=1, per_device_train_batch_size=2),
        train_dataset=examples(8),
        distill=lm.DistillSettings("kd", on_policy=1.0, generation=generation(prompt_length=5)),
    )
    trainer.state.global_step = 0
    batch = trainer.on_policy_batches(trainer, [trainer.data_collator(examples(2))])[0]
    assert (batch["labels"][:, :5] == -100).all() and batch["input_ids"][:, :5].tolist() == [
        e["input_ids"][:5].tolist() for e in examples(2)
    ]


def test_a_resumed_run_samples_what_the_uninterrupted_run_sampled(tmp_path):
    data = prompts(24)

    def trainer(out):
        t = lm.DistillationTrainer(
            llama(seed=2),
            llama(hidden=24, seed=1),
            args(
                tmp_path,
                output_dir=str(out),
                max_steps=4,
                save_strategy="steps",
                save_steps=2,
                logging_steps=1,
            ),
            train_dataset=data,
            data_collator=PadCollator(0),
            distill=lm.DistillSettings("reverse_kl", on_policy=0.5, seq_kd=0.5, generation=generation()),
        )
        in_order = torch.utils.data.SequentialSampler(t.train_dataset)
        t._get_train_sampler = lambda *a, **k: in_order
        return t

    full = trainer(tmp_path / "full")
    full.train()
    resumed = trainer(tmp_path / "resumed")
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))
    loss = {r["step"]: r["loss"] for r in full.state.log_history if "loss" in r}
    again = {r["step"]: r["loss"] for r in resumed.state.log_history if "loss" in r}
    assert again[3] == pytest.approx(loss[3], rel=1e-6) and again[4] == pytest.approx(loss[4], rel=1e-6)
    for (n, a), b in zip(full.model.named_parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=n)
