"""PEFT/LoRA students on the fused path, teacher placement (device, dtype), and eval_<term> logging."""

from __future__ import annotations

import math

import pytest
import torch
from lm_support import DEVICE, args, examples, llama

lm = pytest.importorskip("unikd.lm")
peft = pytest.importorskip("peft")
from unikd.lm.capture import causal_lm  # noqa: E402


def _lora(seed: int = 2, targets=("q_proj", "v_proj")):
    model = llama(seed=seed)
    cfg = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=list(targets), lora_dropout=0.0, init_lora_weights=False
    )
    return peft.get_peft_model(model, cfg)


def _step(student, teacher, tmp_path, **settings):
    trainer = lm.DistillationTrainer(
        student,
        teacher,
        args(tmp_path),
        train_dataset=examples(8),
        distill=lm.DistillSettings("kd", ce_weight=0.7, weight=1.3, **settings),
    )
    batch = trainer._prepare_inputs(trainer.data_collator(examples(4, seed=3)))
    student.train()
    value = trainer.compute_loss(student, batch)
    value.backward()
    grads = {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}
    return value.detach(), grads, trainer


def test_lora_student_fused_equals_unfused(tmp_path):
    teacher = llama(hidden=24, layers=2, seed=1)
    v_f, g_f, trainer = _step(_lora(), teacher, tmp_path, fused=True)
    v_l, g_l, _ = _step(_lora(), teacher, tmp_path, fused=False)
    assert math.isfinite(v_f.item())
    torch.testing.assert_close(v_f, v_l, rtol=1e-5, atol=1e-6)
    # only the adapters train, and the fused path gives them the logits path's gradients
    assert g_f.keys() == g_l.keys() and len(g_f) == 4 and all("lora_" in n for n in g_f)
    for name in g_f:
        assert g_f[name].abs().sum() > 0, name
        torch.testing.assert_close(g_f[name], g_l[name], rtol=1e-4, atol=1e-6, msg=name)
    # the hook sits on the decoder under the wrapper, not on the PEFT model's own base_model (logits)
    assert trainer._student_capture.module is trainer.model.base_model.model.model


def test_lora_on_the_output_head_is_refused_on_the_fused_path(tmp_path):
    with pytest.raises(ValueError, match="output head carries an adapter .*not 'lm_head'.*fused=False"):
        _step(_lora(targets=("q_proj", "lm_head")), llama(hidden=24, seed=1), tmp_path)
    v, g, _ = _step(_lora(targets=("q_proj", "lm_head")), llama(hidden=24, seed=1), tmp_path, fused=False)
    assert math.isfinite(v.item()) and any("lm_head" in n for n in g)


class Renamed(torch.nn.Module):
    """A wrapper that hides the causal LM under another name and has no get_output_embeddings."""

    def __init__(self, inner):
        super().__init__()
        self.net, self.config = inner, inner.config

    def forward(self, **kwargs):
        return self.net(**kwargs)


