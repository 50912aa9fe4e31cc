"""DistillationTrainer: the fused path equals the logits path, terms are logged, the teacher stays frozen."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lm_support import DEVICE, args, examples, gpt2, llama

lm = pytest.importorskip("unikd.lm")
SRC = Path(__file__).resolve().parents[2] / "src"
WORKER = Path(__file__).resolve().parent / "ddp_token_worker.py"


def _one_step_grads(make_student, teacher, loss, fused, tmp_path, **hp):
    student = make_student()
    trainer = lm.DistillationTrainer(
        student,
        teacher,
        args(tmp_path),
        train_dataset=examples(8),
        distill=lm.DistillSettings(loss, fused=fused, hyperparameters=hp, ce_weight=0.7, weight=1.3),
    )
    batch = trainer._prepare_inputs(trainer.data_collator(examples(4, seed=3)))  # onto the Trainer's device
    student.train()
    value = trainer.compute_loss(student, batch)
    value.backward()
    return value.detach(), {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("loss", ["kd", "reverse_kl", "jsd", "dkd", "nkd", "taid"])
def test_fused_equals_logits_path(family, loss, tmp_path):
    make = llama if family == "llama" else gpt2
    teacher = make(hidden=24, layers=2, seed=1)
    hp = {"temperature": 2.0} if loss in ("kd", "nkd") else {}
    v_f, g_f = _one_step_grads(lambda: make(seed=2), teacher, loss, True, tmp_path, **hp)
    v_l, g_l = _one_step_grads(lambda: make(seed=2), teacher, loss, False, tmp_path, **hp)
    assert math.isfinite(v_f.item())
    torch.testing.assert_close(v_f, v_l, rtol=1e-5, atol=1e-6)
    assert g_f.keys() == g_l.keys() and len(g_f) > 3
    for name in g_f:
        torch.testing.assert_close(g_f[name], g_l[name], rtol=1e-4, atol=1e-6, msg=name)


def test_terms_logged_by_name_and_teacher_frozen(tmp_path):
    teacher = llama(hidden=24, layers=2, seed=1)
    before = {n: p.clone() for n, p in teacher.named_parameters()}
    trainer = lm.DistillationTrainer(
        llama(seed=2),
        teacher,
        args(tmp_path),
        train_dataset=examples(16),
        distill=lm.DistillSettings("reverse_kl"),
    )
    trainer.train()
    logged = [row for row in trainer.state.log_history if "loss" in row]
    assert len(logged) == 2
    for row in logged:
        assert {"ce", "reverse_kl"} <= row.keys()
        # the logged loss is ce_weight * ce + weight * term, averaged over the same steps
        assert row["loss"] == pytest.approx(row["ce"] + row["reverse_kl"], rel=1e-3)
    assert not trainer.teacher.training
    assert all(not p.requires_grad for p in trainer.teacher.parameters())
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in teacher.parameters()}
    for n, p in teacher.named_parameters():
        assert torch.equal(p.cpu(), before[n].cpu()), n


def test_taid_schedule_moves_and_is_logged(tmp_path):
    trainer = lm.DistillationTrainer(
        llama(seed=2),
        llama(hidden=24, seed=1),
        args(tmp_path, max_steps=6),
        train_dataset=examples(24),
        distill=lm.DistillSettings("taid", hyperparameters={"t_start": 0.2}),
    )
    trainer.train()
    ts = [row["taid_t"] for row in trainer.state.log_history if "taid_t" in row]
    assert len(ts) == 3 and ts[0] >= 0.2 and ts == sorted(ts) and ts[-1] > ts[0]


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    """2 x 4 with accumulation equals 1 x 8 (equal lengths; unequal ones: test_..._is_token_exact)."""
    teacher = llama(hidden=24, seed=1)
    runs = []
    for bs, acc in ((8, 1), (4, 2)):
        student = llama(seed=2)
        trainer = lm.DistillationTrainer(
            student,
            teacher,
            args(
                tmp_path,
                per_device_train_batch_size=bs,
                gradient_accumulation_steps=acc,
                max_steps=2,
                logging_steps=1,
            ),
            train_dataset=examples(16),
            distill=lm.DistillSettings("kd"),
        )
        in_order = torch.utils.data.SequentialSampler(trainer.train_dataset)
        trainer._get_train_sampler = lambda *a, in_order=in_order, **k: in_order
        trainer.train()
        runs.append([row["loss"] for row in trainer.state.log_history if "loss" in row])
    assert runs[0] == pytest.approx(runs[1], rel=1e-4)


def _worker(out, batch, accumulation, processes=1):
    launch = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    path = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path)
    done = subprocess.run([*launch, str(WORKER), str(out), str(batch), str(accumulation)], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads((out / "losses.json").read_text()), torch.load(out / "weights.pt")


@pytest.mark.parametrize("loss", ["kd", "reverse_kl"])
def test_gradient_accumulation_is_token_exact(loss, tmp_path):
    """Micro-batches with unequal kept-token counts: 4 x 2 accumulated equals 1 x 8, loss and weights (the
    loss is one mean over the optimizer step's kept tokens, not a mean of micro-batch means)."""
    from ddp_token_worker import masked_examples, run

    data = masked_examples()
    kept = [int((e["labels"][1:] != -100).sum()) for e in data[:8]]
    assert len({sum(kept[i : i + 2]) for i in range(0, 8, 2)}) > 1  # the micro-batches really differ
    result = {}
    for name, batch, acc in (("one", 8, 1), ("acc", 2, 4)):
        run(tmp_path / name, batch, acc, loss)
        result[name] = (json.loads((tmp_path / name / "losses.json").read_text()),
                        torch.load(tmp_path / name / "weights.pt"))
    (one, w_one), (acc, w_acc) = result["one"], result["acc"]
    assert acc == pytest.approx(one, rel=1e-5)
    for name in w_one:
        torch.testing.assert_close(w_acc[name], w_one[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.slow
def test_ddp_with_accumulation_is_token_exact(tmp_path):
    """2 gloo processes x 2 sequences x 2 accumulation steps equal 1 process x 8 with unequal kept tokens per
    rank: the step's token count spans both processes, and the loss undoes DDP's average over them."""
    one, w_one = _worker(tmp_path / "one", 8, 1)
    two, w_two = _worker(tmp_path / "two", 2, 2, processes=2)
    assert two == pytest.approx(one, rel=1e-4)
    for name in w_one:
        torch.testing.assert_close(w_two[name], w_one[name], rtol=1e-4, atol=1e-6, msg=name)


def test_a_step_with_every_token_ignored_is_a_zero_loss_not_nan(tmp_path):
    data = examples(8)
    for e in data[:4]:
        e["labels"][:] = -100  # the first optimizer step has nothing to learn from
    trainer = lm.DistillationTrainer(
        llama(seed=2), llama(hidden=24, seed=1),
        args(tmp_path, per_device_train_batch_size=4, max_steps=2, logging_steps=1, optim="sgd"),
        train_dataset=data, distill=lm.DistillSettings("kd"),
    )
    trainer._get_train_sampler = lambda *a, **k: torch.utils.data.SequentialSampler(trainer.train_dataset)
    trainer.train()
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    assert losses[0] == 0.0 and math.isfinite(losses[1]) and losses[1] > 0
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_evaluate_lm_matches_direct_computation():
    student, teacher = llama(seed=2), llama(hidden=24, seed=1)
    ids = torch.stack([e["input_ids"] for e in examples(6)])
    got = lm.evaluate_lm(student, [ids[:4], ids[4:]], teacher, chunk_size=7)
    with torch.no_grad():
        ls = torch.log_softmax(student(ids).logits[:, :-1].double(), -1)
        lt = torch.log_softmax(teacher(ids).logits[:, :-1].double(), -1)
    y = ids[:, 1:]
    ce = -ls.gather(-1, y.unsqueeze(-1)).mean().item()
    kl = (lt.exp() * (lt - ls)).sum(-1).mean().item()
    assert got["val_loss"] == pytest.approx(ce, rel=1e-5)
    assert got["val_ppl"] == pytest.approx(math.exp(ce), rel=1e-5)
    assert got["val_kl"] == pytest.approx(kl, rel=1e-4, abs=1e-7)
    assert got["val_tokens"] == y.numel()
    # the student on the test device (UNIKD_LM_TEST_DEVICE), its teacher left on the CPU
    apart = lm.evaluate_lm(student.to(DEVICE), [ids[:4], ids[4:]], teacher, chunk_size=7)
    for key in got:
        assert apart[key] == pytest.approx(got[key], rel=1e-4, abs=1e-7), key


def test_taid_schedule_resumes_from_a_trainer_checkpoint(tmp_path):
    """A run resumed from checkpoint-3 ends where the uninterrupted run ends (TAID's t included)."""
    teacher = llama(hidden=24, seed=1)
    data = examples(24)

    def trainer(out, steps):
        t = lm.DistillationTrainer(
            llama(seed=2),
            teacher,
            args(
                tmp_path,
                output_dir=str(out),
                max_steps=steps,
                save_strategy="steps",
                save_steps=3,
                logging_steps=1,
            ),
            train_dataset=data,
            distill=lm.DistillSettings("taid"),
        )
        in_order = torch.utils.data.SequentialSampler(t.train_dataset)
        t._get_train_sampler = lambda *a, in_order=in_order, **k: in_order
        return t

    full = trainer(tmp_path / "full", 6)
    full.train()
    checkpoint = tmp_path / "full" / "checkpoint-3"
    assert (checkpoint / "unikd_loss_state.pt").exists()
    resumed = trainer(tmp_path / "resumed", 6)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    state = full.loss_fn.schedule.state_dict()  # t, prev_loss, momentum
    for key, value in resumed.loss_fn.schedule.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=1e-5, atol=1e-7, msg=key)
    for (n, a), b in zip(full.model.named_parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=n)
    # without the saved loss state the schedule restarts, and the run ends elsewhere
    (checkpoint / "unikd_loss_state.pt").unlink()
    restarted = trainer(tmp_path / "restarted", 6)
    restarted.train(resume_from_checkpoint=str(checkpoint))
    m_restarted, m_full = float(restarted.loss_fn.schedule.momentum), float(state["momentum"])
    assert m_restarted != pytest.approx(m_full, rel=0.05), (m_restarted, m_full)


def test_trainer_evaluate_reports_the_distillation_loss(tmp_path):
    """Trainer.evaluate() runs the same loss in eval mode (no logging of training terms, TAID unchanged)."""
    trainer = lm.DistillationTrainer(
        llama(seed=2),
        llama(hidden=24, seed=1),
        args(tmp_path),
        train_dataset=examples(8),
        eval_dataset=examples(6, seed=5),
        distill=lm.DistillSettings("taid"),
    )
    t_before = float(trainer.loss_fn.schedule.t)
    metrics = trainer.evaluate()
    assert math.isfinite(metrics["eval_loss"]) and metrics["eval_loss"] > 0
    assert float(trainer.loss_fn.schedule.t) == t_before and trainer._term_steps == 0
