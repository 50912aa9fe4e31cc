"""On-policy / sequence-level batches in DistillationTrainer: the generated batch, its loss against TRL's
generalized JSD and a hand-written reverse KL, the step's token count, which batches generate."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from lm_support import DEVICE, args, llama
from on_policy_support import STOPS, generation, prompts

lm = pytest.importorskip("unikd.lm")
from unikd.lm.generation import row_seed, sample_completions  # noqa: E402
from unikd.lm.text_data import PadCollator  # noqa: E402

COLLATE = PadCollator(0)


def _trainer(tmp_path, loss="reverse_kl", *, data=None, hp=None, fused=True, seed=0, dtype=None, **kw):
    targs = kw.pop("targs", {})
    distill = {"ce_weight": 0.0, "generation": generation(), **kw}
    trainer = lm.DistillationTrainer(
        llama(seed=2).to(dtype),
        llama(hidden=24, seed=1).to(dtype),
        args(tmp_path, seed=seed, logging_steps=1, **targs),
        train_dataset=data if data is not None else prompts(16, completions=True),
        data_collator=COLLATE,
        distill=lm.DistillSettings(loss, hyperparameters=hp or {}, fused=fused, **distill),
    )
    in_order = torch.utils.data.SequentialSampler(trainer.train_dataset)
    trainer._get_train_sampler = lambda *a, **k: in_order
    return trainer


def _generated(trainer, rows, step=0):
    trainer.state.global_step = step
    batch = trainer._prepare_inputs(COLLATE(rows))
    return trainer.on_policy_batches(trainer, [batch])[0]


def _logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()


def test_generated_batch_is_the_prompt_then_the_students_completion(tmp_path):
    trainer = _trainer(tmp_path, on_policy=1.0)
    rows = prompts(6, completions=True)
    batch = _generated(trainer, rows)
    seeds = [row_seed(0, 0, i, "student") for i in range(6)]
    asked = [r["input_ids"][:-4].tolist() for r in rows]
    want = sample_completions(
        trainer.model, asked, seeds, trainer.distill.generation, vocab=96, eos=STOPS, pad=0, context=16
    )
    ids, labels, mask = (batch[k].cpu() for k in ("input_ids", "labels", "attention_mask"))
    for i, (p, c) in enumerate(zip(asked, want)):
        n = len(p) + len(c)
        assert ids[i, :n].tolist() == p + c and mask[i].sum() == n
        assert (labels[i, : len(p)] == -100).all() and (labels[i, n:] == -100).all()
        assert labels[i, len(p) : n].tolist() == c
        assert c[-1] in STOPS or len(c) == 8
    assert {len(c) for c in want} != {8}  # some completions ended early: the rows differ in length


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_loss_on_a_generated_batch_equals_trls_generalized_jsd(tmp_path, beta, fused):
    """TRL 1.16.0 (PyPI), trl/experimental/gkd/gkd_trainer.py: GKDTrainer.generalized_jsd_loss(
    student_logits, teacher_logits, labels=None, beta=0.5, temperature=1.0, reduction='batchmean',
    num_items_in_batch=None), on the shifted logits and labels as GKDTrainer.compute_loss calls it."""
    gkd = pytest.importorskip("trl.experimental.gkd")
    # float64 models: the comparison is not blurred by float32 rounding of a small divergence
    trainer = _trainer(tmp_path, "jsd", hp={"beta": beta}, fused=fused, on_policy=1.0, dtype=torch.float64)
    batch = _generated(trainer, prompts(6, completions=True))
    trainer.model.train()
    mine = trainer.compute_loss(trainer.model, dict(batch))
    s, t = _logits(trainer.model, batch), _logits(trainer.teacher, batch)
    ref = gkd.GKDTrainer.generalized_jsd_loss(s[:, :-1], t[:, :-1], batch["labels"][:, 1:], beta=beta)
    torch.testing.assert_close(mine, ref, rtol=1e-9, atol=1e-12)


def test_reverse_kl_on_a_generated_batch_by_hand(tmp_path):
    trainer = _trainer(tmp_path, "reverse_kl", on_policy=1.0, ce_weight=0.4, dtype=torch.float64)
    batch = _generated(trainer, prompts(6, completions=True))
    trainer.model.train()
    mine = trainer.compute_loss(trainer.model, dict(batch))
    s, t = _logits(trainer.model, batch)[:, :-1], _logits(trainer.teacher, batch)[:, :-1]
    y = batch["labels"][:, 1:]
    keep = y != -100
    log_s, log_t = F.log_softmax(s, -1), F.log_softmax(t, -1)
    kl = (log_s.exp() * (log_s - log_t)).sum(-1)[keep].mean()
    ce = -log_s.gather(-1, y.clamp_min(0).unsqueeze(-1)).squeeze(-1)[keep].mean()
    torch.testing.assert_close(mine, 0.4 * ce + kl, rtol=1e-9, atol=1e-12)


def test_the_steps_token_count_is_the_generated_batchs(tmp_path):
    """Two accumulated micro-batches of prompts with 4-token dataset completions: the count and the logged
    loss come from the generated completions (unequal lengths), not from the dataset's batch."""
    data = prompts(8, completions=True)
    acc = {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2, "max_steps": 1, "optim": "sgd"}
    trainer = _trainer(tmp_path, on_policy=1.0, data=data, targs=acc)
    micro = [trainer._prepare_inputs(COLLATE(data[i : i + 4])) for i in (0, 4)]
    batches, count = trainer.get_batch_samples(iter(micro), 2, torch.device(DEVICE))
    kept = [int((b["labels"][:, 1:] != -100).sum()) for b in batches]
    assert int(count) == sum(kept) and sum(kept) != 8 * 4 and kept[0] != kept[1]

    trainer = _trainer(tmp_path, on_policy=1.0, data=data, targs=acc)
    trainer.model.train()
    means = [float(trainer.compute_loss(trainer.model, dict(b)).detach()) for b in batches]
    want = sum(m * k for m, k in zip(means, kept)) / sum(kept)
    trainer.train()
    logged = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    assert logged[0] == pytest.approx(want, rel=1e-5)


