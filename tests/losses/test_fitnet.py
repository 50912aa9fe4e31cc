"""fitnet_loss / FitNetLoss: float64 per-element reference, parity with the benchmark code (mdistiller
a08d46f, mdistiller/distillers/FitNet.py + _common.py ConvReg; see _mdistiller_refs.py), gradcheck,
properties and bad inputs."""

import pytest
import torch
from _mdistiller_refs import convreg_rule, mdistiller_fitnet_loss
from hypothesis import given, settings
from hypothesis import strategies as st

from unikd.losses import FitNetLoss, HintRegressor, create_loss, fitnet_loss


def _maps(seed, shape, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype)


def _ref(s, t):
    """Naive: the average of squared differences over every element, in Python floats."""
    a, b = s.double().flatten().tolist(), t.double().flatten().tolist()
    return sum((x - y) ** 2 for x, y in zip(a, b)) / len(a)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(1, 4), c=st.integers(1, 5), h=st.integers(1, 4))
def test_matches_reference(seed, n, c, h):
    s, t = _maps(seed, (n, c, h, h)), _maps(seed + 1, (n, c, h, h))
    assert fitnet_loss(s, t).item() == pytest.approx(_ref(s, t), rel=1e-12, abs=1e-15)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), scale=st.floats(0.1, 10.0))
def test_properties(seed, scale):
    s, t = _maps(seed, (3, 4, 2, 2)), _maps(seed + 1, (3, 4, 2, 2))
    v = fitnet_loss(s, t).item()
    assert v >= 0 and fitnet_loss(t, s).item() == pytest.approx(v, rel=1e-12)
    assert fitnet_loss(s, s).item() == 0.0
    assert fitnet_loss(scale * s, scale * t).item() == pytest.approx(scale**2 * v, rel=1e-9)


def test_gradcheck_and_teacher_detached():
    s = _maps(0, (2, 3, 2, 2)).requires_grad_(True)
    t = _maps(1, (2, 3, 2, 2)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: fitnet_loss(a, t), (s,))
    fitnet_loss(s, t).backward()
    assert t.grad is None
    m = FitNetLoss(student_shapes=[(3, 4, 4)], teacher_shapes=[(5, 2, 2)]).double()
    x = _maps(2, (4, 3, 4, 4)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: m(None, [a], [_maps(3, (4, 5, 2, 2))]), (x,))


# (student (C, H, W), teacher (C, H, W)): the four regressor rules of the benchmark code
SHAPE_CASES = [((3, 4, 4), (5, 4, 4)), ((3, 8, 8), (5, 4, 4)), ((3, 4, 4), (5, 8, 8)), ((3, 6, 5), (5, 4, 4))]


@pytest.mark.parametrize("s_shape, t_shape", SHAPE_CASES)
def test_parity_with_benchmark_code(s_shape, t_shape):
    torch.manual_seed(0)
    m = FitNetLoss(student_shapes=[s_shape], teacher_shapes=[t_shape]).double()
    reg = m.regressor
    kind, kernel, stride, padding = convreg_rule(s_shape, t_shape)
    assert isinstance(reg.conv, torch.nn.ConvTranspose2d if kind == "transposed" else torch.nn.Conv2d)
    assert (tuple(reg.conv.kernel_size), reg.conv.stride[0], reg.conv.padding[0]) == (kernel, stride, padding)
    assert reg.conv.bias is not None and isinstance(reg.bn, torch.nn.BatchNorm2d)

    params = {
        "conv_weight": reg.conv.weight.detach().clone().requires_grad_(True),
        "conv_bias": reg.conv.bias.detach().clone().requires_grad_(True),
        "bn_weight": (torch.rand(t_shape[0], dtype=torch.float64) + 0.5).requires_grad_(True),
        "bn_bias": torch.randn(t_shape[0], dtype=torch.float64).requires_grad_(True),
        "running_mean": reg.bn.running_mean.clone(),
        "running_var": reg.bn.running_var.clone(),
    }
    with torch.no_grad():
        reg.bn.weight.copy_(params["bn_weight"])
        reg.bn.bias.copy_(params["bn_bias"])
    xs = _maps(5, (6, *s_shape)).requires_grad_(True)
    xr = xs.detach().clone().requires_grad_(True)
    ft = _maps(6, (6, *t_shape))
    for _ in range(2):  # twice: the running statistics must follow too
        ours = m(torch.zeros(6, 10), [xs], [ft])
        ref = mdistiller_fitnet_loss(xr, ft, params, (kind, kernel, stride, padding))
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=0)
        ours.backward()
        ref.backward()
    torch.testing.assert_close(xs.grad, xr.grad, rtol=1e-10, atol=1e-14)
    grads = {"conv_weight": reg.conv.weight, "conv_bias": reg.conv.bias, "bn_weight": reg.bn.weight,
             "bn_bias": reg.bn.bias}
    for name, p in grads.items():
        torch.testing.assert_close(p.grad, params[name].grad, rtol=1e-10, atol=1e-14, msg=name)
    torch.testing.assert_close(reg.bn.running_mean, params["running_mean"], rtol=1e-12, atol=0)
    torch.testing.assert_close(reg.bn.running_var, params["running_var"], rtol=1e-12, atol=0)


