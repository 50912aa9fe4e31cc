"""build_scheduler: per-step lr values, epoch-based milestones, warmup, cosine and exact resume."""

import math

import pytest
import torch

from unikd.engine.optim.schedules import build_scheduler


def _opt(lr=1.0):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr, momentum=0.9)


def _lrs(opt, sched, steps):
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_multistep_matches_cifar_protocol():
    # Milestone 150 means the 151st epoch (1-based; 0-based index 150) is the first at 0.1x lr.
    spe = 3
    opt = _opt(0.05)
    sched = build_scheduler(opt, epochs=240, steps_per_epoch=spe, milestones=[150, 180, 210], gamma=0.1)
    lrs = _lrs(opt, sched, 240 * spe)
    per_epoch = [lrs[e * spe] for e in range(240)]
    assert all(lrs[e * spe : (e + 1) * spe] == [per_epoch[e]] * spe for e in range(240))
    assert per_epoch[149] == pytest.approx(0.05)
    assert per_epoch[150] == pytest.approx(0.005)
    assert per_epoch[179] == pytest.approx(0.005) and per_epoch[180] == pytest.approx(0.0005)
    assert per_epoch[210] == pytest.approx(0.00005) and per_epoch[239] == pytest.approx(0.00005)


def test_linear_warmup_then_constant():
    opt = _opt(1.0)
    sched = build_scheduler(opt, name="constant", epochs=3, steps_per_epoch=4, warmup_epochs=1)
    lrs = _lrs(opt, sched, 12)
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4:] == pytest.approx([1.0] * 8)


def test_fractional_warmup_and_multistep_compose():
    opt = _opt(1.0)
    sched = build_scheduler(opt, epochs=2, steps_per_epoch=4, warmup_epochs=0.5, milestones=[1], gamma=0.5)
    assert _lrs(opt, sched, 8) == pytest.approx([0.5, 1, 1, 1, 0.5, 0.5, 0.5, 0.5])


def test_cosine_reaches_floor():
    opt = _opt(2.0)
    sched = build_scheduler(opt, name="cosine", epochs=10, steps_per_epoch=10, min_lr_factor=0.1)
    lrs = _lrs(opt, sched, 100)
    assert lrs[0] == pytest.approx(2.0)
    assert lrs[50] == pytest.approx(0.2 + 1.8 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[-1] == pytest.approx(0.2 + 1.8 * 0.5 * (1 + math.cos(math.pi * 0.99)))
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert min(lrs) >= 0.2


def test_cosine_with_warmup_starts_after_warmup():
    opt = _opt(1.0)
    sched = build_scheduler(opt, name="cosine", epochs=4, steps_per_epoch=2, warmup_epochs=1)
    lrs = _lrs(opt, sched, 8)
    assert lrs[:2] == pytest.approx([0.5, 1.0])
    assert lrs[2] == pytest.approx(1.0) and lrs[7] < lrs[3] < lrs[2]


def test_state_dict_resumes_exactly():
    def make():
        opt = _opt(0.1)
        return opt, build_scheduler(opt, name="cosine", epochs=5, steps_per_epoch=7, warmup_epochs=1.5)

    opt, sched = make()
    full = _lrs(opt, sched, 35)

    opt1, sched1 = make()
    first = _lrs(opt1, sched1, 13)
    saved_opt, saved_sched = opt1.state_dict(), sched1.state_dict()
    opt2, sched2 = make()
    opt2.load_state_dict(saved_opt)
    sched2.load_state_dict(saved_sched)
    assert first + _lrs(opt2, sched2, 22) == full


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "cosin"}, "Did you mean 'cosine'"),
        ({"epochs": 0}, "epochs"),
        ({"steps_per_epoch": 0}, "steps_per_epoch"),
        ({"milestones": [5, 2]}, "milestones"),
        ({"gamma": 0}, "gamma"),
        ({"warmup_epochs": 11}, "warmup_epochs"),
        ({"min_lr_factor": 1.5}, "min_lr_factor"),
    ],
)
def test_errors(kwargs, match):
    kwargs = {"epochs": 10, "steps_per_epoch": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        build_scheduler(_opt(), **kwargs)
