"""build_optimizer: groups, no-decay exclusions, de-duplication and errors."""

import pytest
import torch
from torch import nn

from unikd.engine.optim.optimizers import build_optimizer


def _small() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3), nn.Linear(3, 2, bias=False))


def test_no_decay_groups_hold_every_1d_param():
    m = _small()
    opt = build_optimizer([m], lr=0.1, weight_decay=5e-4)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(m[0].weight), id(m[2].weight)}
    assert {id(p) for p in no_decay["params"]} == {id(m[0].bias), id(m[1].weight), id(m[1].bias)}


def test_decay_everything_when_disabled():
    m = _small()
    opt = build_optimizer([m], lr=0.1, weight_decay=1e-4, no_decay_norm_bias=False)
    assert len(opt.param_groups) == 1
    assert len(opt.param_groups[0]["params"]) == len(list(m.parameters()))


def test_shared_and_frozen_params_are_included_once():
    a = nn.Linear(3, 3)
    b = nn.Sequential(a, nn.Linear(3, 2))  # `a` appears in both modules
    frozen = nn.Linear(2, 2).requires_grad_(False)
    opt = build_optimizer([a, b, frozen], lr=0.1)
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == 4


def test_sgd_settings_and_adamw():
    m = _small()
    sgd = build_optimizer(m, name="SGD", lr=0.05, momentum=0.9, nesterov=True)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.9 and sgd.defaults["lr"] == 0.05
    adamw = build_optimizer([m], name="adamw", lr=1e-3, betas=[0.8, 0.99], weight_decay=0.05)
    assert isinstance(adamw, torch.optim.AdamW)
    assert adamw.defaults["betas"] == (0.8, 0.99)
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.05, 0.0]


def test_no_decay_param_really_is_not_decayed():
    # With zero gradient, SGD only applies weight decay: the bias must not move, the weight must shrink.
    lin = nn.Linear(2, 2)
    w0, b0 = lin.weight.detach().clone(), lin.bias.detach().clone()
    opt = build_optimizer([lin], lr=1.0, momentum=0.0, weight_decay=0.5)
    for p in lin.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.allclose(lin.weight, 0.5 * w0) and torch.equal(lin.bias, b0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "sgdd"}, "Did you mean 'sgd'"),
        ({"name": "adam"}, "Did you mean 'adamw'"),
        ({"lr": 0.0}, "optim.lr"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"momentum": 0.0, "nesterov": True}, "nesterov"),
        ({"name": "adamw", "betas": (0.9, 1.5)}, "betas"),
    ],
)
def test_errors(kwargs, match):
    kwargs = {"lr": 0.1, **kwargs}
    with pytest.raises(ValueError, match=match):
        build_optimizer([_small()], **kwargs)


def test_no_trainable_params():
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer([nn.Linear(2, 2).requires_grad_(False)], lr=0.1)
    with pytest.raises(ValueError, match="not an nn.Module"):
        build_optimizer([torch.zeros(2)], lr=0.1)