def test_module_is_the_registered_fitnet_and_trains_its_regressor():
    m = create_loss("fitnet", student_shapes=[(4, 8, 8)], teacher_shapes=[(6, 8, 8)])
    assert isinstance(m, FitNetLoss) and m.requires == ("student_features", "teacher_features")
    assert m.taps == "hint"
    assert isinstance(m.regressor.conv, torch.nn.Conv2d) and m.regressor.conv.kernel_size == (1, 1)
    s, t = torch.randn(2, 4, 8, 8, requires_grad=True), torch.randn(2, 6, 8, 8)
    loss = m(torch.randn(2, 3), [s], [t])
    loss.backward()
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert m.regressor.conv.weight.grad is not None and s.grad is not None


def test_half_precision_inputs_compute_in_float32():
    s, t = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    for dt in (torch.bfloat16, torch.float16):
        out = fitnet_loss(s.to(dt), t.to(dt))
        assert out.dtype == torch.float32
        assert out.item() == pytest.approx(fitnet_loss(s.to(dt).float(), t.to(dt).float()).item(), rel=1e-6)
    m = FitNetLoss(student_shapes=[(3, 4, 4)], teacher_shapes=[(3, 4, 4)])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert m(None, [s.bfloat16()], [t.bfloat16()]).dtype == torch.float32


@pytest.mark.parametrize(
    "args, match",
    [
        ((torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 2)), "shape mismatch"),
        ((torch.randint(0, 3, (2, 3)), torch.randn(2, 3)), "floating"),
        ((torch.randn(3), torch.randn(3)), r"shape \(N, \.\.\.\)"),
        ((torch.randn(2, 3), [1.0]), "torch.Tensor"),
    ],
)
def test_bad_inputs(args, match):
    with pytest.raises(ValueError, match=match):
        fitnet_loss(*args)


def test_bad_shapes_name_the_fix():
    with pytest.raises(ValueError, match="one hint per network.*taps.student.hint"):
        FitNetLoss(student_shapes=[(3, 4, 4), (3, 2, 2)], teacher_shapes=[(3, 4, 4)])
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        FitNetLoss(student_shapes=[(3, 4)], teacher_shapes=[(3, 4, 4)])
    with pytest.raises(ValueError, match="no hint regressor maps a student map of 2x2 to a teacher map"):
        HintRegressor((3, 2, 2), (3, 8, 8))
    m = FitNetLoss(student_shapes=[(3, 4, 4)], teacher_shapes=[(3, 4, 4)])
    with pytest.raises(ValueError, match="shapes differ from those at start-up"):
        m(None, [torch.randn(2, 3, 6, 6)], [torch.randn(2, 3, 4, 4)])
    with pytest.raises(ValueError, match="one student and one teacher hint"):
        m(None, [torch.randn(2, 3, 4, 4)] * 2, [torch.randn(2, 3, 4, 4)])
