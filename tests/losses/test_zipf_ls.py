"""zipf_ls_loss / ZipfLSLoss against a per-sample reference, gradcheck, properties and bad inputs."""

import numpy as np
import pytest
import torch
from _loss_refs import assume_close_rows_ok, batches, zipf_ls_ref
from hypothesis import given, settings
from hypothesis import strategies as st

from unikd.losses import ZipfLSLoss, zipf_ls_loss

HP = st.sampled_from([{}, {"power": 2.0}, {"power": 0.5, "only_correct": True}, {"only_correct": True}])


@settings(max_examples=25, deadline=None)
@given(b=batches(count=1, max_c=7), hp=HP)
def test_matches_reference(b, hp):
    zs, y = b
    assume_close_rows_ok(zs)
    assert zipf_ls_loss(zs, y, **hp).item() == pytest.approx(zipf_ls_ref(zs, y, **hp), rel=1e-9, abs=1e-12)


def test_ties_share_the_smallest_rank():
    # All logits equal: every class has rank 1, so the soft labels are uniform and the KL is 0.
    assert zipf_ls_loss(torch.zeros(3, 5), torch.tensor([0, 2, 4])).item() == pytest.approx(0.0, abs=1e-6)
    zs = torch.tensor([[3.0, 1.0, 1.0, 0.0]], dtype=torch.float64)
    assert zipf_ls_loss(zs, torch.tensor([0])).item() == pytest.approx(
        zipf_ls_ref(zs, torch.tensor([0])), rel=1e-12
    )


def test_gradcheck():
    g = torch.Generator().manual_seed(7)
    zs = (torch.randn(3, 6, dtype=torch.float64, generator=g) * 3).requires_grad_(True)
    y = torch.tensor([1, 5, 0])
    assert torch.autograd.gradcheck(lambda a: zipf_ls_loss(a, y, power=1.5), (zs,))


def test_module_equals_functional():
    zs, y = torch.randn(4, 7), torch.randint(0, 7, (4,))
    m = ZipfLSLoss(power=1.5, only_correct=True)
    assert m.requires == ("target",)
    assert torch.equal(m(zs, y), zipf_ls_loss(zs, y, power=1.5, only_correct=True))


@settings(max_examples=20, deadline=None)
@given(b=batches(count=1, bound=1e4, dtype=np.float32), only=st.booleans())
def test_finite_for_extreme_logits(b, only):
    zs, y = b
    zs.requires_grad_(True)
    loss = zipf_ls_loss(zs, y, only_correct=only)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(zs.grad).all()


@settings(max_examples=20, deadline=None)
@given(b=batches(count=1), shift=st.integers(-50, 50))
def test_row_constant_invariance(b, shift):
    zs, y = b
    zs = zs.round()  # integer logits: the shift is exact, so the ranks cannot change
    rows = torch.arange(zs.shape[0], dtype=torch.float64).unsqueeze(1) * shift
    assert zipf_ls_loss(zs + rows, y).item() == pytest.approx(zipf_ls_loss(zs, y).item(), rel=1e-8, abs=1e-10)


def test_one_hot_soft_labels_equal_indices_and_mixup_uses_argmax():
    zs, y = torch.randn(6, 9), torch.randint(0, 9, (6,))
    assert torch.allclose(zipf_ls_loss(zs, torch.nn.functional.one_hot(y, 9).float()), zipf_ls_loss(zs, y))
    soft = 0.8 * torch.nn.functional.one_hot(y, 9).float() + 0.2 * torch.nn.functional.one_hot((y + 1) % 9, 9)
    assert torch.allclose(zipf_ls_loss(zs, soft), zipf_ls_loss(zs, y))


@pytest.mark.parametrize(
    "zs, y, kw, match",
    [
        (torch.randn(4, 5), torch.tensor([0, 1, 5, 2]), {}, "out of range"),
        (torch.randn(4, 5), torch.rand(4, 6), {}, "soft-label target must have shape"),
        (torch.randn(4, 5), torch.rand(4, 5) - 0.5, {}, "negative"),
        (torch.randn(4, 1), torch.zeros(4, dtype=torch.long), {}, "C >= 2"),
        (torch.randn(4, 5), torch.zeros(4, dtype=torch.long), {"power": 0.0}, "power"),
        (torch.randn(0, 5), torch.zeros(0, dtype=torch.long), {}, "empty batch"),
    ],
)
def test_bad_inputs(zs, y, kw, match):
    with pytest.raises(ValueError, match=match):
        zipf_ls_loss(zs, y, **kw)


def test_torch_rank_path_matches_numpy_path(monkeypatch):
    # CUDA tensors and torch.compile use torch.sort on the packed keys; CPU eager uses numpy. Same ranks.
    from unikd.losses._zipf_ranks import zipf_rank_weights

    g = torch.Generator().manual_seed(8)
    scores = torch.cat([torch.randn(6, 40, generator=g), torch.zeros(2, 40), -torch.rand(2, 40, generator=g)])
    scores[0, :5] = 10.0  # exact ties at the top
    expected = {t: zipf_rank_weights(scores, ties=t) for t in ("first", "min")}
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    for t, w in expected.items():
        assert torch.equal(zipf_rank_weights(scores, ties=t), w)
    # ranks 1..C each used once with ties="first"; ties share the smallest rank with ties="min"
    assert torch.equal(
        expected["first"].reciprocal().round().sort(1).values, torch.arange(1.0, 41).expand(10, 40)
    )
    assert torch.equal(expected["min"][0, :5], torch.ones(5))
    assert torch.equal(expected["min"][6], torch.ones(40))
