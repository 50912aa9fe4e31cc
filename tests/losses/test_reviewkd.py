"""hcl_loss / ReviewKDLoss: paper reference for HCL, parity with mdistiller's ReviewKD distiller (values,
gradients, BatchNorm statistics), construction from stage shapes, gradcheck, bad inputs."""

import pytest
import torch
from _feature_refs import arrays, hcl_ref
from _upstream_refs import MdReviewKD, md_hcl
from hypothesis import given, settings
from hypothesis import strategies as st

from unikd.losses import ReviewKDLoss, create_loss, hcl_loss
from unikd.models import create_model


@st.composite
def map_pairs(draw):
    levels = draw(st.integers(1, 3))
    n = draw(st.integers(1, 3))
    fs, ft = [], []
    for _ in range(levels):
        shape = (n, draw(st.integers(1, 3)), *(2 * [draw(st.sampled_from([1, 2, 3, 5, 8]))]))
        fs.append(arrays(draw, shape))
        ft.append(arrays(draw, shape))
    return fs, ft


@settings(max_examples=25, deadline=None)
@given(p=map_pairs())
def test_hcl_matches_paper_reference_and_mdistiller(p):
    fs, ft = p
    got = hcl_loss(fs, ft).item()
    assert got == pytest.approx(hcl_ref(fs, ft), rel=1e-9, abs=1e-13)
    # megvii-research/mdistiller @ a08d46f1, mdistiller/distillers/ReviewKD.py hcl_loss
    assert got == pytest.approx(float(md_hcl(fs, ft)), rel=1e-12, abs=1e-15)


def test_hcl_gradcheck_zero_on_equal_maps_and_teacher_detached():
    g = torch.Generator().manual_seed(0)
    fs = [torch.randn(2, 2, h, h, dtype=torch.float64, generator=g, requires_grad=True) for h in (8, 3, 1)]
    ft = [torch.randn_like(f, requires_grad=True) for f in fs]
    assert torch.autograd.gradcheck(lambda *x: hcl_loss(list(x), ft), tuple(fs))
    assert hcl_loss(ft, ft).item() == 0.0
    hcl_loss(fs, ft).backward()
    assert all(t.grad is None for t in ft)


def _inputs(seed, student, teacher, n=4, s_pool=16, t_pool=24):
    """Stage outputs (with a stem output first, as mdistiller's feature lists) and pooled embeddings."""
    g = torch.Generator().manual_seed(seed)
    fs = [torch.randn(n, *s, dtype=torch.float64, generator=g) for s in [(3, *student[0][1:])] + student]
    ft = [torch.randn(n, *t, dtype=torch.float64, generator=g) for t in [(3, *teacher[0][1:])] + teacher]
    return (
        fs,
        torch.randn(n, s_pool, dtype=torch.float64, generator=g),
        ft,
        torch.randn(n, t_pool, dtype=torch.float64, generator=g),
    )


