"""unikd.token losses: equal to the classification loss of the same name on the kept rows, per-token float64
references, gradcheck, ignore_index properties, all-ignored batches, non-finite logits, bad inputs."""

import math

import pytest
import torch
from _loss_refs import dkd_ref, jsd_ref, kd_ref, nkd_ref, reverse_kl_ref, taid_ref, uskd_ref
from _token_data import IGNORE, kept, token_batches
from hypothesis import given, settings
from hypothesis import strategies as st

import unikd.losses as C
import unikd.token as T

# name -> (classification function, whether it takes the target, hyperparameter sets)
CASES = {
    "kd": (C.kd_loss, False, [{"temperature": 1.0}, {"temperature": 2.5}]),
    "reverse_kl": (C.reverse_kl_loss, False, [{"temperature": 1.0}, {"temperature": 0.7}]),
    "jsd": (
        C.jsd_loss,
        False,
        [{"beta": 0.5}, {"beta": 0.0}, {"beta": 1.0, "temperature": 2.0}, {"beta": 0.2}],
    ),
    "dkd": (
        C.dkd_loss,
        True,
        [{"alpha": 1.0, "beta": 0.5, "temperature": 1.0}, {"beta": 8.0, "temperature": 4.0}],
    ),
    "nkd": (C.nkd_loss, True, [{"temperature": 1.0, "gamma": 1.5}, {"temperature": 3.0, "gamma": 3.5}]),
    "uskd": (
        C.uskd_loss,
        True,
        [{"alpha": 1.0, "beta": 0.1, "mu": 0.005}, {"alpha": 0.5, "beta": 1.0, "mu": 0.5}],
    ),
    "taid": (C.taid_loss, False, [{"t": 0.4}, {"t": 0.9, "temperature": 2.0}]),
}
REFS = {
    "kd": kd_ref,
    "reverse_kl": reverse_kl_ref,
    "jsd": jsd_ref,
    "dkd": dkd_ref,
    "nkd": nkd_ref,
    "uskd": uskd_ref,
    "taid": taid_ref,
}
NAMES = sorted(CASES)


def test_the_seven_names():
    assert T.list_token_losses() == sorted(["kd", "reverse_kl", "jsd", "dkd", "nkd", "uskd", "taid"])
    for name in NAMES:
        assert callable(getattr(T, f"{name}_loss"))


@settings(max_examples=40, deadline=None)
@given(b=token_batches(), name=st.sampled_from(NAMES), which=st.integers(0, 3))
def test_equals_the_classification_loss_on_the_kept_rows(b, name, which):
    zs, zo, labels = b
    fn, uses_target, hps = CASES[name]
    hp = hps[which % len(hps)]
    zs_k, zo_k, y_k = kept(labels, zs, zo)
    got = getattr(T, f"{name}_loss")(zs, zo, labels, **hp)
    if y_k.numel() == 0:
        assert got.item() == 0.0
        return
    want = fn(zs_k, zo_k, y_k, **hp) if uses_target else fn(zs_k, zo_k, **hp)
    assert got.item() == pytest.approx(want.item(), rel=1e-12, abs=1e-12)
    # The float64 per-token reference, written from the formula with Python floats.
    ref = REFS[name](zs_k, zo_k, y_k, **hp) if uses_target else REFS[name](zs_k, zo_k, **hp)
    if (
        name != "uskd"
    ):  # USKD ranks are ambiguous at near-ties; its reference is checked on separated rows below
        assert got.item() == pytest.approx(ref, rel=1e-8, abs=1e-10)


