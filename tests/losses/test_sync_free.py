"""With checks off (``unikd.losses.checks``) every registered loss runs without a host sync, and compiles
with ``torch.compile(fullgraph=True)`` to the eager values and gradients; with checks full (the default)
bad values still raise (tests/losses/test_bad_inputs.py and the per-loss tests run under the default).

A host sync is detected on the CPU by running on the ``meta`` device: tensors there have no values, so
anything that reads one (``.item()``, ``bool(t)``, ``t.tolist()``, boolean-mask indexing) raises. The
registry is iterated, so a new loss is covered by these tests without touching them.

Compiled tests use the ``aot_eager`` backend: it traces forward and backward through dynamo and AOTAutograd
(what ``fullgraph`` and a captured step need) but skips inductor's C++ code generation, which takes minutes
per loss on a small CPU and tests nothing about graph breaks.
"""

from __future__ import annotations

import copy

import pytest
import torch
from loss_inputs import arguments, build, call
from module_inputs import Case, leaves

import unikd.losses as L
from unikd.losses import LOSS_FUNCTIONS
from unikd.losses.checks import CHECK_MODES, checks, checks_enabled, get_checks, set_checks

# modules that cannot be one graph, with the reason (keep it short: each is a known host round trip)
NOT_ONE_GRAPH = {
    "kd3_mixdist": "draws its mix with numpy from the batch's dataset indices (exact resume), on the host",
}
TARGETS = {
    "index": lambda n, c, dev: torch.arange(n, device=dev) % c,
    "soft": lambda n, c, dev: torch.full((n, c), 1.0 / c, device=dev),
}


def test_mode_switch():
    assert get_checks() == "full" and checks_enabled() and CHECK_MODES == ("full", "off")
    with checks("off"):
        assert get_checks() == "off" and not checks_enabled()
        with pytest.raises(RuntimeError), checks("full"):
            assert checks_enabled()
            raise RuntimeError
        assert get_checks() == "off"  # restored after the exception
    assert get_checks() == "full"
    with pytest.raises(ValueError, match="'full', 'off'"):
        set_checks("on")
    assert get_checks() == "full"


def test_checks_off_skips_value_checks_only():
    zs, zt = torch.randn(3, 4), torch.randn(3, 4)
    with pytest.raises(ValueError, match="out of range"):
        L.nkd_loss(zs, zt, torch.tensor([0, 1, 7]))
    with pytest.raises(ValueError, match="sum to 1"):
        L.nkd_loss(zs, zt, torch.full((3, 4), 0.5))
    with checks("off"):
        assert torch.isfinite(L.nkd_loss(zs, zt, torch.full((3, 4), 0.5)))  # unchecked: no error
        with pytest.raises(ValueError, match="shape"):  # metadata checks stay on
            L.nkd_loss(zs, zt, torch.tensor([0, 1]))
        assert torch.isnan(L.nkd_loss(zs, zt, torch.full((3, 4), float("nan"))))  # NaN still propagates


def test_meta_device_detects_a_host_sync():
    # the detector of the tests below: with checks full the label check reads values and fails on meta
    zs = torch.randn(3, 4, device="meta")
    with pytest.raises((NotImplementedError, RuntimeError)):
        L.nkd_loss(zs, zs, torch.zeros(3, dtype=torch.long, device="meta"))


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("name", sorted(LOSS_FUNCTIONS))
def test_function_runs_without_host_sync(name, target):
    n, c = 4, 6
    inputs = build(name, n, c, lambda s: torch.empty(s, device="meta", requires_grad=True))
    with checks("off"):
        loss = call(name, inputs, TARGETS[target](n, c, "meta"))
        loss.backward()
    assert loss.shape == () and loss.device.type == "meta"


@pytest.mark.parametrize("name", L.list_losses())
def test_module_step_runs_without_host_sync(name):
    # the first step runs eagerly with checks (it may read state once, e.g. CRD's normalisers); later
    # steps, here on the meta device, must read nothing
    case = Case(name)
    module = case.module().train()
    module(**case.inputs())
    module.to("meta")
    case.device = "meta"
    inputs = case.inputs()
    with checks("off"):
        loss = module(**inputs)
        loss.backward()
    assert loss.shape == () and loss.device.type == "meta"


