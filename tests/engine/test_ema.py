"""ModelEMA: averaging formula, buffers, eval mode and state_dict round trip."""

import pytest
import torch
from torch import nn

from unikd.engine.optim.ema import ModelEMA


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def test_update_formula_and_buffers():
    m = _model()
    ema = ModelEMA(m, decay=0.9)
    w0 = m[0].weight.detach().clone()
    with torch.no_grad():
        m[0].weight.add_(1.0)
    m.train()(torch.randn(8, 3))  # moves BN running stats and num_batches_tracked
    ema.update(m)
    assert torch.allclose(ema.module[0].weight, 0.9 * w0 + 0.1 * m[0].weight)
    assert torch.allclose(ema.module[1].running_mean, 0.1 * m[1].running_mean)
    assert int(ema.module[1].num_batches_tracked) == 1  # integer buffers are copied
    assert not ema.module.training
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_ema_is_independent_copy():
    m = _model()
    ema = ModelEMA(m, decay=0.5)
    with torch.no_grad():
        m[0].weight.zero_()
    assert not torch.equal(ema.module[0].weight, m[0].weight)


def test_state_dict_round_trip(tmp_path):
    m = _model()
    ema = ModelEMA(m, decay=0.99)
    for _ in range(3):
        with torch.no_grad():
            m[0].weight.add_(0.1)
        ema.update(m)
    path = tmp_path / "ema.pt"
    torch.save(ema.state_dict(), path)
    other = ModelEMA(_model(), decay=0.99)
    other.load_state_dict(torch.load(path, weights_only=True))
    assert other.updates == 3
    for a, b in zip(ema.module.state_dict().values(), other.module.state_dict().values()):
        assert torch.equal(a, b)


def test_errors():
    with pytest.raises(ValueError, match="ema_decay"):
        ModelEMA(_model(), decay=1.0)
    ema = ModelEMA(_model(), decay=0.9)
    with pytest.raises(ValueError, match="keys differ"):
        ema.update(nn.Linear(3, 4))
    with pytest.raises(ValueError, match="state_dict"):
        ema.load_state_dict({"weights": {}})
