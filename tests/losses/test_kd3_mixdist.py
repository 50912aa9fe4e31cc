"""mix_distribution / kd3_mixdist_loss / KD3MixDistLoss (KD³'s MixDistribution): per-element Python
references of the statistics mixing and of the InfoNCE, gradcheck, hypothesis properties, the draws being a
pure function of the step, the module on a real second student pass, and the bad-input contract."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unikd.engine.objective.context import StudentRerun
from unikd.losses import KD3MixDistLoss, create_loss, kd3_mixdist_loss, mix_distribution
from unikd.losses.kd3_mixdist import draw_mix
from unikd.models import create_model


def _t(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _mix_ref(x, perm, lam, eps=1e-6):
    """Naive: per (sample, channel) mean and unbiased variance in Python floats, then the affine map."""
    rows = x.tolist()

    def stats(ch):
        vals = [v for r in ch for v in r]
        mu = sum(vals) / len(vals)
        var = sum((v - mu) ** 2 for v in vals) / (len(vals) - 1)
        return mu, math.sqrt(var + eps)

    st_ = [[stats(ch) for ch in sample] for sample in rows]
    out = []
    for i, sample in enumerate(rows):
        j, lm = int(perm[i]), float(lam[i])
        chans = []
        for c, ch in enumerate(sample):
            (mu, sd), (mu_j, sd_j) = st_[i][c], st_[j][c]
            m2, s2 = lm * mu + (1 - lm) * mu_j, lm * sd + (1 - lm) * sd_j
            chans.append([[(v - mu) / sd * s2 + m2 for v in r] for r in ch])
        out.append(chans)
    return torch.tensor(out, dtype=torch.float64)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(1, 4), c=st.integers(1, 3), h=st.integers(1, 3),
       w=st.integers(2, 3))
def test_mix_matches_reference(seed, n, c, h, w):
    x = 2 * _t(seed, n, c, h, w) + 1
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    lam = torch.rand(n, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    torch.testing.assert_close(mix_distribution(x, perm, lam), _mix_ref(x, perm, lam), rtol=1e-10, atol=1e-12)


def test_mix_properties_and_gradcheck():
    x = _t(0, 4, 3, 4, 4)
    perm = torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(mix_distribution(x, perm, torch.ones(4, dtype=torch.float64)), x, rtol=1e-6,
                               atol=1e-6)  # lam 1 keeps x (up to eps)
    y = mix_distribution(x, perm, torch.zeros(4, dtype=torch.float64))  # lam 0: the partner's statistics
    torch.testing.assert_close(y.mean(dim=(2, 3)), x[perm].mean(dim=(2, 3)), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(y.std(dim=(2, 3)), x[perm].std(dim=(2, 3)), rtol=1e-5, atol=1e-6)
    # the statistics are constants (MixStyle detaches them), so the gradient is that of the affine map
    # x -> (x - mu) / sigma * sigma_mix + mu_mix: upstream * sigma_mix / sigma, elementwise
    lam = torch.full((4,), 0.3, dtype=torch.float64)
    xg, g = x.clone().requires_grad_(True), _t(9, 4, 3, 4, 4)
    (grad,) = torch.autograd.grad(mix_distribution(xg, perm, lam), xg, g)
    sd = (x.var(dim=(2, 3), keepdim=True) + 1e-6).sqrt()
    sd_mix = 0.3 * sd + 0.7 * sd[perm]
    torch.testing.assert_close(grad, g * sd_mix / sd, rtol=1e-12, atol=1e-12)


def _nce_ref(s, t, tau):
    """Naive InfoNCE: cosine similarities in Python floats, -log of the positive's softmax share."""
    def unit(r):
        norm = math.sqrt(sum(v * v for v in r))
        return [v / norm for v in r]
    u, v = [unit(r) for r in s.tolist()], [unit(r) for r in t.tolist()]
    total = 0.0
    for i, ui in enumerate(u):
        sims = [sum(a * b for a, b in zip(ui, vj)) / tau for vj in v]
        m = max(sims)
        total += -(sims[i] - m - math.log(sum(math.exp(x - m) for x in sims)))
    return total / len(u)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(1, 6), d=st.integers(1, 5), tau=st.floats(0.05, 2.0))
def test_infonce_matches_reference(seed, n, d, tau):
    s, t = _t(seed, n, d), _t(seed + 1, n, d)
    assert kd3_mixdist_loss(s, t, temperature=tau).item() == pytest.approx(_nce_ref(s, t, tau), rel=1e-10)


