"""benchmarks/fuzz_losses.py at a small size: every loss, token form and monitor keeps the documented
contract (docs/losses.md, "Non-finite inputs, soft labels and weights"), and the fuzzer does catch a loss that
breaks it."""

from __future__ import annotations

import importlib.util
import sys
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
