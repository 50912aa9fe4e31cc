"""nd_loss / NDLoss: paper reference, parity with the authors' DirectNormLoss and EmbTrans, gradcheck,
properties, the three ways of getting the class means, bad inputs."""

import json

import pytest
import torch
from _feature_refs import arrays, nd_ref
from _upstream_refs import nd_direct_norm, nd_embtrans_fc1
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from unikd.losses import NDLoss, create_loss, nd_loss


@st.composite
def nd_cases(draw, max_n=5, max_d=5, max_c=4):
    n, d, c = draw(st.integers(1, max_n)), draw(st.integers(1, max_d)), draw(st.integers(2, max_c))
    s, t, mu = arrays(draw, (n, d)), arrays(draw, (n, d)), arrays(draw, (c, d))
    y = torch.tensor(draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    assume(
        bool((mu.norm(dim=1) > 1e-3).all())
        and bool((torch.maximum(s.norm(dim=1), t.norm(dim=1)) > 1e-3).all())
    )
    return s, t, mu, y


@settings(max_examples=30, deadline=None)
@given(case=nd_cases())
def test_matches_paper_reference(case):
    s, t, mu, y = case
    assert nd_loss(s, t, mu, y).item() == pytest.approx(nd_ref(s, t, mu, y), rel=1e-10, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(case=nd_cases())
def test_parity_with_authors_direct_norm_loss(case):
    # WangYZ1608/Knowledge-Distillation-via-ND @ fc6f3f90, CIFAR/utils.py DirectNormLoss (nd_loss_factor 1),
    # class means as their center_emb_train.json dict.
    s, t, mu, y = case
    assume(bool(((s.norm(dim=1) - t.norm(dim=1)).abs() > 1e-9).all()))  # max() has no gradient at a tie
    means = {str(c): row for c, row in enumerate(mu.tolist())}
    a, b = s.clone().requires_grad_(True), s.clone().requires_grad_(True)
    ours, theirs = nd_loss(a, t, mu, y), nd_direct_norm(b, t, means, y)
    ours.backward()
    theirs.backward()
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-12, abs=1e-14)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-13)


def test_gradcheck_and_teacher_detached():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(4, 3, dtype=torch.float64, generator=g, requires_grad=True)
    t = torch.randn(4, 3, dtype=torch.float64, generator=g, requires_grad=True)
    t.data[:2] *= 5  # some rows take the teacher's norm, some the student's
    mu = torch.randn(3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.tensor([0, 2, 1, 2])
    assert torch.autograd.gradcheck(lambda x: nd_loss(x, t, mu, y), (s,))
    nd_loss(s, t, mu, y).backward()
    assert t.grad is None and mu.grad is None


@settings(max_examples=30, deadline=None)
@given(case=nd_cases(), k=st.floats(0.01, 100.0), grow=st.floats(1.0, 10.0))
def test_bounds_zero_set_and_scale_invariance_of_the_means(case, k, grow):
    s, t, mu, y = case
    value = nd_loss(s, t, mu, y).item()
    assert -1e-12 <= value <= 2.0 + 1e-12
    assert nd_loss(s, t, k * mu, y).item() == pytest.approx(value, rel=1e-9, abs=1e-12)
    # aligned with the class mean and at least as long as the teacher: zero loss
    e = mu[y] / mu[y].norm(dim=1, keepdim=True)
    aligned = e * (t.norm(dim=1, keepdim=True) * grow + 1e-3)
    assert nd_loss(aligned, t, mu, y).item() == pytest.approx(0.0, abs=1e-12)
    # aligned but shorter than the teacher: 1 - ||s|| / ||t|| per sample
    assume(bool((t.norm(dim=1) > 1e-3).all()))
    short = e * (t.norm(dim=1, keepdim=True) / (grow + 1))
    expected = (1 - short.norm(dim=1) / t.norm(dim=1)).mean().item()
    assert nd_loss(short, t, mu, y).item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_soft_labels_use_the_argmax_class():
    s, t, mu = torch.randn(3, 4), torch.randn(3, 4), torch.randn(5, 4)
    y = torch.tensor([4, 0, 2])
    soft = 0.7 * torch.eye(5)[y] + 0.3 * torch.eye(5)[(y + 1) % 5]
    assert torch.equal(nd_loss(s, t, mu, soft), nd_loss(s, t, mu, y))


def test_module_contract_and_given_means():
    mu = torch.randn(4, 6)
    m = create_loss("nd", num_classes=4, in_features=6, teacher_in_features=6, class_means=mu)
    assert m.requires == ("student_embedding", "teacher_embedding", "target")
    assert m.projector is None and list(m.parameters()) == []
    s, t, y = torch.randn(5, 6), torch.randn(5, 6), torch.tensor([0, 1, 2, 3, 0])
    torch.testing.assert_close(m(None, s, t, y), nd_loss(s, t, mu, y))
    assert set(m.state_dict()) == {"class_sums", "class_counts", "fitted"}


def test_projector_matches_authors_embtrans():
    # WangYZ1608/Knowledge-Distillation-via-ND @ fc6f3f90, CIFAR/Models/embtrans_cifar.py: a student whose
    # width differs from the teacher's goes through BatchNorm1d -> Dropout(0.5) -> Linear (zero bias).
    mu = torch.randn(3, 8).double()  # float32 values: the buffers are float32 until .double()
    m = NDLoss(3, 5, 8, class_means=mu).double()
    fc1 = nd_embtrans_fc1(5, 8).double()
    assert torch.equal(m.projector[2].bias, torch.zeros(8)) and torch.equal(
        m.projector[0].weight, torch.ones(5)
    )
    fc1.load_state_dict(m.projector.state_dict())
    s, t, y = (
        torch.randn(6, 5, dtype=torch.float64),
        torch.randn(6, 8, dtype=torch.float64),
        torch.tensor([0, 1, 2] * 2),
    )
    means = {str(c): row for c, row in enumerate(mu.tolist())}
    for mode in ("train", "eval"):
        m.train(mode == "train")
        fc1.train(mode == "train")
        torch.manual_seed(4)
        mine = m(None, s, t, y)
        torch.manual_seed(4)
        theirs = nd_direct_norm(fc1(s), t, means, y)
        assert mine.item() == pytest.approx(theirs.item(), rel=1e-12), mode


def test_class_means_from_files(tmp_path):
    mu = torch.randn(3, 4)
    js = tmp_path / "center_emb_train.json"
    js.write_text(json.dumps({str(c): [round(v, 4) for v in row] for c, row in enumerate(mu.tolist())}))
    pt = tmp_path / "means.pt"
    torch.save(mu, pt)
    from_json = NDLoss(3, 4, 4, class_means=str(js))
    from_pt = NDLoss(3, 4, 4, class_means=pt)
    torch.testing.assert_close(from_pt.class_means(), mu)
    torch.testing.assert_close(from_json.class_means(), mu, atol=5e-5, rtol=0)
    assert bool(from_json.fitted) and bool(from_pt.fitted)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"0": [1.0] * 4, "2": [1.0] * 4}))
    with pytest.raises(ValueError, match="no class mean for classes \\[1\\]"):
        NDLoss(3, 4, 4, class_means=str(bad))


