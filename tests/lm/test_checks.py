"""Bad input to unikd.lm fails before training, with a message that names the fix."""

from __future__ import annotations

import math

import pytest
import torch
from lm_support import CONTEXT, args, examples, gpt2, llama, transformers

lm = pytest.importorskip("unikd.lm")


def make(tmp_path, student=None, teacher=None, data=None, **kw):
    return lm.DistillationTrainer(
        student or llama(seed=2),
        teacher or llama(hidden=24, seed=1),
        args(tmp_path),
        train_dataset=examples(8) if data is None else data,
        **kw,
    )


def test_vocabulary_mismatch(tmp_path):
    with pytest.raises(ValueError, match=r"vocabulary size mismatch.*V=96.*V=80.*vocab_size="):
        make(tmp_path, teacher=llama(hidden=24, vocab=80))


def test_padded_head_cut_with_vocab_size(tmp_path):
    trainer = make(tmp_path, teacher=llama(hidden=24, vocab=128), distill=lm.DistillSettings(vocab_size=96))
    assert trainer.vocab == 96
    trainer.train()


def _masked_padding(model, vocab):
    """Give ``model``'s head a bias that masks the rows beyond ``vocab`` with -inf (a padded vocabulary)."""
    head = model.lm_head
    bias = torch.zeros(head.out_features)
    bias[vocab:] = float("-inf")
    head.bias = torch.nn.Parameter(bias, requires_grad=False)
    return model


@pytest.mark.parametrize("fused", [True, False])
def test_padded_heads_masked_with_minus_inf_train_to_a_finite_loss(fused, tmp_path):
    # -inf logits in the padded vocabulary are deliberate masking, not a diverged model: vocab_size cuts them
    # before the losses' non-finite check (docs/losses.md), so training runs and stays finite.
    student = _masked_padding(llama(seed=2, vocab=128), 96)
    teacher = _masked_padding(llama(hidden=24, seed=1, vocab=128), 96)
    trainer = make(tmp_path, student=student, teacher=teacher,
                   distill=lm.DistillSettings("reverse_kl", vocab_size=96, fused=fused))
    logits = student(input_ids=torch.arange(4)[None]).logits
    assert torch.isinf(logits[..., 96:]).all()
    trainer.train()
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    assert losses and all(math.isfinite(v) for v in losses)
    assert all(torch.isfinite(p).all() for p in student.parameters() if p.requires_grad)


@pytest.mark.parametrize("weight", ["ce_weight", "weight"])
def test_negative_weights_refused(weight):
    # fused=False combines the terms in the trainer itself, so DistillSettings checks them for both paths
    with pytest.raises(ValueError, match=rf"^{weight} must be >= 0, got -1\.0: .*Pass {weight}=0"):
        lm.DistillSettings("kd", **{weight: -1.0})


def test_tokenizer_mismatch(tmp_path):
    a = {f"t{i}": i for i in range(96)}
    b = dict(a, t5=6, t6=5)
    with pytest.raises(ValueError, match="tokenizers differ in 2 token"):
        make(tmp_path, student_tokenizer=a, teacher_tokenizer=b)
    with pytest.raises(ValueError, match="pass both"):
        make(tmp_path, student_tokenizer=a)


def test_head_that_does_not_fit_the_hidden_size(tmp_path):
    teacher = llama(hidden=24, seed=1)
    teacher.lm_head = torch.nn.Linear(32, 96, bias=False)
    with pytest.raises(ValueError, match=r"head expects inputs of width 32 but its hidden size is 24"):
        make(tmp_path, teacher=teacher)


def test_model_without_output_head(tmp_path):
    with pytest.raises(ValueError, match="no linear output head"):
        make(tmp_path, teacher=transformers.LlamaModel(llama(hidden=24).config))


def test_teacher_is_student(tmp_path):
    s = llama()
    with pytest.raises(ValueError, match="teacher is the student"):
        make(tmp_path, student=s, teacher=s)


def test_labels_without_any_kept_token(tmp_path):
    data = [{"input_ids": e["input_ids"], "labels": torch.full((CONTEXT,), -100)} for e in examples(4)]
    with pytest.raises(ValueError, match="no token to learn from.*DataCollatorForLanguageModeling"):
        make(tmp_path, data=data)


def test_sequence_longer_than_context(tmp_path):
    data = examples(3) + examples(1, length=CONTEXT + 4)
    with pytest.raises(
        ValueError, match=rf"train_dataset\[3\] has {CONTEXT + 4} tokens .* at most {CONTEXT}"
    ):
        make(tmp_path, data=data)
    # the teacher's context counts too
    with pytest.raises(ValueError, match="at most 8"):
        make(tmp_path, teacher=llama(hidden=24, context=8), data=examples(2))


def test_empty_dataset_and_missing_input_ids(tmp_path):
    with pytest.raises(ValueError, match="train_dataset is empty"):
        make(tmp_path, data=[])
    with pytest.raises(ValueError, match="no 'input_ids'.*tokenize"):
        make(tmp_path, data=[{"text": "hello"}])


def test_batch_without_labels(tmp_path):
    trainer = make(tmp_path)
    batch = {"input_ids": torch.stack([e["input_ids"] for e in examples(2)])}
    with pytest.raises(ValueError, match="no 'labels'"):
        trainer.compute_loss(trainer.model, batch)


def test_unknown_or_teacherless_loss():
    with pytest.raises(ValueError, match="unknown teacher loss 'kld'"):
        lm.DistillSettings("kld")
    with pytest.raises(ValueError, match="uskd trains a weak head"):
        lm.DistillSettings("uskd")


class SoftCapped(transformers.LlamaForCausalLM):
    """A model that transforms its logits after the head (as Gemma-2's final soft-capping does)."""

    def forward(self, *a, **kw):
        out = super().forward(*a, **kw)
        out.logits = 3.0 * torch.tanh(out.logits / 3.0)
        return out


def test_logit_post_processing_refused_by_fused_path(tmp_path):
    torch.manual_seed(0)
    capped = SoftCapped(llama(hidden=24).config)
    torch.nn.init.normal_(capped.lm_head.weight, std=2.0)
    with pytest.raises(ValueError, match="transforms its logits after the output head.*fused=False"):
        make(tmp_path, teacher=capped)
    make(tmp_path, teacher=capped, distill=lm.DistillSettings(fused=False))  # the logits path accepts it


def test_gpt2_teacher_for_llama_student_same_vocab(tmp_path):
    """Families may differ; only the vocabulary must match."""
    make(tmp_path, teacher=gpt2(hidden=24, layers=2)).train()
