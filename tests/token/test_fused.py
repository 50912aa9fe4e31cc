"""fused_distill_loss: values and gradients equal the plain reference (float64), chunking, vocabulary cuts,
sparse teachers, bf16/fp32, no_grad, the chunk memory bound, the module with TAID's schedule,
torch.compile."""

import shutil

import pytest
import torch
from _token_data import IGNORE
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

import unikd.token as T

NAMES = sorted(T.list_token_losses())
HP = {
    "kd": {"temperature": 2.0},
    "reverse_kl": {},
    "jsd": {"beta": 0.3},
    "dkd": {"beta": 2.0},
    "nkd": {"temperature": 1.5, "gamma": 2.0},
    "uskd": {"beta": 0.5, "mu": 0.3},
    "taid": {"t": 0.6},
}


def make(name, *, b=2, t=5, v=13, ds=6, dt=4, v_teacher=None, dtype=torch.float64, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, grad=False, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype).requires_grad_(grad)

    hs, ws = r(b, t, ds, grad=True), r(v, ds, grad=True, scale=0.7)
    bs = r(v, grad=True) if bias else None
    if name == "uskd":  # weak logits: the student's own head on a middle hidden state
        ho, wo, bo = r(b, t, ds, grad=True), ws, bs
    else:
        vt = v_teacher or v
        ho, wo, bo = r(b, t, dt), r(vt, dt, scale=0.9), (r(vt) if bias else None)
    labels = torch.randint(0, v if v_teacher is None else min(v, v_teacher), (b, t), generator=g)
    labels[0, :2] = IGNORE
    return hs, ws, bs, ho, wo, bo, labels


def grads_of(loss, tensors):
    wanted = [x for x in tensors if x is not None and x.requires_grad]
    return torch.autograd.grad(loss, wanted)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_equals_the_reference_in_float64(name, chunk):
    hs, ws, bs, ho, wo, bo, labels = make(name)
    kw = dict(student_bias=bs, teacher_bias=bo, ce_weight=0.7, weight=1.3, **HP[name])
    fused = T.fused_distill_loss(name, hs, ws, ho, wo, labels, chunk_size=chunk, **kw)
    ref = T.fused_distill_loss_reference(name, hs, ws, ho, wo, labels, **kw)
    assert fused.dtype == torch.float64
    assert fused.item() == pytest.approx(ref.item(), rel=1e-12, abs=1e-12)
    inputs = [hs, ws, bs] + ([ho] if name == "uskd" else [])
    for got, want in zip(grads_of(fused, inputs), grads_of(ref, inputs)):
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["kd", "nkd", "uskd"])
def test_gradcheck(name):
    hs, ws, bs, ho, wo, bo, labels = make(name, b=1, t=4, v=5, ds=3, dt=2)

    def fn(h, w, b):
        weak = (ho, w, b) if name == "uskd" else (ho, wo, bo)
        hp = {"alpha": 0.0, "beta": 1.0, "mu": 0.5} if name == "uskd" else {}
        return T.fused_distill_loss(
            name, h, w, weak[0], weak[1], labels, student_bias=b, teacher_bias=weak[2], chunk_size=2, **hp
        )

    assert torch.autograd.gradcheck(fn, (hs, ws, bs), fast_mode=True)


def test_padded_heads_need_vocab_size_and_cut_exactly():
    hs, ws, bs, ho, wo, bo, labels = make("kd", v=11, v_teacher=14)
    with pytest.raises(ValueError, match="the student has V=11 entries but the teacher has V=14"):
        T.fused_distill_loss("kd", hs, ws, ho, wo, labels)
    fused = T.fused_distill_loss(
        "kd", hs, ws, ho, wo, labels, student_bias=bs, teacher_bias=bo, vocab_size=9, chunk_size=4
    )
    ref = T.fused_distill_loss_reference(
        "kd", hs, ws, ho, wo, labels, student_bias=bs, teacher_bias=bo, vocab_size=9
    )
    assert fused.item() == pytest.approx(ref.item(), rel=1e-12)
    g_ws, g_bs = grads_of(fused, [ws, bs])
    r_ws, r_bs = grads_of(ref, [ws, bs])
    assert torch.allclose(g_ws, r_ws) and torch.allclose(g_bs, r_bs)
    assert torch.all(g_ws[9:] == 0) and torch.all(g_bs[9:] == 0)


