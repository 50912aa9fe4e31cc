"""benchmarks/fuzz_losses.py at a small size: every loss, token form and monitor keeps the documented
contract (docs/losses.md, "Non-finite inputs, soft labels and weights"), the fuzzer does catch a loss that
breaks it, and a fused float16 gradient passes as non-finite only where its float32 reference leaves the
float16 range."""

from __future__ import annotations

import importlib.util
import math
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from unikd.losses import kd_loss

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz_losses.py"


@pytest.fixture(scope="module")
def fuzz():
    spec = importlib.util.spec_from_file_location("fuzz_losses", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_every_subject_and_category_keeps_the_contract(fuzz):
    subjects = fuzz.default_subjects()
    result = fuzz.run(12 * len(subjects), seed=1, subjects=subjects)
    assert result.failed == 0, "\n".join(result.failures)
    seen = {(k[0], k[3]) for k in result.counts}
    assert {name for name, _ in seen} == set(subjects)  # round-robin: every subject ran
    assert {category for _, category in seen} == set(fuzz.CATEGORIES)


def _hides_infinities(student_logits, teacher_logits):
    """A KD that clamps its inputs: finite for +-inf logits, so the contract is broken."""
    return kd_loss(student_logits.clamp(-50, 50), teacher_logits.clamp(-50, 50))


def test_a_loss_that_breaks_the_contract_is_caught(fuzz):
    broken = {
        "broken": fuzz.Subject("broken", "loss", _hides_infinities),
        "token.broken": fuzz.Subject(
            "token.broken",
            "token",
            lambda s, o, y, **kw: torch.nan_to_num(fuzz.T.token_loss("kd", s, o, y, **kw), nan=0.0),
            token="kd",
            form="dense",
        ),
    }
    result = fuzz.run(120, seed=0, subjects=broken)
    failed = {k[0] for k, n in result.counts.items() if not k[4] and n}
    assert failed == {"broken", "token.broken"}
    assert any("for non-finite inputs" in f for f in result.failures)
    # the clean cases of the same subjects still pass: only the contract's violations count
    assert result.passed > 0


def _fused_fp16_case(fuzz, hidden, head, labels, **kw):
    """A fused float16 case of ``kd`` with weight 0 (the CE term alone) and a zero teacher."""
    hs = torch.tensor(hidden, dtype=torch.float16, requires_grad=True)
    ws = torch.tensor(head, dtype=torch.float16, requires_grad=True)
    ho, wo = torch.zeros(len(hidden), 1, dtype=torch.float16), torch.zeros(len(head), 1, dtype=torch.float16)
    kw = {"student_bias": None, "teacher_bias": None, "chunk_size": 2, "ce_weight": 1.0, "weight": 0.0, **kw}
    extra = {"kw": kw, "trained": [hs, ws]}
    case = fuzz.Case([hs, ws, ho, wo], torch.tensor(labels), kind="labels", extra=extra)
    return case, fuzz.Subject("token.kd.fused", "token", token="kd", form="fused")


def test_fused_float16_gradient_beyond_the_range_passes_counted_apart(fuzz):
    # two tokens whose CE gradient on class 0 is -1 each: dW[0, 0] = -2 * 40000 = -80000, beyond float16
    case, subject = _fused_fp16_case(fuzz, [[40000.0, 20.0]] * 2, [[0.0, -1.0], [0.0, 1.0]], [0, 0],
                                     reduction="sum")
    outcome = fuzz.check(subject, "large", case)
    assert isinstance(outcome, fuzz.Passed), outcome
    assert outcome.outcome == fuzz.FP16_RANGE
    assert not torch.isfinite(case.inputs[1].grad).all()
    assert fuzz.reference_grads(subject, case)[1].abs().max().item() == pytest.approx(80000.0, rel=1e-3)


def test_fused_float16_non_finite_gradient_with_in_range_reference_is_a_failure(fuzz, monkeypatch):
    real = fuzz.T.fused_distill_loss

    def leaky(name, hs, ws, *args, **kw):  # a fused path that overflows where the true gradient is small
        ws.register_hook(lambda g: g.index_put((torch.tensor([0]), torch.tensor([1])),
                                               torch.tensor(math.inf, dtype=g.dtype)))
        return real(name, hs, ws, *args, **kw)

    monkeypatch.setattr(fuzz.T, "fused_distill_loss", leaky)
    case, subject = _fused_fp16_case(fuzz, [[1.0, 2.0], [3.0, -4.0], [0.5, 0.5]], [[0.1, -0.2], [0.3, 0.4]],
                                     [0, 1, 1])
    outcome = fuzz.check(subject, "large", case)
    assert isinstance(outcome, str) and "does not leave the float16 range" in outcome
    assert "input #1" in outcome
    assert abs(fuzz.reference_grads(subject, case)[1][0, 1].item()) < 10


def test_range_exceeded_cases_are_printed_apart(fuzz, capsys):
    counts = Counter({("token.kd.fused", "fp16", "labels", "large", True): 2})
    result = fuzz.FuzzResult(2, 0, 1.0, counts, [], Counter({fuzz.FP16_RANGE: 1}), ["case 1 (...): detail"])
    fuzz.report(result)
    out = capsys.readouterr().out
    assert "total: 2 passed, 0 failed" in out
    assert f"of the passed, {fuzz.FP16_RANGE}: 1" in out and "NOTE case 1 (...): detail" in out


def _squared_gap(student_emb, teacher_emb):
    return (student_emb.float() - teacher_emb.float()).square().sum()


def _leaky_squared_gap(student_emb, teacher_emb):  # overflows its gradient where the true one is small
    student_emb.register_hook(lambda g: torch.full_like(g, math.inf))
    return _squared_gap(student_emb, teacher_emb)


@pytest.mark.parametrize("fn, gap, passes", [(_squared_gap, 60000.0, True), (_leaky_squared_gap, 1.0, False)])
def test_float16_gradient_of_a_classification_loss_is_judged_by_its_float32_reference(fuzz, fn, gap, passes):
    # d/ds (s - t)^2 = 2 (s - t): 120000 for a gap of 60000 (no float16 form), 2 for a gap of 1
    s = torch.tensor([[gap / 2]], dtype=torch.float16, requires_grad=True)
    t = torch.tensor([[-gap / 2]], dtype=torch.float16, requires_grad=True)
    subject = fuzz.Subject("gap", "loss", fn)
    outcome = fuzz.check(subject, "large", fuzz.Case([s, t], None))
    if passes:
        assert isinstance(outcome, fuzz.Passed) and outcome.outcome == fuzz.FP16_RANGE, outcome
    else:
        assert isinstance(outcome, str) and "does not leave the float16 range" in outcome
        assert "input #0" in outcome