def _compare(eager: torch.Tensor, compiled: torch.Tensor, grads_e: list, grads_c: list) -> None:
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
    for ge, gc in zip(grads_e, grads_c):
        torch.testing.assert_close(gc, ge, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("name", sorted(LOSS_FUNCTIONS))
def test_compiled_function_matches_eager(name, target):
    torch._dynamo.reset()
    n, c = 4, 6
    g = torch.Generator().manual_seed(0)
    inputs = build(name, n, c, lambda s: torch.randn(s, generator=g, dtype=torch.float32))
    y = TARGETS[target](n, c, "cpu")

    def run(fn):
        xs = [
            [t.clone().requires_grad_() for t in x] if isinstance(x, list) else x.clone().requires_grad_()
            for x in inputs
        ]
        args = arguments(name, xs, y)  # made outside the graph (CTKD's temperature is a leaf)
        out = fn(*args)
        flat = [
            t
            for a in args
            for t in (a if isinstance(a, list) else [a])
            if isinstance(t, torch.Tensor) and t.requires_grad
        ]
        return out, torch.autograd.grad(out, flat, allow_unused=True, materialize_grads=True)

    fn = LOSS_FUNCTIONS[name]
    with checks("off"):
        eager, ge = run(fn)
        compiled, gc = run(torch.compile(fn, backend="aot_eager", fullgraph=True))
    _compare(eager, compiled, ge, gc)


@pytest.mark.slow
@pytest.mark.parametrize("name", L.list_losses())
def test_compiled_module_matches_eager(name):
    if name in NOT_ONE_GRAPH:
        pytest.skip(NOT_ONE_GRAPH[name])
    torch._dynamo.reset()
    case = Case(name)
    module = case.module().train()
    module(**case.inputs())  # the eager, checked first step
    results = []
    for compiled in (False, True):
        m = copy.deepcopy(module)
        fn = torch.compile(m, backend="aot_eager", fullgraph=True) if compiled else m
        inputs = case.inputs()
        torch.manual_seed(1)  # the same draws (CRD's negatives) in both
        with checks("off"):
            loss = fn(**inputs)
        params = leaves(inputs) + [p for p in m.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)
        results.append((loss, grads, {k: v.clone() for k, v in m.state_dict().items()}))
    (eager, ge, se), (comp, gc, sc) = results
    _compare(eager, comp, ge, gc)
    for key in se:  # state updated in the step (banks, schedules) agrees too
        torch.testing.assert_close(sc[key], se[key], rtol=1e-5, atol=1e-6)


def test_exceptions_are_registered_losses():
    assert set(NOT_ONE_GRAPH) <= set(L.list_losses())


def test_host_copies_of_module_state_follow_load_state_dict():
    case = Case("crd")
    fresh, used = case.module(), case.module()
    used(**case.inputs())
    assert bool((used.normalisers > 0).all())
    used.load_state_dict(fresh.state_dict())  # a checkpoint from before the first step: Z unset again
    used(**case.inputs())
    assert bool((used.normalisers > 0).all())

    nd = L.create_loss("nd", num_classes=5, in_features=4, teacher_in_features=6, num_samples=8).train()
    before = copy.deepcopy(nd.state_dict())
    case = Case("nd")
    for _ in range(2):  # 2 x 4 rows = num_samples: the means are fitted after the second step
        nd(**case.inputs())
    assert bool(nd.fitted)
    nd.load_state_dict(before)
    nd(**case.inputs())
    assert not bool(nd.fitted)  # accumulating again from the loaded (empty) counts


def test_taid_schedule_with_checks_off_keeps_its_state_on_a_nonfinite_loss():
    s = L.TAIDSchedule()
    s.advance(2.0, 0.0)
    s.advance(1.5, 0.1)
    state = {k: v.clone() for k, v in s.state_dict().items()}
    with pytest.raises(ValueError, match="non-finite"):
        s.advance(float("nan"), 0.2)
    with checks("off"):
        s.advance(float("nan"), 0.2)
    for k, v in s.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert s.update(1.2, 0.3) > float(state["t"])
