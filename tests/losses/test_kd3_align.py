"""kd3_align_loss / KD3AlignLoss (KD³'s knowledge memorization): a float64 per-element reference of the
weighted feature part and the classifier-parameter part (through the projector), gradcheck, hypothesis
properties, the bad-input contract and the module's state (the projector is its own; the heads are not)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unikd.losses import KD3AlignLoss, create_loss, kd3_align_loss


def _t(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _ref(s, t, ws, wt, bs, bt, w, head_weight):
    """Naive: Python floats, sum_i w_i mean_d (s-t)^2 / sum_i w_i + head_weight * mean of squared
    differences over the weight entries and (when both exist) the biases."""
    s, t, w = s.tolist(), t.tolist(), [1.0] * len(s.tolist()) if w is None else w.tolist()
    per = [sum((a - b) ** 2 for a, b in zip(si, ti)) / len(si) for si, ti in zip(s, t)]
    feature = sum(wi * p for wi, p in zip(w, per)) / sum(w) if sum(w) > 0 else 0.0
    diffs = [(a - b) ** 2 for ra, rb in zip(ws.tolist(), wt.tolist()) for a, b in zip(ra, rb)]
    if bs is not None and bt is not None:
        diffs += [(a - b) ** 2 for a, b in zip(bs.tolist(), bt.tolist())]
    return feature + head_weight * sum(diffs) / len(diffs)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(1, 5), d=st.integers(1, 4), c=st.integers(2, 4),
       ds=st.integers(1, 4), bias=st.booleans(), weighted=st.booleans(), head_weight=st.floats(0.0, 5.0))
def test_matches_reference(seed, n, d, c, ds, bias, weighted, head_weight):
    s, t = _t(seed, n, d), _t(seed + 1, n, d)
    ws, wt = _t(seed + 2, c, ds), _t(seed + 3, c, ds)
    bs, bt = (_t(seed + 4, c), _t(seed + 5, c)) if bias else (None, None)
    w = _t(seed + 6, n).abs() + 0.01 if weighted else None
    got = kd3_align_loss(s, t, ws, wt, student_bias=bs, teacher_bias=bt, sample_weights=w,
                         head_weight=head_weight).item()
    assert got == pytest.approx(_ref(s, t, ws, wt, bs, bt, w, head_weight), rel=1e-12, abs=1e-14)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), scale=st.floats(0.1, 10.0), c=st.floats(0.01, 100.0))
def test_properties(seed, scale, c):
    s, t, ws, wt = _t(seed, 6, 3), _t(seed + 1, 6, 3), _t(seed + 2, 4, 5), _t(seed + 3, 4, 5)
    w = torch.tensor([1.0, 0.0, 2.0, 0.5, 0.0, 1.0], dtype=torch.float64)
    v = kd3_align_loss(s, t, ws, wt, sample_weights=w).item()
    assert v >= 0 and kd3_align_loss(s, s, ws, ws).item() == 0.0
    # the weights are relative; rows of weight 0 do not count; the whole loss scales quadratically
    assert kd3_align_loss(s, t, ws, wt, sample_weights=c * w).item() == pytest.approx(v, rel=1e-10)
    keep = w > 0
    feature = kd3_align_loss(s[keep], t[keep], ws, wt, sample_weights=w[keep], head_weight=0.0).item()
    assert kd3_align_loss(s, t, ws, wt, sample_weights=w, head_weight=0.0).item() == pytest.approx(feature)
    scaled = kd3_align_loss(scale * s, scale * t, scale * ws, scale * wt, sample_weights=w).item()
    assert scaled == pytest.approx(scale**2 * v, rel=1e-9)
    # mask weights equal the plain mean over the kept rows
    mask = keep.double()
    assert kd3_align_loss(s, t, ws, wt, sample_weights=mask, head_weight=0.0).item() == pytest.approx(
        ((s[keep] - t[keep]) ** 2).mean().item(), rel=1e-12)


def test_gradcheck_and_teacher_feature_detached():
    s, t = _t(0, 3, 4).requires_grad_(True), _t(1, 3, 4).requires_grad_(True)
    ws, wt, bs = (x.requires_grad_(True) for x in (_t(2, 2, 5), _t(3, 2, 5), _t(4, 2)))
    w = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    fn = lambda a, b, c, d: kd3_align_loss(a, t, b, c, student_bias=d, teacher_bias=_t(5, 2),  # noqa: E731
                                            sample_weights=w, head_weight=0.7)
    assert torch.autograd.gradcheck(fn, (s, ws, wt, bs))
    kd3_align_loss(s, t, ws, wt).backward()
    assert t.grad is None and wt.grad is not None  # W_T P carries the projector's gradient


def _module(ds=4, dt=6, c=3, bias=True):
    student = torch.nn.Linear(ds, c, bias=bias).double()
    teacher = torch.nn.Linear(dt, c).double()
    m = KD3AlignLoss(ds, dt, lambda: (student.weight, student.bias), lambda: (teacher.weight, teacher.bias),
                     head_weight=0.5).double()
    return m, student, teacher


def test_module_matches_reference_through_the_projector():
    m, student, teacher = _module()
    fs, ft, w = _t(0, 5, 4), _t(1, 5, 6), torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    p = m.proj.weight.detach()
    expected = _ref(fs @ p.T, ft, student.weight.detach(), teacher.weight.detach() @ p,
                    student.bias.detach(), teacher.bias.detach(), w, 0.5)
    assert m(None, fs, ft, w).item() == pytest.approx(expected, rel=1e-12)
    fs.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: m(None, a, ft, w), (fs,))


def test_module_trains_the_student_classifier_and_projector_not_the_teacher():
    m, student, teacher = _module(ds=4, dt=4)
    assert torch.equal(m.proj.weight, torch.eye(4, dtype=torch.float64))  # equal widths: the identity first
    assert set(m.state_dict()) == {"proj.weight"}  # the networks' classifiers are not the module's
    assert [n for n, _ in m.named_parameters()] == ["proj.weight"]
    loss = m(None, _t(0, 3, 4).requires_grad_(True), _t(1, 3, 4), torch.ones(3, dtype=torch.float64))
    loss.backward()
    assert student.weight.grad is not None and student.bias.grad is not None
    assert m.proj.weight.grad is not None
    assert teacher.weight.grad is None and teacher.bias.grad is None
    reg = create_loss("kd3_align", in_features=4, teacher_in_features=6,
                      student_head=lambda: (student.weight, None),
                      teacher_head=lambda: (teacher.weight, None))
    assert reg.requires == ("student_embedding", "teacher_embedding", "sample_weights")
    assert tuple(reg.proj.weight.shape) == (6, 4)


def test_half_precision_and_float32_output():
    s, t = torch.randn(3, 4), torch.randn(3, 4)
    ws, wt = torch.randn(2, 4), torch.randn(2, 4)
    for dt in (torch.bfloat16, torch.float16):
        out = kd3_align_loss(s.to(dt), t.to(dt), ws, wt)
        assert out.dtype == torch.float32
        assert out.item() == pytest.approx(kd3_align_loss(s.to(dt).float(), t.to(dt).float(), ws, wt).item(),
                                           rel=1e-6)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_inputs_give_nan(bad):
    s, t, ws, wt = _t(0, 3, 4), _t(1, 3, 4), _t(2, 2, 4), _t(3, 2, 4)
    t[1, 2] = bad
    assert torch.isnan(kd3_align_loss(s, t, ws, wt))
    wt2 = _t(3, 2, 4)
    wt2[0, 0] = bad
    assert torch.isnan(kd3_align_loss(s, _t(1, 3, 4), ws, wt2))


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((torch.randn(3, 4), torch.randn(3, 5), torch.randn(2, 4), torch.randn(2, 4)), {},
         "project the student's features"),
        ((torch.randn(3, 4), torch.randn(2, 4), torch.randn(2, 4), torch.randn(2, 4)), {}, "batch mismatch"),
        ((torch.randn(3, 4), torch.randn(3, 4), torch.randn(2, 4), torch.randn(2, 3)), {}, r"W_T @ P"),
        ((torch.randn(3, 4), torch.randn(3, 4), torch.randn(4), torch.randn(2, 4)), {},
         r"\(C, D\) classifier"),
        ((torch.randn(3, 4), torch.randn(3, 4), torch.randn(2, 4), torch.randn(2, 4)),
         {"sample_weights": torch.ones(2)}, r"sample_weights must be a floating \(N,\) = \(3,\)"),
        ((torch.randn(3, 4), torch.randn(3, 4), torch.randn(2, 4), torch.randn(2, 4)),
         {"sample_weights": -torch.ones(3)}, "must be >= 0"),
        ((torch.randn(3, 4), torch.randn(3, 4), torch.randn(2, 4), torch.randn(2, 4)),
         {"head_weight": -1.0}, "head_weight must be a finite number >= 0"),
        ((torch.randn(3, 4), torch.randn(3, 4), torch.randn(2, 4), torch.randn(2, 4)),
         {"student_bias": torch.randn(3), "teacher_bias": torch.randn(2)}, r"must have shape \(2,\)"),
        ((torch.randn(3, 4, 2), torch.randn(3, 4), torch.randn(2, 4), torch.randn(2, 4)), {},
         r"shape \(N, D\)"),
    ],
)
def test_bad_inputs(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        kd3_align_loss(*args, **kwargs)


def test_bad_construction():
    lin = torch.nn.Linear(4, 3)
    with pytest.raises(ValueError, match="not a module"):
        KD3AlignLoss(4, 4, lin, lambda: (lin.weight, lin.bias))