def test_sum_reduction_parts_and_zero_weights():
    hs, ws, bs, ho, wo, bo, labels = make("dkd")
    n = int((labels != IGNORE).sum())
    loss, parts = T.fused_distill_loss(
        "dkd",
        hs,
        ws,
        ho,
        wo,
        labels,
        ce_weight=0.5,
        weight=2.0,
        chunk_size=3,
        reduction="sum",
        return_parts=True,
    )
    assert set(parts) == {"loss", "distill", "ce"}
    assert loss.item() == pytest.approx(2.0 * parts["distill"].item() + 0.5 * parts["ce"].item(), rel=1e-12)
    assert parts["ce"].item() == pytest.approx(
        T.cross_entropy(hs @ ws.T, labels, reduction="sum").item(), rel=1e-12
    )
    mean = T.fused_distill_loss("dkd", hs, ws, ho, wo, labels, ce_weight=0.5, weight=2.0, chunk_size=3)
    assert loss.item() == pytest.approx(mean.item() * n, rel=1e-12)
    only_ce = T.fused_distill_loss("dkd", hs, ws, ho, wo, labels, weight=0.0)
    assert only_ce.item() == pytest.approx(T.cross_entropy(hs @ ws.T, labels).item(), rel=1e-12)


@pytest.mark.parametrize("name", ["kd", "jsd", "dkd", "nkd", "taid"])
def test_sparse_teacher_equals_the_reference(name):
    hs, ws, bs, ho, wo, bo, labels = make(name, v=17)
    teacher_logits = torch.nn.functional.linear(ho, wo, bo)
    sparse = T.sparse_topk(teacher_logits, 5, labels=labels)
    fused = T.fused_distill_loss(
        name, hs, ws, sparse, None, labels, student_bias=bs, chunk_size=3, **HP[name]
    )
    ref = T.fused_distill_loss_reference(name, hs, ws, sparse, None, labels, student_bias=bs, **HP[name])
    assert fused.item() == pytest.approx(ref.item(), rel=1e-12)
    for got, want in zip(grads_of(fused, [hs, ws, bs]), grads_of(ref, [hs, ws, bs])):
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="teacher_head and teacher_bias must be None"):
        T.fused_distill_loss(name, hs, ws, sparse, wo, labels)


@pytest.mark.parametrize("name", ["kd", "uskd"])
def test_all_ignored_gives_zero_and_zero_gradients(name):
    hs, ws, bs, ho, wo, bo, labels = make(name)
    labels = torch.full_like(labels, IGNORE)
    loss = T.fused_distill_loss(name, hs, ws, ho, wo, labels, student_bias=bs, teacher_bias=bo)
    ref = T.fused_distill_loss_reference(name, hs, ws, ho, wo, labels, student_bias=bs, teacher_bias=bo)
    assert loss.item() == ref.item() == 0.0
    trained = [hs, ws, bs] + ([ho] if name == "uskd" else [])  # USKD's weak hidden trains too
    for value in (loss, ref):
        for g in grads_of(value, trained):
            assert torch.all(g == 0)


def test_no_grad_and_frozen_head():
    hs, ws, bs, ho, wo, bo, labels = make("kd")
    ref = T.fused_distill_loss_reference("kd", hs, ws, ho, wo, labels).item()
    with torch.no_grad():
        value = T.fused_distill_loss("kd", hs, ws, ho, wo, labels, chunk_size=4)
    assert not value.requires_grad and value.item() == pytest.approx(ref, rel=1e-12)
    frozen = ws.detach()
    loss = T.fused_distill_loss("kd", hs, frozen, ho, wo, labels, chunk_size=4)
    (g_hs,) = torch.autograd.grad(loss, hs)
    (r_hs,) = torch.autograd.grad(T.fused_distill_loss_reference("kd", hs, frozen, ho, wo, labels), hs)
    assert torch.allclose(g_hs, r_hs)


