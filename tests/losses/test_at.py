"""at_loss / ATLoss: float64 per-sample reference from the paper, parity with the benchmark code (mdistiller
a08d46f, mdistiller/distillers/AT.py; see _mdistiller_refs.py), gradcheck, properties and bad inputs."""

import math

import pytest
import torch
from _mdistiller_refs import mdistiller_at_loss
from hypothesis import given, settings
from hypothesis import strategies as st

from unikd.losses import ATLoss, at_loss, create_loss


def _maps(seed, shapes, dtype=torch.float64, positive=False):
    g = torch.Generator().manual_seed(seed)
    out = [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    return [m.abs() for m in out] if positive else out


def _ref(student, teacher, p):
    """Per sample, in Python floats: Q = (mean_c f^p) / max(||mean_c f^p||, 1e-12) over positions; the
    stage term is the squared distance summed over positions, averaged over samples and positions. The
    larger map is first average-pooled to the smaller size (only exact factors here)."""

    def pool(f, size):
        c, h, w = len(f), len(f[0]), len(f[0][0])
        kh, kw = h // size[0], w // size[1]
        return [[[sum(f[ch][i * kh + a][j * kw + b] for a in range(kh) for b in range(kw)) / (kh * kw)
                  for j in range(size[1])] for i in range(size[0])] for ch in range(c)]

    def attention(f):
        c = len(f)
        h, w = len(f[0]), len(f[0][0])
        q = [sum(f[ch][i][j] ** p for ch in range(c)) / c for i in range(h) for j in range(w)]
        norm = max(math.sqrt(sum(v * v for v in q)), 1e-12)
        return [v / norm for v in q]

    total = 0.0
    for fs, ft in zip(student, teacher):
        size = (min(fs.shape[2], ft.shape[2]), min(fs.shape[3], ft.shape[3]))
        stage, count = 0.0, 0
        for s_row, t_row in zip(fs.tolist(), ft.tolist()):
            qs, qt = attention(pool(s_row, size)), attention(pool(t_row, size))
            stage += sum((a - b) ** 2 for a, b in zip(qs, qt))
            count += len(qs)
        total += stage / count
    return total


STAGES = [
    ([(3, 4, 4, 4), (3, 8, 2, 2)], [(3, 6, 4, 4), (3, 16, 2, 2)]),  # equal sizes, other channel counts
    ([(2, 3, 8, 8), (2, 5, 4, 4)], [(2, 4, 4, 4), (2, 2, 8, 8)]),  # student larger, then teacher larger
    ([(4, 2, 3, 3)], [(4, 2, 3, 3)]),
]


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10**6), case=st.sampled_from(STAGES), p=st.sampled_from([2.0, 1.0, 3.0, 1.5]))
def test_matches_reference(seed, case, p):
    s_shapes, t_shapes = case
    positive = p != int(p)  # non-integer powers of negative values are not real
    fs, ft = _maps(seed, s_shapes, positive=positive), _maps(seed + 1, t_shapes, positive=positive)
    assert at_loss(fs, ft, p=p).item() == pytest.approx(_ref(fs, ft, p), rel=1e-10, abs=1e-14)


@pytest.mark.parametrize("case", STAGES)
def test_parity_with_benchmark_code(case):
    s_shapes, t_shapes = case
    fs = [f.requires_grad_(True) for f in _maps(3, s_shapes)]
    fr = [f.detach().clone().requires_grad_(True) for f in fs]
    ft = _maps(4, t_shapes)
    ours, ref = at_loss(fs, ft, p=2), mdistiller_at_loss(fr, ft, 2)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=0)
    ours.backward()
    ref.backward()
    for a, b in zip(fs, fr):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-16)


def test_gradcheck_and_teacher_detached():
    fs = [f.requires_grad_(True) for f in _maps(0, [(2, 3, 4, 4), (2, 4, 2, 2)])]
    ft = [f.requires_grad_(True) for f in _maps(1, [(2, 5, 2, 2), (2, 4, 2, 2)])]
    assert torch.autograd.gradcheck(lambda a, b: at_loss([a, b], ft), tuple(fs))
    at_loss(fs, ft).backward()
    assert all(t.grad is None for t in ft)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), scale=st.floats(0.01, 100.0), perm_seed=st.integers(0, 100))
def test_properties(seed, scale, perm_seed):
    fs, ft = _maps(seed, [(3, 4, 4, 4), (3, 6, 2, 2)]), _maps(seed + 1, [(3, 5, 4, 4), (3, 6, 2, 2)])
    v = at_loss(fs, ft).item()
    assert 0.0 <= v <= 4.0 / 16 + 4.0 / 4 + 1e-12  # unit vectors: each row's squared distance <= 4
    assert at_loss(fs, fs).item() == pytest.approx(0.0, abs=1e-15)
    assert at_loss(ft, fs).item() == pytest.approx(v, rel=1e-12)
    # scale-free (normalised attention) and blind to the channel order (channel mean)
    assert at_loss([scale * f for f in fs], ft).item() == pytest.approx(v, rel=1e-9, abs=1e-15)
    perm = torch.randperm(4, generator=torch.Generator().manual_seed(perm_seed))
    assert at_loss([fs[0][:, perm], fs[1]], ft).item() == pytest.approx(v, rel=1e-12, abs=1e-15)


def test_module_equals_functional():
    m = create_loss("at", p=2)
    assert isinstance(m, ATLoss) and m.taps == "stages"
    assert m.requires == ("student_features", "teacher_features")
    fs, ft = _maps(0, [(2, 3, 4, 4)], torch.float32), _maps(1, [(2, 3, 4, 4)], torch.float32)
    assert torch.equal(m(torch.randn(2, 5), fs, ft), at_loss(fs, ft, p=2.0))


def test_half_precision_inputs_compute_in_float32():
    fs, ft = _maps(0, [(2, 3, 4, 4)], torch.float32), _maps(1, [(2, 3, 4, 4)], torch.float32)
    for dt in (torch.bfloat16, torch.float16):
        out = at_loss([f.to(dt) for f in fs], [f.to(dt) for f in ft])
        assert out.dtype == torch.float32
        expected = at_loss([f.to(dt).float() for f in fs], [f.to(dt).float() for f in ft])
        assert out.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (([torch.randn(2, 3, 4, 4)], [torch.randn(2, 3, 4, 4)] * 2), {}, "1 maps but teacher_feats has 2"),
        ((torch.randn(2, 3, 4, 4), [torch.randn(2, 3, 4, 4)]), {}, "non-empty list"),
        (([], []), {}, "non-empty list"),
        (([torch.randn(2, 3, 4)], [torch.randn(2, 3, 4)]), {}, r"\(N, C, H, W\)"),
        (([torch.randn(2, 3, 4, 4)], [torch.randn(3, 3, 4, 4)]), {}, "student batch 2 != teacher batch 3"),
        (([torch.randn(2, 3, 4, 4)], [torch.randn(2, 3, 4, 4)]), {"p": 0}, "p must be"),
    ],
)
def test_bad_inputs(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        at_loss(*args, **kwargs)
    if "p" in kwargs:
        with pytest.raises(ValueError, match="p must be"):
            ATLoss(**kwargs)
