"""DistillationTrainer from a sparse-teacher cache: the live teacher's loss when the cache is exact,
token-exact gradient accumulation, resume, evaluation terms, and the checks on bad input."""

from __future__ import annotations

import math

import pytest
import torch
from cache_support import build_cache
from ddp_token_worker import masked_examples
from lm_support import VOCAB, args, examples, llama

lm = pytest.importorskip("unikd.lm")


class InOrder(lm.DistillationTrainer):
    def _get_train_sampler(self, *a, **k):
        return torch.utils.data.SequentialSampler(self.train_dataset)


def _run(tmp_path, name, teacher, data, distill, *, cache=None, **kw):
    base = dict(max_steps=3, logging_steps=1, learning_rate=0.5, optim="sgd")
    base.update(kw)
    trainer = InOrder(
        llama(seed=2),
        None if cache is not None else teacher,
        args(tmp_path / name, output_dir=str(tmp_path / name), **base),
        train_dataset=data,
        distill=distill,
        sparse_teacher=cache,
    )
    trainer.train()
    rows = [r for r in trainer.state.log_history if "loss" in r]
    return trainer, rows


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("loss", ["kd", "reverse_kl", "dkd"])
def test_an_exact_cache_trains_as_the_live_teacher(loss, fused, tmp_path):
    """k = V - 1 (the tail bucket is the one token left out): the same logged loss, terms and weights."""
    teacher, data = llama(hidden=24, seed=1), examples(12)
    cache = build_cache(tmp_path / "cache", teacher, data)
    distill = lm.DistillSettings(loss, ce_weight=0.5, fused=fused)
    live, live_rows = _run(tmp_path, "live", teacher, data, distill)
    cached, cached_rows = _run(tmp_path, "cached", None, data, distill, cache=cache)
    assert cached.teacher is None
    for a, b in zip(live_rows, cached_rows):
        for key in ("loss", "ce", loss):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    for (n, p), q in zip(live.model.named_parameters(), cached.model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-6, msg=n)


def test_a_small_k_cache_is_a_different_teacher(tmp_path):
    """The equality above is not trivial: k = 4 gives another KD term."""
    teacher, data = llama(hidden=24, seed=1), examples(8)
    distill = lm.DistillSettings("kd")
    _, live = _run(tmp_path, "live", teacher, data, distill, max_steps=1)
    _, small = _run(
        tmp_path,
        "small",
        None,
        data,
        distill,
        max_steps=1,
        cache=build_cache(tmp_path / "c4", teacher, data, k=4),
    )
    assert small[0]["kd"] < 0.9 * live[0]["kd"]  # merging outcomes lowers the KL
    assert small[0]["ce"] == pytest.approx(live[0]["ce"], rel=1e-6)


def test_gradient_accumulation_is_token_exact_with_a_cache(tmp_path):
    """Unequal kept-token counts per micro-batch: 4 x 2 accumulated equals 1 x 8 (loss and weights)."""
    teacher, data = llama(hidden=24, seed=1), masked_examples()
    cache = build_cache(tmp_path / "cache", teacher, data, k=8)
    distill = lm.DistillSettings("kd", ce_weight=0.5)
    one, rows_one = _run(
        tmp_path, "one", None, data, distill, cache=cache, max_steps=2, per_device_train_batch_size=8
    )
    acc, rows_acc = _run(
        tmp_path,
        "acc",
        None,
        data,
        distill,
        cache=cache,
        max_steps=2,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=4,
    )
    assert [r["loss"] for r in rows_acc] == pytest.approx([r["loss"] for r in rows_one], rel=1e-5)
    for (n, p), q in zip(one.model.named_parameters(), acc.model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-6, msg=n)


def test_a_resumed_run_reads_the_same_teacher_rows(tmp_path):
    teacher, data = llama(hidden=24, seed=1), examples(24)
    cache = build_cache(tmp_path / "cache", teacher, data, k=8)
    distill = lm.DistillSettings("kd")
    shuffled = dict(max_steps=6, save_strategy="steps", save_steps=3, learning_rate=1e-2, optim="adamw_torch")

    def trainer(name):  # the Trainer's own shuffled sampler: the resumed run must skip to the same batches
        return lm.DistillationTrainer(
            llama(seed=2),
            None,
            args(tmp_path, output_dir=str(tmp_path / name), logging_steps=1, **shuffled),
            train_dataset=data,
            distill=distill,
            sparse_teacher=cache,
        )

    full = trainer("full")
    full.train()
    resumed = trainer("resumed")
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-3"))
    tail = [r["kd"] for r in full.state.log_history if "kd" in r][3:]
    assert [r["kd"] for r in resumed.state.log_history if "kd" in r][-3:] == pytest.approx(tail, rel=1e-5)
    for (n, p), q in zip(full.model.named_parameters(), resumed.model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-6, msg=n)


