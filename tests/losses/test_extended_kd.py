"""extended_kd_loss / ExtendedKDLoss: float64 per-element references (the weighted mean of segment MSEs, and
the connectors: block pooling, bilinear resize, 1x1 conv + batch-statistics BN), gradcheck, hypothesis
properties, the bad-input contract and the module's state."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unikd.losses import ExtendedKDLoss, SegmentConnector, create_loss, extended_kd_loss


def _maps(seed, shapes, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype) for s in shapes]


def _mse(a, b):
    x, y = a.double().flatten().tolist(), b.double().flatten().tolist()
    return sum((p - q) ** 2 for p, q in zip(x, y)) / len(x)


def _ref(fs, ft, weights):
    """Naive: per-segment average of squared differences in Python floats, then the weighted mean."""
    if weights is None or not isinstance(weights, list):
        w = [1.0 if weights is None else float(weights)] * len(fs)
    else:
        w = [float(v) for v in weights]
    return sum(wk * _mse(s, t) for wk, s, t in zip(w, fs, ft)) / sum(w)


SHAPES = st.lists(st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)), min_size=1, max_size=3)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(1, 3), shapes=SHAPES, data=st.data())
def test_matches_reference(seed, n, shapes, data):
    full = [(n, *s) for s in shapes]
    fs, ft = _maps(seed, full), _maps(seed + 1, full)
    weights = data.draw(st.one_of(
        st.none(), st.floats(0.1, 10.0),
        st.lists(st.floats(0.0, 10.0), min_size=len(full), max_size=len(full)).filter(lambda w: sum(w) > 0.1),
    ))
    got = extended_kd_loss(fs, ft, weights=weights).item()
    assert got == pytest.approx(_ref(fs, ft, weights), rel=1e-12, abs=1e-15)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), scale=st.floats(0.1, 10.0), c=st.floats(0.01, 100.0),
       w=st.lists(st.floats(0.0, 5.0), min_size=2, max_size=2).filter(lambda w: sum(w) > 0.1))
def test_properties(seed, scale, c, w):
    full = [(3, 2, 4, 4), (3, 5, 2, 2)]
    fs, ft = _maps(seed, full), _maps(seed + 1, full)
    v = extended_kd_loss(fs, ft, weights=w).item()
    assert v >= 0 and extended_kd_loss(fs, fs, weights=w).item() == 0.0
    assert extended_kd_loss(ft, fs, weights=w).item() == pytest.approx(v, rel=1e-12)
    scaled = extended_kd_loss([scale * f for f in fs], [scale * f for f in ft], weights=w).item()
    assert scaled == pytest.approx(scale**2 * v, rel=1e-9)
    # a weighted MEAN: scaling the weights changes nothing, and it lies between the segments' MSEs
    assert extended_kd_loss(fs, ft, weights=[c * x for x in w]).item() == pytest.approx(v, rel=1e-12)
    per = [_mse(s, t) for s, t in zip(fs, ft)]
    assert min(per) - 1e-12 <= v <= max(per) + 1e-12
    assert extended_kd_loss(fs, ft, weights=[0, 1]).item() == pytest.approx(per[1], rel=1e-12)
    assert extended_kd_loss(fs, ft, weights=c).item() == pytest.approx(sum(per) / 2, rel=1e-12)


def _pool_ref(x, size):
    """Block means (integer factors), x a nested list (C, H, W)."""
    kh, kw = len(x[0]) // size[0], len(x[0][0]) // size[1]
    return [[[sum(ch[i * kh + a][j * kw + b] for a in range(kh) for b in range(kw)) / (kh * kw)
              for j in range(size[1])] for i in range(size[0])] for ch in x]


def _bilinear_ref(x, size):
    """align_corners=False bilinear resize, x a nested list (C, H, W)."""
    def coords(n_out, n_in):
        out = []
        for i in range(n_out):
            src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
            i0 = min(int(math.floor(src)), n_in - 1)
            out.append((i0, min(i0 + 1, n_in - 1), src - i0))
        return out
    rows, cols = coords(size[0], len(x[0])), coords(size[1], len(x[0][0]))
    def at(ch, y0, y1, fy, x0, x1, fx):
        top = (1 - fx) * ch[y0][x0] + fx * ch[y0][x1]
        return (1 - fy) * top + fy * ((1 - fx) * ch[y1][x0] + fx * ch[y1][x1])
    return [[[at(ch, *r, *c) for c in cols] for r in rows] for ch in x]


def _connector_ref(conn, x):
    """Resize, then 1x1 conv + BatchNorm with batch statistics (biased variance, eps 1e-5), in Python."""
    size = conn.out_shape[1:]
    rows = x.tolist()
    if tuple(x.shape[2:]) != tuple(size):
        down = x.shape[2] >= size[0] and x.shape[3] >= size[1]
        rows = [(_pool_ref if down else _bilinear_ref)(r, size) for r in rows]
    if conn.proj is None:
        return torch.tensor(rows, dtype=torch.float64)
    w = conn.proj[0].weight.detach()[:, :, 0, 0].tolist()
    gamma, beta = conn.proj[1].weight.tolist(), conn.proj[1].bias.tolist()
    h, wd = size
    y = [[[[sum(w[o][c] * r[c][i][j] for c in range(len(r))) for j in range(wd)] for i in range(h)]
          for o in range(len(w))] for r in rows]
    out = y
    for o in range(len(w)):
        vals = [y[n][o][i][j] for n in range(len(y)) for i in range(h) for j in range(wd)]
        mean = sum(vals) / len(vals)
        var = sum((v - mean) ** 2 for v in vals) / len(vals)
        for n in range(len(y)):
            for i in range(h):
                for j in range(wd):
                    out[n][o][i][j] = gamma[o] * (y[n][o][i][j] - mean) / math.sqrt(var + 1e-5) + beta[o]
    return torch.tensor(out, dtype=torch.float64)


# (student (C, H, W), teacher (C, H, W)): channels and/or sizes differ, or nothing does
CONNECTOR_CASES = [((3, 4, 4), (5, 4, 4)), ((3, 8, 8), (3, 4, 4)), ((2, 8, 6), (4, 4, 3)),
                   ((3, 2, 2), (5, 4, 4)), ((2, 3, 5), (2, 4, 4)), ((3, 4, 4), (3, 4, 4))]


@pytest.mark.parametrize("s_shape, t_shape", CONNECTOR_CASES)
def test_module_matches_reference_connectors(s_shape, t_shape):
    torch.manual_seed(0)
    m = ExtendedKDLoss([s_shape, (2, 2, 2)], [t_shape, (2, 2, 2)], weights=[2.0, 1.0]).double()
    conn = m.connectors[0]
    assert (conn.proj is None) == (s_shape[0] == t_shape[0])
    if conn.proj is not None:
        with torch.no_grad():  # non-trivial affine parameters
            conn.proj[1].weight.uniform_(0.5, 1.5)
            conn.proj[1].bias.normal_()
    xs, xt = _maps(1, [(3, *s_shape), (3, 2, 2, 2)]), _maps(2, [(3, *t_shape), (3, 2, 2, 2)])
    mapped = _connector_ref(conn, xs[0])
    torch.testing.assert_close(conn(xs[0]), mapped, rtol=1e-10, atol=1e-12)
    expected = (2.0 * _mse(mapped, xt[0]) + _mse(xs[1], xt[1])) / 3.0
    assert m(None, xs, xt).item() == pytest.approx(expected, rel=1e-10)


def test_gradcheck_and_teacher_detached():
    fs = [f.requires_grad_(True) for f in _maps(0, [(2, 3, 2, 2), (2, 2, 3)])]
    ft = [f.requires_grad_(True) for f in _maps(1, [(2, 3, 2, 2), (2, 2, 3)])]
    assert torch.autograd.gradcheck(lambda a, b: extended_kd_loss([a, b], ft, weights=[1.0, 3.0]), tuple(fs))
    extended_kd_loss(fs, ft).backward()
    assert all(t.grad is None for t in ft)
    m = ExtendedKDLoss([(3, 4, 4), (2, 2, 2)], [(5, 2, 2), (2, 4, 4)]).double()
    xs = [x.requires_grad_(True) for x in _maps(2, [(4, 3, 4, 4), (4, 2, 2, 2)])]
    xt = _maps(3, [(4, 5, 2, 2), (4, 2, 4, 4)])
    assert torch.autograd.gradcheck(lambda a, b: m(None, [a, b], xt), tuple(xs))


def test_registered_module_trains_its_connectors_and_keeps_state():
    m = create_loss("extended_kd", student_shapes=[(4, 8, 8), (8, 4, 4)],
                    teacher_shapes=[(6, 8, 8), (8, 4, 4)], weights=[1, 2])
    assert isinstance(m, ExtendedKDLoss) and m.taps == "segments"
    assert m.requires == ("student_features", "teacher_features") and m.weights == [1.0, 2.0]
    assert m.connectors[1].proj is None  # equal shapes: no parameters
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    assert set(m.state_dict()) == {"connectors.0.proj.0.weight", *(f"connectors.0.proj.1.{k}" for k in bn)}
    s = [torch.randn(2, 4, 8, 8, requires_grad=True), torch.randn(2, 8, 4, 4, requires_grad=True)]
    loss = m(torch.randn(2, 3), s, [torch.randn(2, 6, 8, 8), torch.randn(2, 8, 4, 4)])
    loss.backward()
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert m.connectors[0].proj[0].weight.grad is not None and all(x.grad is not None for x in s)
    assert int(m.connectors[0].proj[1].num_batches_tracked) == 1


def test_half_precision_inputs_compute_in_float32():
    s, t = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    for dt in (torch.bfloat16, torch.float16):
        out = extended_kd_loss([s.to(dt)], [t.to(dt)])
        assert out.dtype == torch.float32
        assert out.item() == pytest.approx(extended_kd_loss([s.to(dt).float()], [t.to(dt).float()]).item(),
                                           rel=1e-6)
    m = ExtendedKDLoss([(3, 4, 4)], [(5, 2, 2)])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert m(None, [s.bfloat16()], [torch.randn(2, 5, 2, 2).bfloat16()]).dtype == torch.float32


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_inputs_give_nan(bad):
    fs, ft = _maps(0, [(2, 3, 2, 2), (2, 2, 2, 2)]), _maps(1, [(2, 3, 2, 2), (2, 2, 2, 2)])
    ft[1][1, 0, 1, 1] = bad
    assert torch.isnan(extended_kd_loss(fs, ft))
    assert torch.isnan(extended_kd_loss(fs, ft, weights=[1.0, 0.0]))  # a zero weight does not hide it
    m = ExtendedKDLoss([(3, 4, 4)], [(5, 2, 2)])
    x = torch.randn(2, 3, 4, 4)
    x[0, 1, 2, 3] = bad
    loss = m(None, [x.requires_grad_(True)], [torch.randn(2, 5, 2, 2)])
    assert torch.isnan(loss)
    loss.backward()


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (([torch.randn(2, 3, 4, 4)], [torch.randn(2, 3, 4, 2)]), {},
         r"segment 0: shape mismatch: student \(2, 3, 4, 4\) vs teacher \(2, 3, 4, 2\)"),
        (([torch.randn(2, 3, 4, 4)], [torch.randn(2, 3, 4, 4)] * 2), {},
         "1 segment outputs but teacher_feats has 2"),
        ((torch.randn(2, 3, 4, 4), [torch.randn(2, 3, 4, 4)]), {}, "non-empty list"),
        (([], []), {}, "non-empty list"),
        (([torch.randint(0, 3, (2, 3))], [torch.randn(2, 3)]), {}, "floating"),
        (([torch.randn(3)], [torch.randn(3)]), {}, r"shape \(N, \.\.\.\)"),
        (([torch.randn(2, 3)], [torch.randn(2, 3)]), {"weights": [1.0, 2.0]},
         "weights lists 2 values but there are 1"),
        (([torch.randn(2, 3)], [torch.randn(2, 3)]), {"weights": [-1.0]}, "finite numbers >= 0"),
        (([torch.randn(2, 3)] * 2, [torch.randn(2, 3)] * 2), {"weights": [0, 0]}, "not all 0"),
        (([torch.randn(2, 3)], [torch.randn(2, 3)]), {"weights": "1"}, "a number or a list"),
        (([torch.randn(2, 3)], [torch.randn(2, 3)]), {"weights": [math.nan]}, "finite"),
    ],
)
def test_bad_inputs(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        extended_kd_loss(*args, **kwargs)


def test_bad_shapes_name_the_fix():
    with pytest.raises(ValueError, match="student has 2 segment outputs and the teacher 1.*segments"):
        ExtendedKDLoss([(3, 4, 4), (3, 2, 2)], [(3, 4, 4)])
    with pytest.raises(ValueError, match="weights lists 3 values but there are 2 segments"):
        ExtendedKDLoss([(3, 4, 4), (3, 2, 2)], [(3, 4, 4), (3, 2, 2)], weights=[1, 2, 3])
    with pytest.raises(ValueError, match=r"no connector maps a student output \(3, 4\) to a teacher output"):
        SegmentConnector((3, 4), (5, 4))
    m = ExtendedKDLoss([(3, 4, 4)], [(5, 4, 4)])
    with pytest.raises(ValueError, match=r"built for a student output \(3, 4, 4\) got \(3, 6, 6\)"):
        m(None, [torch.randn(2, 3, 6, 6)], [torch.randn(2, 5, 4, 4)])
    with pytest.raises(ValueError, match="built for 1 segments but got 2 student and 1 teacher"):
        m(None, [torch.randn(2, 3, 4, 4)] * 2, [torch.randn(2, 5, 4, 4)])
    with pytest.raises(ValueError, match=r"segment 0: shape mismatch: student \(2, 5, 4, 4\) vs teacher"):
        m(None, [torch.randn(2, 3, 4, 4)], [torch.randn(2, 5, 2, 2)])