def test_uskd_matches_its_per_token_reference():
    g = torch.Generator().manual_seed(7)
    zs, zw = (
        torch.randn(2, 5, 9, dtype=torch.float64, generator=g),
        torch.randn(2, 5, 9, dtype=torch.float64, generator=g),
    )
    labels = torch.randint(0, 9, (2, 5), generator=g)
    labels[1, 3:] = IGNORE
    zs_k, zw_k, y_k = kept(labels, zs, zw)
    for rank in ("paper", "legacy"):
        got = T.uskd_loss(zs, zw, labels, beta=1.0, mu=0.3, rank=rank).item()
        assert got == pytest.approx(uskd_ref(zs_k, zw_k, y_k, beta=1.0, mu=0.3, rank=rank), rel=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_with_ignored_tokens(name):
    g = torch.Generator().manual_seed(11)
    zs = torch.randn(2, 3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    zo = torch.randn(2, 3, 5, dtype=torch.float64, generator=g, requires_grad=name == "uskd")
    labels = torch.tensor([[1, IGNORE, 4], [0, 2, IGNORE]])
    hp = (
        {"t": 1.0} if name == "taid" else {}
    )  # TAID's target is detached by design: check it where it is fixed
    if name == "uskd":
        hp = {"alpha": 0.0, "beta": 1.0, "mu": 0.5}  # P_t and the Zipf weights are detached by design
        inputs = (zs, zo)

        def fn(a, b):
            return T.uskd_loss(a, b, labels, **hp)
    else:
        inputs = (zs,)

        def fn(a):
            return T.token_loss(name, a, zo, labels, **hp)

    assert torch.autograd.gradcheck(fn, inputs, fast_mode=name == "uskd")
    # Ignored positions get exactly zero gradient.
    zs.grad = None
    T.token_loss(name, zs, zo, labels).backward()
    assert torch.all(zs.grad[0, 1] == 0) and torch.all(zs.grad[1, 2] == 0)


@settings(max_examples=30, deadline=None)
@given(b=token_batches(flat=False), name=st.sampled_from(NAMES), noise=st.floats(-50, 50))
def test_ignored_positions_do_not_matter(b, name, noise):
    zs, zo, labels = b
    mask = (labels == IGNORE).unsqueeze(-1)
    base = T.token_loss(name, zs, zo, labels)
    other = T.token_loss(name, zs + mask * noise, zo - mask * noise * 0.5, labels)
    assert other.item() == pytest.approx(base.item(), rel=1e-12, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(b=token_batches(ignore_prob=0.0, flat=True), name=st.sampled_from(NAMES), seed=st.integers(0, 99))
def test_token_order_and_layout_do_not_matter(b, name, seed):
    zs, zo, labels = b
    perm = torch.randperm(zs.shape[0], generator=torch.Generator().manual_seed(seed))
    base = T.token_loss(name, zs, zo, labels)
    assert T.token_loss(name, zs[perm], zo[perm], labels[perm]).item() == pytest.approx(
        base.item(), rel=1e-10
    )
    # (N, V) and (1, N, V) are the same tokens.
    assert T.token_loss(name, zs[None], zo[None], labels[None]).item() == pytest.approx(
        base.item(), rel=1e-12
    )


@settings(max_examples=20, deadline=None)
@given(b=token_batches(), name=st.sampled_from(NAMES))
def test_sum_reduction_and_custom_ignore_index(b, name):
    zs, zo, labels = b
    n = int((labels != IGNORE).sum())
    mean = T.token_loss(name, zs, zo, labels)
    total = T.token_loss(name, zs, zo, labels, reduction="sum")
    assert total.item() == pytest.approx(mean.item() * n, rel=1e-10, abs=1e-10)
    relabelled = torch.where(labels == IGNORE, -1, labels)
    assert T.token_loss(name, zs, zo, relabelled, ignore_index=-1).item() == pytest.approx(
        mean.item(), rel=1e-12
    )


@pytest.mark.parametrize("name", NAMES)
def test_all_ignored_gives_zero_with_zero_gradient(name):
    zs = torch.randn(2, 3, 6, requires_grad=True)
    zo = torch.randn(2, 3, 6, requires_grad=name == "uskd")
    labels = torch.full((2, 3), IGNORE)
    loss = T.token_loss(name, zs, zo, labels)
    assert loss.item() == 0.0 and loss.dtype == torch.float32
    loss.backward()
    assert torch.all(zs.grad == 0)
    assert T.cross_entropy(zs, labels).item() == 0.0


NONFINITE = {"nan": math.nan, "+inf": math.inf, "-inf": -math.inf}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("side", ["student", "other"])
@pytest.mark.parametrize("column", ["target", "non-target"])
@pytest.mark.parametrize("value", sorted(NONFINITE))
def test_non_finite_logits_give_nan(name, side, column, value):
    # As the classification losses (docs/losses.md): a NaN loss, and backward runs.
    g = torch.Generator().manual_seed(2)
    zs, zo = torch.randn(2, 3, 9, generator=g), torch.randn(2, 3, 9, generator=g)
    labels = torch.randint(0, 9, (2, 3), generator=g)
    labels[0, 0] = IGNORE
    col = int(labels[1, 2]) if column == "target" else (int(labels[1, 2]) + 4) % 9
    (zs if side == "student" else zo)[1, 2, col] = NONFINITE[value]
    zs.requires_grad_(True)
    zo.requires_grad_(name == "uskd")
    loss = T.token_loss(name, zs, zo, labels)
    assert torch.isnan(loss), f"{name}: {loss.item()}"
    loss.backward()


def test_reported_non_finite_cases():
    # issue 25 (reported values in the comments): the token forms returned these for a -inf logit, where the
    # classification forms return NaN
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 16, generator=g), torch.randn(4, 16, generator=g)
    y = torch.tensor([1, 2, 3, 4])
    t_bad, s_bad = t.clone(), s.clone()
    t_bad[0, 7] = s_bad[0, 7] = -math.inf
    assert torch.isnan(T.nkd_loss(s, t_bad, y))  # a finite 3.94
    assert torch.isnan(T.taid_loss(s, t_bad, y))  # a finite 2.20
    assert torch.isnan(T.reverse_kl_loss(s, t_bad, y))  # +inf
    for fn in (T.kd_loss, T.dkd_loss, T.nkd_loss, T.uskd_loss):
        assert torch.isnan(fn(s_bad, t, y)), fn.__name__  # +inf


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("value", sorted(NONFINITE))
def test_ignored_positions_and_padded_vocabulary_may_hold_any_value(name, value):
    # Masking with -inf (or garbage) where the loss never looks is fine: positions whose label is
    # ignore_index and head entries beyond vocab_size leave before the non-finite check, so the loss and the
    # gradients are those of the clean rows.
    g = torch.Generator().manual_seed(4)
    zs, zo = torch.randn(2, 4, 12, generator=g), torch.randn(2, 4, 12, generator=g)
    labels = torch.randint(0, 9, (2, 4), generator=g)
    labels[0, 1] = labels[1, 3] = IGNORE
    out = {}
    for case in ("clean", "masked"):
        a, b = zs.clone(), zo.clone()
        if case == "masked":
            for x in (a, b):
                x[..., 9:] = NONFINITE[value]  # padded vocabulary
                x[labels == IGNORE] = NONFINITE[value]  # ignored positions
        a.requires_grad_(True)
        b.requires_grad_(name == "uskd")
        loss = T.token_loss(name, a, b, labels, vocab_size=9)
        loss.backward()
        out[case] = (loss, a.grad, b.grad)
    (clean, gs, go), (masked, ms, mo) = out["clean"], out["masked"]
    assert torch.isfinite(masked) and masked.item() == clean.item()
    assert torch.isfinite(ms).all() and torch.equal(ms, gs)
    if name == "uskd":
        assert torch.isfinite(mo).all() and torch.equal(mo, go)


def test_label_free_losses_accept_no_labels():
    zs, zt = torch.randn(2, 3, 6), torch.randn(2, 3, 6)
    for name in ("kd", "reverse_kl", "jsd", "taid"):
        got = T.token_loss(name, zs, zt, None)
        want = getattr(C, f"{name}_loss")(
            zs.reshape(6, 6), zt.reshape(6, 6), **({"temperature": 1.0} if name == "kd" else {})
        )
        assert got.item() == pytest.approx(want.item(), rel=1e-6)
    for name in ("dkd", "nkd", "uskd"):
        with pytest.raises(ValueError, match="uses the next token as its target"):
            T.token_loss(name, zs, zt, None)


def test_cross_entropy_matches_torch():
    g = torch.Generator().manual_seed(0)
    zs = torch.randn(3, 4, 10, generator=g)
    labels = torch.randint(0, 10, (3, 4), generator=g)
    labels[0, :2] = IGNORE
    want = torch.nn.functional.cross_entropy(zs.reshape(-1, 10), labels.reshape(-1))
    assert T.cross_entropy(zs, labels).item() == pytest.approx(want.item(), rel=1e-6)


def test_half_inputs_compute_in_float32():
    g = torch.Generator().manual_seed(1)
    zs, zt = torch.randn(2, 3, 8, generator=g), torch.randn(2, 3, 8, generator=g)
    labels = torch.randint(0, 8, (2, 3), generator=g)
    for name in NAMES:
        out = T.token_loss(name, zs.bfloat16(), zt.bfloat16(), labels)
        want = T.token_loss(name, zs.bfloat16().float(), zt.bfloat16().float(), labels)
        assert out.dtype == torch.float32 and out.item() == pytest.approx(want.item(), rel=1e-6)


def test_module_form():
    g = torch.Generator().manual_seed(2)
    zs, zt = torch.randn(2, 3, 8, generator=g), torch.randn(2, 3, 8, generator=g)
    labels = torch.randint(0, 8, (2, 3), generator=g)
    m = T.TokenDistillLoss("nkd", temperature=2.0, gamma=3.0)
    assert m.requires_teacher
    assert torch.equal(m(zs, zt, labels), T.nkd_loss(zs, zt, labels, temperature=2.0, gamma=3.0))
    assert not T.TokenDistillLoss("uskd").requires_teacher
    taid = T.TokenDistillLoss("taid", t_start=0.3, alpha=0.1)
    first = taid(zs, zt, labels, progress=0.0)
    assert first.item() == pytest.approx(T.taid_loss(zs, zt, labels, t=0.3).item(), rel=1e-6)
    taid(zs, zt, labels, progress=0.5)
    assert taid.schedule.t.item() >= 0.3 + 0.7 * 0.5 - 1e-6
    before = taid.schedule.t.item()
    taid(zs, zt, torch.full_like(labels, IGNORE), progress=0.9)  # nothing kept: no update
    assert taid.schedule.t.item() == before
    assert "schedule.t" in taid.state_dict()
    with pytest.raises(ValueError, match="takes its interpolation t from its schedule"):
        T.TokenDistillLoss("taid", t=0.5)
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        T.TokenDistillLoss("kd", gamma=2.0)


def test_next_token_labels():
    ids = torch.tensor([[5, 6, 7, 8], [1, 2, 3, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    assert T.next_token_labels(ids).tolist() == [[6, 7, 8, IGNORE], [2, 3, 0, IGNORE]]
    assert T.next_token_labels(ids, attention_mask=mask).tolist() == [
        [6, 7, 8, IGNORE],
        [2, 3, IGNORE, IGNORE],
    ]
    hf = torch.tensor([[IGNORE, IGNORE, 7, 8]])
    assert T.next_token_labels(hf).tolist() == [[IGNORE, 7, 8, IGNORE]]


@pytest.mark.parametrize(
    "args, kw, match",
    [
        (
            (torch.randn(2, 3, 5), torch.randn(2, 3, 6), torch.zeros(2, 3, dtype=torch.long)),
            {},
            "vocabulary size mismatch: the student has V=5 entries but the teacher has V=6",
        ),
        (
            (torch.randn(2, 3, 5), torch.randn(2, 3, 6), torch.zeros(2, 3, dtype=torch.long)),
            {"vocab_size": 6},
            "vocab_size=6 is larger",
        ),
        (
            (torch.randn(2, 3, 5), torch.randn(2, 4, 5), torch.zeros(2, 3, dtype=torch.long)),
            {},
            "cover tokens",
        ),
        (
            (torch.randn(2, 3, 5), torch.randn(2, 3, 5), torch.zeros(2, 4, dtype=torch.long)),
            {},
            "token layout",
        ),
        ((torch.randn(2, 3, 5), torch.randn(2, 3, 5), torch.full((2, 3), 5)), {}, "labels out of range"),
        ((torch.randn(2, 3, 5), torch.randn(2, 3, 5), torch.zeros(2, 3)), {}, "integer tensor"),
        (
            (torch.randn(5), torch.randn(5), torch.zeros(1, dtype=torch.long)),
            {},
            r"shape \(B, T, V\) or \(N, V\)",
        ),
        (
            (torch.randn(2, 3, 5), torch.randn(2, 3, 5), torch.zeros(2, 3, dtype=torch.long)),
            {"reduction": "none"},
            "reduction must be",
        ),
    ],
)
def test_bad_inputs(args, kw, match):
    with pytest.raises(ValueError, match=match):
        T.dkd_loss(*args, **kw)


@pytest.mark.parametrize(
    "name, weight", [("dkd", "alpha"), ("dkd", "beta"), ("nkd", "gamma"), ("uskd", "alpha"),
                     ("uskd", "beta"), ("uskd", "mu")]
)
def test_negative_loss_weights_are_refused(name, weight):
    # issue 25: beta=-1 was accepted; the modules fail at construction, before any batch
    zs, labels = torch.randn(2, 3, 5), torch.zeros(2, 3, dtype=torch.long)
    match = rf"^{weight} must be >= 0, got -1\.0: .*Pass {weight}=0 to switch the term off"
    with pytest.raises(ValueError, match=match):
        T.token_loss(name, zs, zs, labels, **{weight: -1.0})
    with pytest.raises(ValueError, match=match):
        T.TokenDistillLoss(name, **{weight: -1.0})
    assert torch.isfinite(T.token_loss(name, zs, zs, labels, **{weight: 0.0}))


def test_vocab_cut_uses_the_leading_entries():
    g = torch.Generator().manual_seed(3)
    zs, zt = torch.randn(2, 3, 8, generator=g), torch.randn(2, 3, 10, generator=g)  # padded teacher head
    labels = torch.randint(0, 6, (2, 3), generator=g)
    got = T.kd_loss(zs, zt, labels, vocab_size=6)
    assert got.item() == pytest.approx(T.kd_loss(zs[..., :6], zt[..., :6], labels).item(), rel=1e-7)
    with pytest.raises(ValueError, match=r"labels out of range: ids must lie in \[0, 5\]"):
        T.kd_loss(zs, zt, torch.full((2, 3), 7), vocab_size=6)


def test_unknown_names_and_hyperparameters():
    zs = torch.randn(2, 4)
    with pytest.raises(ValueError, match="Did you mean 'nkd'"):
        T.token_loss("nkdd", zs, zs, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        T.token_loss("kd", zs, zs, None, gamma=1.0)