CASES = {
    # same spatial sizes (the resnet pairs): shapes == out_shapes
    "same": ([(4, 8, 8), (8, 4, 4), (16, 2, 2)], [(6, 8, 8), (12, 4, 4), (24, 2, 2)]),
    # student maps twice the teacher's size: ABF outputs are resized to the teacher's
    "resized": ([(4, 16, 16), (8, 8, 8)], [(6, 8, 8), (12, 4, 4)]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_parity_with_mdistiller_reviewkd(case):
    # megvii-research/mdistiller @ a08d46f1, mdistiller/distillers/ReviewKD.py (ABF, hcl_loss, forward_train
    # with cfg.REVIEWKD lists); see _upstream_refs.MdReviewKD.
    student, teacher = CASES[case]
    torch.manual_seed(3)
    ours = ReviewKDLoss(student, teacher, 16, 24).double()
    torch.manual_seed(3)
    ref = MdReviewKD(
        in_channels=[s[0] for s in student] + [16],
        out_channels=[t[0] for t in teacher] + [24],
        shapes=[1] + [s[1] for s in reversed(student)],
        out_shapes=[1] + [t[1] for t in reversed(teacher)],
    ).double()
    # same structure, names and initial values from one seed
    assert ours.state_dict().keys() == ref.state_dict().keys()
    for key, value in ours.state_dict().items():
        assert torch.equal(value, ref.state_dict()[key]), key
    for step in range(2):
        fs, ps, ft, pt = _inputs(step, student, teacher)
        a = [f.clone().requires_grad_(True) for f in fs] + [ps.clone().requires_grad_(True)]
        b = [f.clone().requires_grad_(True) for f in fs] + [ps.clone().requires_grad_(True)]
        ours.zero_grad()
        ref.zero_grad()
        mine = ours(None, a[1:-1], ft[1:], a[-1], pt)  # the taps give the stages without the stem
        theirs = ref(b[:-1], b[-1], ft, pt)
        mine.backward()
        theirs.backward()
        assert mine.item() == pytest.approx(theirs.item(), rel=1e-12)
        for x, y in zip(a[1:], b[1:]):
            torch.testing.assert_close(x.grad, y.grad, rtol=1e-10, atol=1e-14)
        assert b[0].grad is None  # mdistiller's zip drops the stem output too
        for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-14, msg=name)
        with torch.no_grad():
            for p, q in zip(ours.parameters(), ref.parameters()):
                p -= 0.1 * p.grad
                q -= 0.1 * q.grad
        for key, value in ours.state_dict().items():  # BatchNorm running statistics included
            torch.testing.assert_close(value, ref.state_dict()[key], rtol=1e-12, atol=1e-14)


def test_resnet32x4_to_resnet8x4_gives_mdistillers_configuration():
    shapes = [(64, 32, 32), (128, 16, 16), (256, 8, 8)]
    m = create_loss(
        "reviewkd", student_shapes=shapes, teacher_shapes=shapes, in_features=256, teacher_in_features=256
    )
    assert m.requires == ("student_features", "teacher_features", "student_embedding", "teacher_embedding")
    assert m.taps == "stages"
    # cfg.REVIEWKD defaults: IN/OUT_CHANNELS [64, 128, 256, 256], SHAPES = OUT_SHAPES [1, 8, 16, 32], mid 256
    deepest_first = [
        (
            abf.conv1[0].in_channels,
            abf.conv2[0].out_channels,
            abf.conv1[0].out_channels,
            abf.att_conv is not None,
        )
        for abf in m.abfs
    ]
    assert deepest_first == [
        (256, 256, 256, False),
        (256, 256, 256, True),
        (128, 128, 256, True),
        (64, 64, 256, True),
    ]
    assert [s[0] for s in m.sizes] == [1, 8, 16, 32] and m.out_sizes == m.sizes


def test_runs_on_zoo_stage_outputs():
    torch.manual_seed(0)
    student, teacher = create_model("resnet8", num_classes=10), create_model("resnet14", num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    _, fs = student(x, return_features=True)
    with torch.no_grad():
        _, ft = teacher(x, return_features=True)
    m = ReviewKDLoss([tuple(f.shape[1:]) for f in fs], [tuple(f.shape[1:]) for f in ft], 64, 64)
    loss = m(None, fs, ft, fs[-1].mean(dim=(2, 3)), ft[-1].mean(dim=(2, 3)))
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert student.conv1.weight.grad is not None and all(p.grad is not None for p in m.parameters())


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: ReviewKDLoss([(4, 8, 8)], [(4, 8, 8), (8, 4, 4)], 8, 8), "same count|one to one"),
        (lambda: ReviewKDLoss([(4, 8)], [(4, 8, 8)], 8, 8), "3 entries"),
        (lambda: ReviewKDLoss([], [], 8, 8), "non-empty list"),
        (lambda: ReviewKDLoss([(4, 8, 8)], [(4, 8, 8)], 0, 8), "in_features"),
        (
            lambda: ReviewKDLoss([(4, 8, 8)], [(4, 8, 8)], 8, 8)(
                None,
                [torch.randn(2, 4, 4, 4)],
                [torch.randn(2, 4, 8, 8)],
                torch.randn(2, 8),
                torch.randn(2, 8),
            ),
            "built for",
        ),
        (
            lambda: ReviewKDLoss([(4, 8, 8)], [(4, 8, 8)], 8, 8)(
                None,
                [torch.randn(2, 4, 8, 8)],
                [torch.randn(2, 4, 8, 8)],
                torch.randn(2, 8, 1),
                torch.randn(2, 8),
            ),
            "student_embedding",
        ),
        (
            lambda: ReviewKDLoss([(4, 8, 8)], [(4, 8, 8)], 8, 8)(
                None,
                [torch.randn(2, 4, 8, 8)],
                [torch.randn(2, 4, 8, 8)],
                torch.randn(2, 8),
                torch.randn(2, 5),
            ),
            "teacher_embedding must be \\(N, 8\\)",
        ),
        (lambda: hcl_loss([torch.randn(2, 3, 4, 4)], [torch.randn(2, 3, 2, 2)]), "same shape"),
    ],
)
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()