def test_teacher_receives_no_gradient():
    hs, ws, bs, ho, wo, bo, labels = make("kd")
    ho.requires_grad_(True)
    wo.requires_grad_(True)
    T.fused_distill_loss("kd", hs, ws, ho, wo, labels).backward()
    assert ho.grad is None and wo.grad is None and hs.grad is not None


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_float32_and_bfloat16(dtype, rtol):
    hs, ws, bs, ho, wo, bo, labels = make("nkd", t=8, v=40, ds=16, dt=12, dtype=dtype)
    fused = T.fused_distill_loss(
        "nkd", hs, ws, ho, wo, labels, student_bias=bs, teacher_bias=bo, chunk_size=5
    )
    ref = T.fused_distill_loss_reference("nkd", hs, ws, ho, wo, labels, student_bias=bs, teacher_bias=bo)
    assert fused.dtype == torch.float32
    assert fused.item() == pytest.approx(ref.item(), rel=rtol)
    got, want = grads_of(fused, [hs, ws, bs]), grads_of(ref, [hs, ws, bs])
    for a, b in zip(got, want):
        assert a.dtype == dtype
        scale = b.float().abs().max().item()
        assert (a.float() - b.float()).abs().max().item() <= 4 * rtol * scale


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(NAMES),
    b=st.integers(1, 3),
    t=st.integers(1, 5),
    v=st.integers(2, 9),
    chunk=st.integers(1, 8),
    drop=st.floats(0.0, 1.0),
    seed=st.integers(0, 10**6),
)
@example(name="uskd", b=1, t=1, v=2, chunk=1, drop=0.0, seed=0)  # no kept token: the weak side still trains
def test_random_shapes_chunks_and_masks(name, b, t, v, chunk, drop, seed):
    hs, ws, bs, ho, wo, bo, labels = make(name, b=b, t=t, v=v, ds=3, dt=2, seed=seed)
    g = torch.Generator().manual_seed(seed)
    labels = torch.where(torch.rand(labels.shape, generator=g) < drop, IGNORE, labels)
    kw = dict(student_bias=bs, teacher_bias=bo, **HP[name])
    fused = T.fused_distill_loss(name, hs, ws, ho, wo, labels, chunk_size=chunk, **kw)
    ref = T.fused_distill_loss_reference(name, hs, ws, ho, wo, labels, **kw)
    assert fused.item() == pytest.approx(ref.item(), rel=1e-10, abs=1e-12)
    inputs = [hs, ws, bs] + ([ho] if name == "uskd" else [])
    for got, want in zip(grads_of(fused, inputs), grads_of(ref, inputs)):
        assert torch.allclose(got, want, rtol=1e-8, atol=1e-12)