def test_which_batches_generate_is_fixed_by_the_seed_and_step(tmp_path):
    trainer = _trainer(tmp_path, on_policy=0.3, seq_kd=0.2)
    grid = [(s, m) for s in range(200) for m in range(4)]
    torch.manual_seed(5)
    random.seed(5)
    roles = [trainer.on_policy_batches.role(s, m) for s, m in grid]
    torch.manual_seed(6)
    random.seed(6)
    assert [trainer.on_policy_batches.role(s, m) for s, m in grid] == roles
    assert roles.count("student") / len(grid) == pytest.approx(0.3, abs=0.05)
    assert roles.count("teacher") / len(grid) == pytest.approx(0.2, abs=0.05)
    other = _trainer(tmp_path, on_policy=0.3, seq_kd=0.2, seed=1).on_policy_batches
    assert [other.role(s, m) for s, m in grid] != roles
    only = _trainer(tmp_path, seq_kd=1.0).on_policy_batches
    assert {only.role(s, m) for s, m in grid} == {"teacher"}


def test_sequence_level_kd_samples_from_the_teacher(tmp_path):
    trainer = _trainer(tmp_path, seq_kd=1.0)
    rows = prompts(6)
    batch = _generated(trainer, rows, step=3)
    asked = [r["input_ids"].tolist() for r in rows]
    seeds = [row_seed(0, 3, i, "teacher") for i in range(6)]
    want = sample_completions(
        trainer.teacher, asked, seeds, trainer.distill.generation, vocab=96, eos=STOPS, pad=0, context=16
    )
    got = [
        batch["input_ids"][i, len(p) : len(p) + len(c)].tolist() for i, (p, c) in enumerate(zip(asked, want))
    ]
    assert got == want


def test_the_same_step_samples_the_same_completions(tmp_path):
    rows = prompts(6)
    a = _generated(_trainer(tmp_path, on_policy=1.0), rows, step=2)
    b = _generated(_trainer(tmp_path, on_policy=1.0), rows, step=2)
    assert torch.equal(a["input_ids"], b["input_ids"])
    c = _generated(_trainer(tmp_path, on_policy=1.0), rows, step=3)
    d = _generated(_trainer(tmp_path, on_policy=1.0, seed=1), rows, step=2)
    assert not torch.equal(a["input_ids"], c["input_ids"]) and not torch.equal(a["input_ids"], d["input_ids"])