def test_renaming_wrappers_are_searched_or_refused(tmp_path):
    inner = llama(seed=2)
    assert causal_lm(Renamed(inner)) is inner
    two = torch.nn.ModuleDict({"a": llama(seed=2), "b": llama(seed=3)})
    with pytest.raises(ValueError, match="2 different causal LMs .*Pass the \\*ForCausalLM itself"):
        causal_lm(two, "student")
    with pytest.raises(ValueError, match="no linear output head"):
        causal_lm(torch.nn.Linear(2, 2), "student")
    v_f, g_f, _ = _step(Renamed(llama(seed=2)), llama(hidden=24, seed=1), tmp_path, fused=True)
    v_l, g_l, _ = _step(Renamed(llama(seed=2)), llama(hidden=24, seed=1), tmp_path, fused=False)
    torch.testing.assert_close(v_f, v_l, rtol=1e-5, atol=1e-6)
    for name in g_f:
        torch.testing.assert_close(g_f[name], g_l[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("fused", [True, False])
def test_teacher_in_bfloat16_gives_a_close_loss(fused, tmp_path):
    v32, _, t32 = _step(llama(seed=2), llama(hidden=24, seed=1), tmp_path, fused=fused)
    v16, g16, t16 = _step(
        llama(seed=2), llama(hidden=24, seed=1), tmp_path, fused=fused, teacher_dtype="bf16"
    )
    assert next(t16.teacher.parameters()).dtype == torch.bfloat16
    assert next(t32.teacher.parameters()).dtype == torch.float32
    assert next(t16.model.parameters()).dtype == torch.float32  # the student keeps its dtype
    assert v16.item() != v32.item()  # the teacher really ran in bf16 ...
    assert v16.item() == pytest.approx(v32.item(), rel=2e-2)  # ... and gives nearly the same loss
    assert all(torch.isfinite(g).all() for g in g16.values())


def test_teacher_device_is_honoured(tmp_path):
    from unikd.lm.placement import TeacherPlacement

    # on a CPU-only machine "meta" stands for the training device: the teacher goes to teacher_device instead
    placed = TeacherPlacement(llama(hidden=24, seed=1), torch.device("meta"), "cpu", "bfloat16")
    p = next(placed.teacher.parameters())
    assert p.device.type == "cpu" and p.dtype == torch.bfloat16 and placed.device.type == "cpu"
    assert not placed.teacher.training and not p.requires_grad
    default = TeacherPlacement(llama(hidden=24, seed=1), torch.device("meta"))
    assert next(default.teacher.parameters()).device.type == "meta"
    _, _, trainer = _step(llama(seed=2), llama(hidden=24, seed=1), tmp_path, teacher_device="cpu")
    assert next(trainer.teacher.parameters()).device.type == "cpu"


@pytest.mark.skipif(DEVICE == "cpu", reason="needs a second device (UNIKD_LM_TEST_DEVICE=cuda)")
def test_teacher_on_the_cpu_beside_a_gpu_student(tmp_path):
    v_same, g_same, _ = _step(llama(seed=2), llama(hidden=24, seed=1), tmp_path)
    v_cpu, g_cpu, trainer = _step(llama(seed=2), llama(hidden=24, seed=1), tmp_path, teacher_device="cpu")
    assert next(trainer.teacher.parameters()).device.type == "cpu"
    torch.testing.assert_close(v_cpu, v_same, rtol=1e-4, atol=1e-5)
    for name in g_same:
        torch.testing.assert_close(g_cpu[name], g_same[name], rtol=1e-3, atol=1e-5, msg=name)


def test_teacher_elsewhere_moves_inputs_hidden_and_head_once(tmp_path, monkeypatch):
    from unikd.lm import placement

    _, _, trainer = _step(llama(seed=2), llama(hidden=24, seed=1), tmp_path, teacher_device="cpu")
    head = trainer._placement.head(torch.device("cpu"))
    assert head[0] is trainer.teacher.lm_head.weight  # same device: no copy
    fake = placement.TeacherPlacement(llama(hidden=24, seed=1), torch.device("cpu"))
    monkeypatch.setattr(fake, "device", torch.device("meta"))
    moved = fake.inputs({"input_ids": torch.zeros(1, 2, dtype=torch.long)})
    assert moved["input_ids"].device.type == "meta"
    w1, _ = fake.head(torch.device("meta"))
    w2, _ = fake.head(torch.device("meta"))
    assert w1.device.type == "meta" and w1 is w2  # copied once, then reused


def test_bad_placement_settings_are_named():
    with pytest.raises(ValueError, match="teacher_dtype='half16' is not a dtype; use one of float32"):
        lm.DistillSettings(teacher_dtype="half16")
    with pytest.raises(ValueError, match="teacher_device='gpu7' is not a device"):
        lm.DistillSettings(teacher_device="gpu7")


@pytest.mark.parametrize("loss", ["reverse_kl", "kd"])
def test_evaluate_logs_ce_and_the_term(loss, tmp_path):
    trainer = lm.DistillationTrainer(
        llama(seed=2),
        llama(hidden=24, seed=1),
        args(tmp_path, per_device_eval_batch_size=4),
        train_dataset=examples(8),
        eval_dataset=examples(6, seed=5),  # batches of 4 and 2 sequences: the weighting matters
        distill=lm.DistillSettings(loss, ce_weight=0.5, weight=2.0),
    )
    metrics = trainer.evaluate()
    assert {"eval_loss", "eval_ce", f"eval_{loss}"} <= metrics.keys()
    combined = 0.5 * metrics["eval_ce"] + 2.0 * metrics[f"eval_{loss}"]
    assert metrics["eval_loss"] == pytest.approx(combined, rel=1e-4)
    assert metrics["eval_ce"] > 1.0 and metrics[f"eval_{loss}"] > 0
    assert trainer._term_steps == 0 and trainer._eval_weight == 0  # nothing left over for the next log
    logged = trainer.state.log_history[-1]
    assert logged["eval_ce"] == metrics["eval_ce"]