def test_fit_class_means_from_teacher_batches():
    g = torch.Generator().manual_seed(0)
    emb, y = torch.randn(40, 4, generator=g), torch.arange(40) % 3
    m = NDLoss(3, 4, 4)
    means = m.fit_class_means((emb[i : i + 16], y[i : i + 16]) for i in range(0, 40, 16))
    naive = torch.stack([emb[y == c].mean(dim=0) for c in range(3)])
    torch.testing.assert_close(means, naive)
    torch.testing.assert_close(m.class_means(), naive)
    m(None, torch.randn(2, 4), torch.randn(2, 4), torch.tensor([0, 1]))  # fitted: no accumulation
    torch.testing.assert_close(m.class_means(), naive)
    with pytest.raises(ValueError, match="no sample of classes \\[2\\]"):
        NDLoss(3, 4, 4).fit_class_means([(emb[:2], torch.tensor([0, 1]))])


def test_online_means_follow_the_batches_and_freeze_after_one_epoch():
    g = torch.Generator().manual_seed(1)
    n = 12
    emb, y = torch.randn(n, 4, generator=g), torch.tensor([0, 1, 2] * 4)
    m = NDLoss(3, 4, 4, num_samples=n)
    with pytest.raises(ValueError, match="no class means yet"):
        m.eval()(None, torch.randn(2, 4), emb[:2], y[:2])
    m.train()
    s = torch.randn(n, 4, generator=g)
    first = m(None, s[:6], emb[:6], y[:6])
    seen = torch.stack([emb[:6][y[:6] == c].mean(dim=0) for c in range(3)])
    assert first.item() == pytest.approx(nd_loss(s[:6], emb[:6], seen, y[:6]).item(), rel=1e-6)
    assert not bool(m.fitted)
    m(None, s[6:], emb[6:], y[6:])
    assert bool(m.fitted)  # num_samples embeddings seen
    full = torch.stack([emb[y == c].mean(dim=0) for c in range(3)])
    torch.testing.assert_close(m.class_means(), full)
    m(None, s[:3], emb[:3] + 5, y[:3])
    torch.testing.assert_close(m.class_means(), full)  # frozen


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: nd_loss(torch.randn(2, 3), torch.randn(2, 4), torch.randn(3, 3), torch.tensor([0, 1])),
            "width",
        ),
        (
            lambda: nd_loss(torch.randn(2, 3), torch.randn(2, 3), torch.randn(3), torch.tensor([0, 1])),
            "\\(C, D\\)",
        ),
        (
            lambda: nd_loss(torch.randn(2, 3), torch.randn(2, 3), torch.randn(3, 3), torch.tensor([0, 5])),
            "out of range",
        ),
        (
            lambda: nd_loss(torch.randn(2, 3), torch.randn(3, 3), torch.randn(3, 3), torch.tensor([0, 1])),
            "batch",
        ),
        (lambda: NDLoss(3, 4, 4, class_means=torch.randn(2, 4)), "\\(3, 4\\)"),
        (lambda: NDLoss(3, 4, 4, class_means=torch.zeros(3, 4)), "all-zero row"),
        (lambda: NDLoss(3, 4, 4, class_means="missing.json"), "does not exist"),
        (lambda: NDLoss(1, 4, 4), "num_classes"),
    ],
)
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()