def test_under_cpu_autocast():
    hs, ws, bs, ho, wo, bo, labels = make("kd", t=8, v=40, ds=16, dt=12, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = T.fused_distill_loss(
            "kd", hs, ws, ho, wo, labels, student_bias=bs, teacher_bias=bo, chunk_size=5
        )
        ref = T.fused_distill_loss_reference("kd", hs, ws, ho, wo, labels, student_bias=bs, teacher_bias=bo)
    assert fused.item() == pytest.approx(ref.item(), rel=1e-2)
    for a, b in zip(grads_of(fused, [hs, ws, bs]), grads_of(ref, [hs, ws, bs])):
        assert a.dtype == torch.float32
        assert (a - b).abs().max().item() <= 2e-2 * b.abs().max().item()


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any op produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for x in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(x, torch.Tensor):
                self.largest = max(self.largest, x.numel())
        return out


def test_no_tensor_larger_than_one_chunk_of_logits():
    # 120 tokens x V=300 logits would be 36,000 floats; chunks of 8 tokens stay at 8 x 300 = 2,400 (the head
    # and its gradient, V x d = 300 x 4 = 1,200, are smaller here).
    for name in ("kd", "dkd", "uskd"):
        hs, ws, bs, ho, wo, bo, labels = make(name, b=4, t=30, v=300, ds=4, dt=4, dtype=torch.float32)
        with _LargestTensor() as probe:
            loss = T.fused_distill_loss(
                name, hs, ws, ho, wo, labels, student_bias=bs, teacher_bias=bo, chunk_size=8
            )
            loss.backward()
        assert probe.largest <= 8 * 300, (name, probe.largest)
        with _LargestTensor() as naive:
            T.fused_distill_loss_reference(name, hs, ws, ho, wo, labels, student_bias=bs, teacher_bias=bo)
        assert naive.largest >= 110 * 300  # the probe does see full logits when they exist


def test_module_with_taid_schedule():
    hs, ws, bs, ho, wo, bo, labels = make("taid")
    m = T.FusedDistillLoss("taid", chunk_size=3, ce_weight=0.0, t_start=0.3, alpha=0.2)
    loss, parts = m(hs, ws, ho, wo, labels, student_bias=bs, teacher_bias=bo, progress=0.0, return_parts=True)
    ref = T.taid_loss(hs @ ws.T + bs, ho @ wo.T + bo, labels, t=0.3)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    assert m.schedule.prev_loss.item() == pytest.approx(parts["distill"].item(), rel=1e-6)
    m(hs, ws, ho, wo, labels, student_bias=bs, teacher_bias=bo, progress=0.5)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    resumed = T.FusedDistillLoss("taid", chunk_size=3, ce_weight=0.0, t_start=0.3, alpha=0.2)
    resumed.load_state_dict(state)
    a = m(hs, ws, ho, wo, labels, student_bias=bs, teacher_bias=bo, progress=0.6)
    b = resumed(hs, ws, ho, wo, labels, student_bias=bs, teacher_bias=bo, progress=0.6)
    assert a.item() == b.item() and m.schedule.t.item() == resumed.schedule.t.item()


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda a: {**a, "ws": a["ws"][:, :3]}, "student_head has shape"),
        (lambda a: {**a, "ho": a["ho"][:, :4]}, "covers tokens"),
        (lambda a: {**a, "bs": a["bs"][:5]}, "bias of student_head must have shape"),
        (lambda a: {**a, "labels": a["labels"].float()}, "integer tensor"),
        (lambda a: {**a, "chunk_size": 0}, "chunk_size must be a positive int"),
        (lambda a: {**a, "name": "kdd"}, "Did you mean 'kd'"),
    ],
)
def test_bad_inputs(mutate, match):
    hs, ws, bs, ho, wo, bo, labels = make("kd")
    a = mutate(
        {"name": "kd", "hs": hs, "ws": ws, "bs": bs, "ho": ho, "wo": wo, "labels": labels, "chunk_size": 4}
    )
    with pytest.raises(ValueError, match=match):
        T.fused_distill_loss(
            a["name"],
            a["hs"],
            a["ws"],
            a["ho"],
            a["wo"],
            a["labels"],
            student_bias=a["bs"],
            chunk_size=a["chunk_size"],
        )


def test_default_chunk_size():
    assert T.default_chunk_size(128 * 1024) == 256
    assert T.default_chunk_size(32 * 1024) == 1024
    assert T.default_chunk_size(10**7) == 16


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None, reason="no C++ compiler for inductor"
)
def test_inside_a_compiled_model():
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    body = torch.nn.Linear(6, 6)
    head = torch.nn.Linear(6, 11)
    x = torch.randn(2, 4, 6, generator=g)
    teacher_hidden, teacher_head = torch.randn(2, 4, 5, generator=g), torch.randn(11, 5, generator=g)
    labels = torch.randint(0, 11, (2, 4), generator=g)

    def step(inputs):
        hidden = torch.tanh(body(inputs))
        return T.fused_distill_loss(
            "kd",
            hidden,
            head.weight,
            teacher_hidden,
            teacher_head,
            labels,
            student_bias=head.bias,
            chunk_size=3,
        )

    eager = step(x)
    eager_grads = torch.autograd.grad(eager, [body.weight, head.weight])
    compiled = torch.compile(step)(x)
    compiled_grads = torch.autograd.grad(compiled, [body.weight, head.weight])
    assert compiled.item() == pytest.approx(eager.item(), rel=1e-6)
    for a, b in zip(compiled_grads, eager_grads):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("where", ["hs", "ws", "ho", "wo"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "+inf", "-inf"])
