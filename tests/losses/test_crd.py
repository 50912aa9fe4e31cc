"""crd_loss / CRDLoss: paper reference, multi-step parity with the reference code (bank updates included),
gradcheck, the negative sampler, exact resume, bad inputs."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _feature_refs import crd_ref
from _upstream_refs import MdCRD, md_exact_contrast_idx
from hypothesis import given, settings
from hypothesis import strategies as st

from unikd.losses import CRDLoss, crd_loss, create_loss

T32 = float(np.float32(0.07))  # the reference keeps T in a float32 buffer


def _bank_case(seed, n, b, k, f=6):
    g = torch.Generator().manual_seed(seed)
    vs = F.normalize(torch.randn(b, f, dtype=torch.float64, generator=g), dim=1)
    vt = F.normalize(torch.randn(b, f, dtype=torch.float64, generator=g), dim=1)
    ms = F.normalize(torch.randn(n, f, dtype=torch.float64, generator=g), dim=1)
    mt = F.normalize(torch.randn(n, f, dtype=torch.float64, generator=g), dim=1)
    idx = torch.randint(0, n, (b, k + 1), generator=g)
    z = torch.rand(2, dtype=torch.float64, generator=g) * 10 + 0.5
    return vs, vt, ms, mt, idx, z


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(5, 40),
    b=st.integers(1, 4),
    k=st.integers(1, 12),
    t=st.sampled_from([0.07, 0.5, 1.0]),
)
def test_matches_paper_reference(seed, n, b, k, t):
    # n small against k takes the (B, n)-product path of the scores, n large the row-gather path
    vs, vt, ms, mt, idx, z = _bank_case(seed, n, b, k)
    got = crd_loss(vs, vt, ms, mt, idx, z, temperature=t).item()
    assert got == pytest.approx(crd_ref(vs, vt, ms, mt, idx, z, temperature=t), rel=1e-10)


def test_score_paths_agree():
    vs, vt, ms, mt, idx, z = _bank_case(0, 30, 3, 5)
    small = crd_loss(vs, vt, ms, mt, idx, z)  # 30 > 4 * 6: gather
    wide = torch.cat([idx, idx[:, 1:], idx[:, 1:]], dim=1)  # K = 15, 30 <= 64: product
    ref = crd_ref(vs, vt, ms, mt, wide, z)
    assert small.item() == pytest.approx(crd_ref(vs, vt, ms, mt, idx, z), rel=1e-12)
    assert crd_loss(vs, vt, ms, mt, wide, z).item() == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("n", [12, 200])
def test_gradcheck(n):
    vs, vt, ms, mt, idx, z = _bank_case(1, n, 3, 6)
    vs.requires_grad_(True)
    vt.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: crd_loss(a, b, ms, mt, idx, z, temperature=0.5), (vs, vt))


def _labels(n, classes, seed=0):
    return torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(seed))


def _pair(seed, s_dim, t_dim, f, n, k, labels):
    """The reference and our module built from one seed, in float64 (the reference's order of RNG use)."""
    torch.manual_seed(seed)
    ref = MdCRD(s_dim, t_dim, f, n, k, t=0.07, momentum=0.5).double()
    torch.manual_seed(seed)
    ours = CRDLoss(s_dim, t_dim, n, labels, feat_dim=f, num_negatives=k, temperature=T32).double()
    return ref, ours


PARAM_MAP = {
    "student_head.weight": "embed_s.linear.weight",
    "student_head.bias": "embed_s.linear.bias",
    "teacher_head.weight": "embed_t.linear.weight",
    "teacher_head.bias": "embed_t.linear.bias",
}


@pytest.mark.parametrize("k", [40, 60, 170])  # row-gather path, (B, n)-product path, draws with replacement
def test_parity_with_reference_code_over_several_steps(k):
    # HobbitLong/RepDistiller @ b84f547c crd/memory.py + crd/criterion.py == megvii-research/mdistiller @
    # a08d46f1 mdistiller/distillers/CRD.py; negatives as mdistiller/dataset/cifar100.py mode "exact".
    n, s_dim, t_dim, f, b = 200, 12, 20, 16, 8
    labels = torch.arange(n) % 5  # 40 per class, 160 in every pool
    ref, ours = _pair(7, s_dim, t_dim, f, n, k, labels)
    # one seed gives one initial state: heads and banks
    for mine, theirs in PARAM_MAP.items():
        assert torch.equal(ours.state_dict()[mine], ref.state_dict()[theirs])
    assert torch.equal(ours.memory_student, ref.contrast.memory_v1)
    assert torch.equal(ours.memory_teacher, ref.contrast.memory_v2)
    rng = np.random.default_rng(0)
    g = torch.Generator().manual_seed(1)
    for step in range(5):
        idx = torch.from_numpy(rng.choice(n, b, replace=False))
        cidx = torch.from_numpy(
            np.stack([md_exact_contrast_idx(labels.numpy(), int(i), k, rng) for i in idx])
        )
        fs = torch.randn(b, s_dim, dtype=torch.float64, generator=g)
        ft = torch.randn(b, t_dim, dtype=torch.float64, generator=g)
        a, c = fs.clone().requires_grad_(True), fs.clone().requires_grad_(True)
        ours.zero_grad()
        ref.zero_grad()
        mine = ours(None, a, ft, idx, cidx)
        theirs = ref(c, ft, idx, cidx)
        mine.backward()
        theirs.sum().backward()
        assert mine.item() == pytest.approx(theirs.item(), rel=1e-12), step
        torch.testing.assert_close(a.grad, c.grad, rtol=1e-10, atol=1e-13)
        for p_mine, p_theirs in PARAM_MAP.items():
            pm, pt = ours.get_parameter(p_mine), ref.get_parameter(p_theirs)
            torch.testing.assert_close(pm.grad, pt.grad, rtol=1e-10, atol=1e-13)
            with torch.no_grad():  # one SGD step on both, so later steps see trained heads
                pm -= 0.5 * pm.grad
                pt -= 0.5 * pt.grad
        torch.testing.assert_close(ours.memory_student, ref.contrast.memory_v1, rtol=1e-13, atol=1e-15)
        torch.testing.assert_close(ours.memory_teacher, ref.contrast.memory_v2, rtol=1e-13, atol=1e-15)
        torch.testing.assert_close(ours.normalisers, ref.contrast.params[2:4], rtol=1e-14, atol=0)


def test_default_temperature_differs_from_float32_rounded_reference_by_rounding_only():
    labels = _labels(100, 4)
    torch.manual_seed(0)
    a = CRDLoss(6, 6, 100, labels, feat_dim=8, num_negatives=20)
    b = CRDLoss(6, 6, 100, labels, feat_dim=8, num_negatives=20, temperature=T32)
    b.load_state_dict(a.state_dict())
    x, y, idx = torch.randn(4, 6), torch.randn(4, 6), torch.arange(4)
    cidx = a.sample(idx)
    assert a(None, x, y, idx, cidx).item() == pytest.approx(b(None, x, y, idx, cidx).item(), rel=1e-6)


def test_exact_sampler():
    n, k = 300, 50
    labels = _labels(n, 6, seed=3)
    m = CRDLoss(4, 4, n, labels, feat_dim=4, num_negatives=k)
    idx = torch.arange(0, n, 7)
    c = m.sample(idx)
    assert c.shape == (len(idx), k + 1) and c.dtype == torch.int64
    assert torch.equal(c[:, 0], idx)
    neg = c[:, 1:]
    assert bool((labels[neg] != labels[idx].unsqueeze(1)).all())  # only other classes
    assert all(len(set(r)) == k for r in neg.tolist())  # distinct: every pool holds >= k samples
    # more negatives than the other classes hold: drawn with replacement, still only other classes
    few = CRDLoss(4, 4, 12, torch.arange(12) % 3, feat_dim=4, num_negatives=20)
    c = few.sample(torch.tensor([0, 1, 5]))
    assert c.shape == (3, 21) and bool((c[:, 1:] % 3 != torch.tensor([0, 1, 2]).unsqueeze(1)).all())


def test_exact_sampler_is_uniform_over_the_other_classes():
    n, k, rows = 24, 6, 4000
    labels = torch.arange(n) % 3  # pool of sample 0: the 16 samples of classes 1 and 2
    torch.manual_seed(0)
    m = CRDLoss(4, 4, n, labels, feat_dim=4, num_negatives=k)
    neg = m.sample(torch.zeros(rows, dtype=torch.long))[:, 1:]
    counts = torch.bincount(neg.flatten(), minlength=n).double()
    pool = labels != 0
    assert counts[~pool].sum() == 0
    expected = rows * k / int(pool.sum())  # each pool member with probability k / 16 per row
    sd = (rows * (k / 16) * (1 - k / 16)) ** 0.5
    assert float((counts[pool] - expected).abs().max()) < 5 * sd


def test_uniform_sampler_and_module_contract():
    m = create_loss(
        "crd",
        in_features=5,
        teacher_in_features=7,
        num_samples=50,
        negatives="uniform",
        feat_dim=8,
        num_negatives=30,
    )
    assert m.requires == ("student_embedding", "teacher_embedding", "indices")
    c = m.sample(torch.tensor([3, 9]))
    assert torch.equal(c[:, 0], torch.tensor([3, 9])) and int(c.min()) >= 0 and int(c.max()) < 50
    names = {n for n, _ in m.named_parameters()}
    assert names == {"student_head.weight", "student_head.bias", "teacher_head.weight", "teacher_head.bias"}
    assert set(m.state_dict()) == names | {"memory_student", "memory_teacher", "normalisers"}


def _steps(m, idxs, g):
    out = []
    for idx in idxs:
        x = torch.randn(len(idx), 6, generator=g)
        y = torch.randn(len(idx), 9, generator=g)
        out.append(m(None, x, y, idx).item())
    return out


def test_exact_resume_of_bank_normalisers_and_negative_draws():
    n = 120
    labels = _labels(n, 4, seed=5)
    idxs = [torch.randperm(n, generator=torch.Generator().manual_seed(s))[:8] for s in range(6)]
    torch.manual_seed(11)
    a = CRDLoss(6, 9, n, labels, feat_dim=8, num_negatives=40)
    g = torch.Generator().manual_seed(2)
    _steps(a, idxs[:3], g)
    state = {k: v.clone() for k, v in a.state_dict().items()}
    rng, g_state = torch.get_rng_state(), g.get_state()
    cont = _steps(a, idxs[3:], g)
    torch.manual_seed(999)  # a fresh process: other initial weights and banks
    b = CRDLoss(6, 9, n, labels, feat_dim=8, num_negatives=40)
    b.load_state_dict(state)
    torch.set_rng_state(rng)
    g.set_state(g_state)
    assert _steps(b, idxs[3:], g) == cont
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key


def test_bank_update_only_in_training_and_rows_stay_unit_norm():
    n = 60
    m = CRDLoss(4, 4, n, _labels(n, 3), feat_dim=5, num_negatives=10)
    before = m.memory_student.clone()
    idx = torch.tensor([1, 4, 9])
    m.eval()
    m(None, torch.randn(3, 4), torch.randn(3, 4), idx)
    assert torch.equal(m.memory_student, before)
    assert bool((m.normalisers > 0).all())  # Z is set from the first batch in any mode
    z = m.normalisers.clone()
    m.train()
    m(None, torch.randn(3, 4), torch.randn(3, 4), idx)
    changed = (m.memory_student != before).any(dim=1)
    assert changed.nonzero().flatten().tolist() == [1, 4, 9]
    torch.testing.assert_close(m.memory_student[idx].norm(dim=1), torch.ones(3))
    torch.testing.assert_close(m.memory_teacher[idx].norm(dim=1), torch.ones(3))
    assert torch.equal(m.normalisers, z)


def test_half_inputs_compute_in_float32_and_gradients_reach_the_heads():
    m = CRDLoss(4, 6, 40, _labels(40, 2), feat_dim=5, num_negatives=8)
    x = torch.randn(3, 4).to(torch.bfloat16).requires_grad_(True)
    loss = m(None, x, torch.randn(3, 6).half(), torch.tensor([0, 1, 2]))
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert (
        x.grad is not None
        and m.student_head.weight.grad is not None
        and m.teacher_head.weight.grad is not None
    )


@pytest.mark.parametrize(
    "build, call, match",
    [
        (dict(train_labels=None), None, "needs train_labels"),
        (dict(momentum=1.0), None, "momentum"),
        (dict(negatives="relax"), None, "negatives must be one of"),
        (dict(train_labels=torch.zeros(30, dtype=torch.long)), None, "single class"),
        (dict(train_labels=torch.zeros(29, dtype=torch.long)), None, "shape \\(num_samples,\\)"),
        ({}, lambda m: m(None, torch.randn(2, 5), torch.randn(2, 4), torch.tensor([0, 1])), "width 5"),
        ({}, lambda m: m(None, torch.randn(2, 4), torch.randn(2, 4), torch.tensor([0, 30])), "out of range"),
        ({}, lambda m: m(None, torch.randn(2, 4), torch.randn(2, 4), torch.tensor([0.0, 1.0])), "int64"),
        (
            {},
            lambda m: m(
                None,
                torch.randn(2, 4),
                torch.randn(2, 4),
                torch.tensor([0, 1]),
                torch.zeros(2, 3, dtype=torch.long),
            ),
            "contrast_idx",
        ),
    ],
)
def test_bad_inputs(build, call, match):
    kw = dict(train_labels=torch.arange(30) % 3, feat_dim=4, num_negatives=5) | build
    with pytest.raises(ValueError, match=match):
        m = CRDLoss(4, 4, 30, **kw)
        call(m)
