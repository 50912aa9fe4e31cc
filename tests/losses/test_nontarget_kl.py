"""nkd_nontarget_kl / uskd_nontarget_kl: the KL forms of the non-target terms (>= 0, 0 at a match), against
per-sample references, and the decomposition that explains the size of the logged NKD/USKD terms."""

import math

import pytest
import torch
from _loss_refs import (
    batches,
    nkd_nontarget_parts_ref,
    uskd_nontarget_kl_ref,
    uskd_scores_separated,
)
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from unikd.losses import nkd_loss, nkd_nontarget_kl, uskd_loss, uskd_nontarget_kl

NKD_HP = st.sampled_from([{}, {"temperature": 3.0, "gamma": 3.5}, {"temperature": 0.5, "gamma": 1.0}])


@settings(max_examples=40, deadline=None)
@given(b=batches(max_c=7, bound=8.0), hp=NKD_HP)
def test_nkd_kl_matches_reference_and_completes_the_loss(b, hp):
    zs, zt, y = b
    target_term, entropy_term, kl_term = nkd_nontarget_parts_ref(zs, zt, y, **hp)
    got = nkd_nontarget_kl(zs, zt, y, **hp).item()
    assert got >= 0.0
    assert got == pytest.approx(kl_term, rel=1e-7, abs=1e-9)
    # The logged NKD term = target term + gamma lambda^2 H(teacher non-target) + the KL form.
    total = target_term + entropy_term + got
    assert nkd_loss(zs, zt, y, **hp).item() == pytest.approx(total, rel=1e-7, abs=1e-8)


@settings(max_examples=25, deadline=None)
@given(b=batches(max_c=7, bound=8.0, count=1), hp=NKD_HP)
def test_nkd_kl_is_zero_when_the_student_matches(b, hp):
    (z, y) = b
    assert nkd_nontarget_kl(z, z, y, **hp).item() == 0.0
    # Only the non-target part has to match: a different target logit leaves the KL at 0.
    z2 = z.clone()
    idx = y.argmax(1) if y.is_floating_point() else y
    z2[torch.arange(len(z)), idx] += 5.0
    assert nkd_nontarget_kl(z2, z, y, **hp).item() == pytest.approx(0.0, abs=1e-12)


def test_nkd_kl_float32_and_errors():
    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(8, 100, generator=g), torch.randn(8, 100, generator=g)
    y = torch.randint(0, 100, (8,), generator=g)
    kl = nkd_nontarget_kl(zs.half(), zt.half(), y, temperature=3.0, gamma=3.5)
    assert kl.dtype == torch.float32 and kl.item() > 0
    with pytest.raises(ValueError, match="temperature"):
        nkd_nontarget_kl(zs, zt, y, temperature=0.0)
    with pytest.raises(ValueError, match="class count mismatch"):
        nkd_nontarget_kl(zs, zt[:, :10], y)


@settings(max_examples=30, deadline=None)
@given(b=batches(max_c=7, bound=6.0),
       beta=st.sampled_from([0.1, 1.0]), rank=st.sampled_from(["paper", "legacy", "student"]))
def test_uskd_kl_matches_reference(b, beta, rank):
    zs, zw, y = b
    assume(uskd_scores_separated(zs, zw, y, rank))
    got = uskd_nontarget_kl(zs, zw, y, beta=beta, rank=rank).item()
    assert got >= 0.0
    assert got == pytest.approx(uskd_nontarget_kl_ref(zs, zw, y, beta=beta, rank=rank), rel=1e-6, abs=1e-9)


def test_uskd_kl_is_zero_when_the_student_is_the_zipf_distribution_and_completes_the_loss():
    # With beta only (alpha = mu = 0) the USKD loss is beta * (H(Z) + KL(Z || N(S))).
    c, n = 12, 6
    g = torch.Generator().manual_seed(1)
    zw = torch.randn(n, c, generator=g, dtype=torch.float64)
    y = torch.randint(0, c, (n,), generator=g)
    # A student whose non-target logits are log(1/r) in its own ranking order is exactly Zipf-distributed:
    # ranks 2..c for the non-targets when the target logit is the largest.
    zs = torch.zeros(n, c, dtype=torch.float64)
    perm = torch.stack([torch.randperm(c, generator=g) for _ in range(n)])
    for i in range(n):
        others = [k for k in perm[i].tolist() if k != y[i].item()]
        for pos, k in enumerate(others):
            zs[i, k] = -math.log(pos + 2)
        zs[i, y[i]] = 10.0
    # The weak head agrees with the student, so the rank score orders the classes like the student does.
    kl = uskd_nontarget_kl(zs, zs, y, beta=1.0).item()
    assert kl == pytest.approx(0.0, abs=1e-9)
    norm = sum(1 / k for k in range(2, c + 1))
    h = -sum((1 / r) / norm * math.log((1 / r) / norm) for r in range(2, c + 1))  # H(Z), Zipf ranks 2..C
    full = uskd_loss(zs, zs, y, alpha=0.0, beta=1.0, mu=0.0).item()
    assert full == pytest.approx(h + kl, rel=1e-9)
    shifted = zs + torch.randn(n, c, generator=g, dtype=torch.float64)
    assert uskd_nontarget_kl(shifted, zw, y, beta=1.0).item() > 1e-3
    with pytest.raises(ValueError, match="unknown rank"):
        uskd_nontarget_kl(zs, zw, y, rank="zipf")