def test_non_finite_inputs_give_nan(name, where, value):
    # A non-finite hidden state (of a kept token) or head entry (of a kept vocabulary row) reaches the logits
    # of a chunk: the loss is NaN, as the unfused losses (docs/losses.md), and backward runs.
    hs, ws, bs, ho, wo, bo, labels = make(name)
    t = {"hs": hs, "ws": ws, "ho": ho, "wo": wo}[where]
    with torch.no_grad():
        t.view(-1, t.shape[-1])[7 if where in ("hs", "ho") else 2, 1] = value  # token 7 is kept
    loss = T.fused_distill_loss(name, hs, ws, ho, wo, labels, student_bias=bs, teacher_bias=bo, chunk_size=3)
    assert torch.isnan(loss)
    loss.backward()


@pytest.mark.parametrize("name", NAMES)
def test_masked_padded_heads_and_ignored_tokens_train_to_a_finite_loss(name):
    # Heads padded beyond vocab_size with -inf biases (masked vocabulary) and NaN hidden states at ignored
    # positions never reach a chunk: the loss and the gradients equal those of the clean inputs.
    hs, ws, bs, ho, wo, bo, labels = make(name, v=13, dtype=torch.float32)
    labels = torch.where(labels == IGNORE, IGNORE, labels % 10)
    kw = dict(vocab_size=10, chunk_size=3, **HP[name])
    clean = T.fused_distill_loss(name, hs, ws, ho, wo, labels, student_bias=bs, teacher_bias=bo, **kw)
    with torch.no_grad():
        bs_m, bo_m = bs.clone(), bo.clone()
        bs_m[10:] = float("-inf")
        bo_m[10:] = float("-inf")
        hs_m = hs.clone()
        hs_m[labels == IGNORE] = float("nan")
        ho_m = ho.clone()
        ho_m[labels == IGNORE] = float("nan")
    hs_m.requires_grad_(True)
    bs_m.requires_grad_(True)
    masked = T.fused_distill_loss(
        name, hs_m, ws, ho_m, wo, labels, student_bias=bs_m, teacher_bias=bo_m, **kw
    )
    assert torch.isfinite(masked) and masked.item() == pytest.approx(clean.item(), rel=1e-6)
    g_hs, g_ws, g_bs = grads_of(masked, [hs_m, ws, bs_m])
    r_hs, r_ws, r_bs = grads_of(clean, [hs, ws, bs])
    assert torch.isfinite(g_hs).all() and torch.isfinite(g_ws).all() and torch.isfinite(g_bs).all()
    assert torch.allclose(g_hs, r_hs, atol=1e-6) and torch.allclose(g_ws, r_ws, atol=1e-6)
    assert torch.all(g_hs[labels == IGNORE] == 0) and torch.all(g_bs[10:] == 0)


@pytest.mark.parametrize("weight", ["ce_weight", "weight"])
def test_negative_weights_are_refused(weight):
    hs, ws, bs, ho, wo, bo, labels = make("kd")
    match = rf"^{weight} must be >= 0, got -1\.0: .*Pass {weight}=0 to switch the term off"
    with pytest.raises(ValueError, match=match):
        T.fused_distill_loss("kd", hs, ws, ho, wo, labels, **{weight: -1.0})
    with pytest.raises(ValueError, match=match):
        T.FusedDistillLoss("kd", **{weight: -1.0})
