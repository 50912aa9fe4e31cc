"""kd3_select_weights / kd3_teacher_share (KD³'s dynamic instance selection): a per-row Python reference,
the schedule, hypothesis properties, no gradient, and the bad-input contract."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unikd.losses import kd3_select_weights, kd3_teacher_share


def _softmax(row):
    m = max(row)
    e = [math.exp(v - m) for v in row]
    return [v / sum(e) for v in e]


def _ref(zs, zt, share, threshold, weights):
    """Naive: combined prediction per row in Python floats, its largest probability against the threshold."""
    out = []
    for s, t in zip(zs.double().tolist(), zt.double().tolist()):
        p = [share * a + (1 - share) * b for a, b in zip(_softmax(t), _softmax(s))]
        conf = max(p)
        keep = conf >= threshold
        out.append((1.0 if weights == "mask" else conf) if keep else 0.0)
    return out


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(1, 6), c=st.integers(2, 7), share=st.floats(0.0, 1.0),
       threshold=st.floats(0.05, 1.0), weights=st.sampled_from(["mask", "confidence"]),
       scale=st.floats(0.1, 8.0))
def test_matches_reference(seed, n, c, share, threshold, weights, scale):
    g = torch.Generator().manual_seed(seed)
    zs, zt = scale * torch.randn(n, c, generator=g), scale * torch.randn(n, c, generator=g)
    got = kd3_select_weights(zs, zt, teacher_share=share, threshold=threshold, weights=weights)
    ref = _ref(zs, zt, share, threshold, weights)
    assert got.dtype == torch.float32 and got.shape == (n,)
    for g_i, r_i, row_s, row_t in zip(got.tolist(), ref, zs.tolist(), zt.tolist()):
        conf = max(share * a + (1 - share) * b for a, b in zip(_softmax(row_t), _softmax(row_s)))
        if abs(conf - threshold) > 1e-6:  # float32 rounding decides rows right at the threshold
            assert g_i == pytest.approx(r_i, rel=1e-5, abs=1e-6)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), share=st.floats(0.0, 1.0), lo=st.floats(0.1, 0.9),
       step=st.floats(0.0, 0.5))
def test_properties(seed, share, lo, step):
    g = torch.Generator().manual_seed(seed)
    zs, zt = 3 * torch.randn(16, 5, generator=g), 3 * torch.randn(16, 5, generator=g)
    low = kd3_select_weights(zs, zt, teacher_share=share, threshold=lo)
    high = kd3_select_weights(zs, zt, teacher_share=share, threshold=min(1.0, lo + step))
    assert bool((high <= low).all())  # a higher threshold keeps a subset
    conf = kd3_select_weights(zs, zt, teacher_share=share, threshold=lo, weights="confidence")
    assert torch.equal(conf > 0, low > 0) and bool((conf <= 1).all()) and bool((conf[conf > 0] >= lo).all())
    # share 1: the teacher alone decides; share 0: the student alone; every row at a threshold of 1/C
    assert torch.equal(kd3_select_weights(torch.randn(16, 5), zt, teacher_share=1.0, threshold=lo),
                       kd3_select_weights(zs, zt, teacher_share=1.0, threshold=lo))
    assert torch.equal(kd3_select_weights(zs, torch.randn(16, 5), teacher_share=0.0, threshold=lo),
                       kd3_select_weights(zs, zt, teacher_share=0.0, threshold=lo))
    assert bool((kd3_select_weights(zs, zt, teacher_share=share, threshold=0.2 - 1e-6) == 1).all())


def test_no_gradient_and_half_inputs():
    zs = torch.randn(4, 3, requires_grad=True)
    w = kd3_select_weights(zs, torch.randn(4, 3), threshold=0.3)
    assert not w.requires_grad
    zt = torch.randn(4, 3)
    for dt in (torch.bfloat16, torch.float16):
        assert torch.equal(kd3_select_weights(zs.detach().to(dt), zt.to(dt), threshold=0.4),
                           kd3_select_weights(zs.detach().to(dt).float(), zt.to(dt).float(), threshold=0.4))


def test_non_finite_logits_give_nan_weights():
    zt = torch.randn(3, 4)
    zt[1, 2] = math.nan
    w = kd3_select_weights(torch.randn(3, 4), zt, threshold=0.3)
    assert torch.isnan(w[1]) and not torch.isnan(w[[0, 2]]).any()


def test_teacher_share_schedule():
    assert kd3_teacher_share(0.0, start=1.0, end=0.5, ramp_epochs=10) == 1.0
    assert kd3_teacher_share(5.0, start=1.0, end=0.5, ramp_epochs=10) == pytest.approx(0.75)
    assert kd3_teacher_share(10.0, start=1.0, end=0.5, ramp_epochs=10) == 0.5
    assert kd3_teacher_share(30.0, start=1.0, end=0.5, ramp_epochs=10) == 0.5
    assert kd3_teacher_share(-1.0, start=0.2, end=0.8, ramp_epochs=4) == 0.2
    assert kd3_teacher_share(3.0, start=0.2, end=0.8, ramp_epochs=0) == 0.8  # no ramp: the end share


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"teacher_share": 1.5}, r"teacher_share must be a number in \[0, 1\]"),
        ({"threshold": 0.0}, r"threshold must be a number in \(0, 1\]"),
        ({"threshold": 1.2}, r"threshold must be a number in \(0, 1\]"),
        ({"weights": "soft"}, "weights must be one of"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kd3_select_weights(torch.randn(2, 3), torch.randn(2, 3), **kwargs)


def test_bad_inputs_and_schedule():
    with pytest.raises(ValueError, match="class count mismatch"):
        kd3_select_weights(torch.randn(2, 3), torch.randn(2, 4))
    with pytest.raises(ValueError, match="N=2 rows but teacher_logits has N=3"):
        kd3_select_weights(torch.randn(2, 3), torch.randn(3, 3))
    with pytest.raises(ValueError, match="floating"):
        kd3_select_weights(torch.zeros(2, 3, dtype=torch.long), torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"teacher share start must be a number in \[0, 1\]"):
        kd3_teacher_share(1.0, start=-0.1)
    with pytest.raises(ValueError, match="ramp_epochs must be a finite number >= 0"):
        kd3_teacher_share(1.0, ramp_epochs=-2)