def test_infonce_properties_and_gradcheck():
    s, t = _t(0, 5, 3), _t(1, 5, 3)
    v = kd3_mixdist_loss(s, t).item()
    assert v >= 0 and kd3_mixdist_loss(s[:1], t[:1]).item() == 0.0  # one row: nothing to tell apart
    assert kd3_mixdist_loss(3 * s, 0.5 * t).item() == pytest.approx(v, rel=1e-10)  # row norms do not count
    perm = torch.tensor([4, 2, 0, 1, 3])
    assert kd3_mixdist_loss(s[perm], t[perm]).item() == pytest.approx(v, rel=1e-10)  # row order does not
    assert kd3_mixdist_loss(t, t, temperature=0.05).item() < v  # identical rows: close to the minimum
    sg, tg = s.clone().requires_grad_(True), t.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: kd3_mixdist_loss(a, b, temperature=0.3), (sg, tg))


def test_draws_are_a_pure_function_of_the_step():
    idx = torch.tensor([7, 3, 11, 0])
    a, b = draw_mix(idx, 2.25, 4, 0.1), draw_mix(idx.clone(), 2.25, 4, 0.1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert sorted(a[0].tolist()) == [0, 1, 2, 3] and bool(((a[1] >= 0) & (a[1] <= 1)).all())
    c = draw_mix(idx, 2.5, 4, 0.1)
    assert not (torch.equal(a[0], c[0]) and torch.equal(a[1], c[1]))


def test_module_on_a_second_student_pass():
    torch.manual_seed(0)
    student = create_model("tiny_cnn", num_classes=4, in_chans=1).double()
    rerun = StudentRerun(student, "stage1", "fc:input")
    m = create_loss("kd3_mixdist", in_features=64, teacher_in_features=8, student_shapes=[(16, 8, 8)],
                    student_rerun=rerun, alpha=0.3, temperature=0.2, feat_dim=5).double()
    assert isinstance(m, KD3MixDistLoss) and m.taps == "mixdist"
    heads = {f"{h}_head.{p}" for h in ("student", "teacher") for p in ("weight", "bias")}
    assert set(m.state_dict()) == heads
    images, teacher = _t(1, 6, 1, 8, 8), _t(2, 6, 8)
    idx = torch.arange(6)
    loss = m(None, teacher, images, idx, 1.5)
    # the same computation by hand: the hook replaces stage1's output with its mixed version
    perm, lam = draw_mix(idx, 1.5, 6, 0.3)
    captured = {}
    h1 = student.stage1.register_forward_hook(lambda mod, a, out: mix_distribution(out, perm, lam.double()))
    h2 = student.fc.register_forward_pre_hook(lambda mod, a: captured.update(f=a[0]))
    student(images)
    h1.remove(), h2.remove()
    expected = kd3_mixdist_loss(m.student_head(captured["f"]), m.teacher_head(teacher), temperature=0.2)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    loss.backward()
    assert student.stage1[0].weight.grad is not None and m.teacher_head.weight.grad is not None
    assert not student.stage1._forward_hooks and not student.fc._forward_pre_hooks  # hooks removed
    # one row (e.g. all the selection kept): 0, without running the student again
    assert m(None, teacher[:1], images[:1], idx[:1], 1.5).item() == 0.0


def test_bad_inputs():
    x = torch.randn(3, 2, 4, 4)
    with pytest.raises(ValueError, match=r"floating \(N, C, H, W\)"):
        mix_distribution(torch.randn(3, 4), torch.arange(3), torch.ones(3))
    with pytest.raises(ValueError, match="permutation of 0..2"):
        mix_distribution(x, torch.tensor([0, 0, 1]), torch.ones(3))
    with pytest.raises(ValueError, match=r"weights in \[0, 1\]"):
        mix_distribution(x, torch.arange(3), torch.full((3,), 1.5))
    with pytest.raises(ValueError, match="at least 2 positions"):
        mix_distribution(torch.randn(3, 2, 1, 1), torch.arange(3), torch.ones(3))
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        kd3_mixdist_loss(torch.randn(2, 3), torch.randn(2, 3), temperature=0)
    with pytest.raises(ValueError, match="map both to one width"):
        kd3_mixdist_loss(torch.randn(2, 3), torch.randn(2, 4))
    with pytest.raises(ValueError, match="batch mismatch"):
        kd3_mixdist_loss(torch.randn(2, 3), torch.randn(3, 3))
    rerun = lambda images, perturb: images  # noqa: E731
    with pytest.raises(ValueError, match="one .C, H, W. student feature map"):
        KD3MixDistLoss(4, 4, [(3, 4, 4), (3, 2, 2)], rerun)
    with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
        KD3MixDistLoss(4, 4, [(3, 4, 4)], rerun, alpha=0.0)
    with pytest.raises(ValueError, match="harness's callable"):
        KD3MixDistLoss(4, 4, [(3, 4, 4)], torch.nn.Linear(2, 2))