def test_evaluate_logs_the_terms_from_the_eval_cache(tmp_path):
    teacher, train, held = llama(hidden=24, seed=1), examples(8), examples(6, seed=5)
    trainer = lm.DistillationTrainer(
        llama(seed=2),
        None,
        args(tmp_path),
        train_dataset=train,
        eval_dataset=held,
        distill=lm.DistillSettings("kd", ce_weight=0.5, weight=2.0),
        sparse_teacher=build_cache(tmp_path / "train", teacher, train),
        eval_sparse_teacher=build_cache(tmp_path / "held", teacher, held),
    )
    metrics = trainer.evaluate()
    assert metrics["eval_loss"] == pytest.approx(
        0.5 * metrics["eval_ce"] + 2.0 * metrics["eval_kd"], rel=1e-5
    )
    live = lm.DistillationTrainer(
        llama(seed=2),
        teacher,
        args(tmp_path),
        train_dataset=train,
        eval_dataset=held,
        distill=lm.DistillSettings("kd", ce_weight=0.5, weight=2.0),
    ).evaluate()
    for key in ("eval_loss", "eval_ce", "eval_kd"):
        assert metrics[key] == pytest.approx(live[key], rel=1e-4), key


def test_a_cache_index_column(tmp_path):
    """teacher_index=<column>: the rows come from the column, not the positions (here: reversed)."""
    teacher, data = llama(hidden=24, seed=1), examples(8)
    cache = build_cache(tmp_path / "cache", teacher, data)
    flipped = [{**data[7 - i], "row": 7 - i} for i in range(8)]
    trainer = lm.DistillationTrainer(
        llama(seed=2),
        None,
        args(tmp_path, max_steps=1),
        train_dataset=flipped,
        distill=lm.DistillSettings("kd"),
        sparse_teacher=cache,
        teacher_index="row",
    )
    trainer.train()
    with pytest.raises(ValueError, match=r"train_dataset\[0\] does not match .* token 0"):
        lm.DistillationTrainer(
            llama(seed=2),
            None,
            args(tmp_path),
            train_dataset=flipped,
            distill=lm.DistillSettings("kd"),
            sparse_teacher=cache,
        )


# ------------------------------------------------------------------------------------------ bad input
def _make(tmp_path, data, cache, **kw):
    return lm.DistillationTrainer(
        llama(seed=2),
        None,
        args(tmp_path),
        train_dataset=data,
        distill=lm.DistillSettings(kw.pop("loss", "kd"), **kw),
        sparse_teacher=cache,
    )


def test_bad_caches_are_refused_before_training(tmp_path):
    teacher, data = llama(hidden=24, seed=1), examples(8)
    cache = build_cache(tmp_path / "cache", teacher, data, k=8)
    other_vocab = lm.DistillationTrainer  # a student scoring another vocabulary
    with pytest.raises(ValueError, match="vocab"):
        other_vocab(
            llama(seed=2, vocab=VOCAB + 8),
            None,
            args(tmp_path),
            train_dataset=data,
            distill=lm.DistillSettings("kd"),
            sparse_teacher=cache,
        )
    changed = [dict(e) for e in data]
    changed[3] = {"input_ids": data[3]["input_ids"].roll(1), "labels": data[3]["labels"].roll(1)}
    with pytest.raises(ValueError, match=r"train_dataset\[3\] does not match .* computed on"):
        _make(tmp_path, changed, cache)
    with pytest.raises(ValueError, match="outside the cache"):
        _make(tmp_path, examples(9), cache)
    short = [{k: v[:10] for k, v in e.items()} for e in data]
    with pytest.raises(ValueError, match="has 10 tokens but cache row 0 was computed on 16"):
        _make(tmp_path, short, cache)
    with pytest.raises(ValueError, match="exactly one"):
        lm.DistillationTrainer(
            llama(seed=2), teacher, args(tmp_path), train_dataset=data, sparse_teacher=cache
        )
    for fractions in ({"on_policy": 1.0}, {"seq_kd": 0.25}):  # sampled tokens have no cached rows
        with pytest.raises(ValueError, match="no rows for"):
            _make(tmp_path, data, cache, **fractions)
    (cache / "input_ids.json").unlink()
    with pytest.raises(ValueError, match="write_cache_token_ids"):
        _make(tmp_path, data, cache)


def test_a_batch_that_does_not_match_its_rows_fails(tmp_path):
    """The per-batch checks (the constructor's scan only reads the first examples)."""
    teacher, data = llama(hidden=24, seed=1), examples(4)
    trainer = _make(tmp_path, data, build_cache(tmp_path / "cache", teacher, data, k=8))
    batch = next(iter(trainer.get_train_dataloader()))
    cached, targets = trainer._cached, lm.trainer.next_token_labels(batch["labels"])
    wrong = dict(batch, input_ids=batch["input_ids"].flip(0))
    with pytest.raises(ValueError, match="has token .* at position 0 but the cache was computed on"):
        cached.batch(batch["teacher_index"], wrong, targets, -100)
    long = {"input_ids": torch.zeros(4, 17, dtype=torch.long)}
    with pytest.raises(ValueError, match="17 positions"):
        cached.batch(batch["teacher_index"], long, targets, -100)
    assert math.isfinite(trainer.compute_loss(trainer.model, batch).item())
