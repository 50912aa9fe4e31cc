"""nkd_loss and uskd_loss under torch.compile (CPU) give the eager values and gradients."""

import shutil

import pytest
import torch

from unikd.losses import nkd_loss, uskd_loss


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None, reason="no C++ compiler for inductor"
)
def test_compiled_losses_match_eager():
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    zs = torch.randn(8, 10, generator=g)
    zo = torch.randn(8, 10, generator=g)
    y = torch.randint(0, 10, (8,), generator=g)
    for fn in (nkd_loss, uskd_loss):
        a = zs.clone().requires_grad_(True)
        b = zs.clone().requires_grad_(True)
        eager = fn(a, zo, y)
        eager.backward()
        compiled = torch.compile(fn, fullgraph=True)(b, zo, y)
        compiled.backward()
        assert torch.allclose(compiled, eager, rtol=1e-5, atol=1e-6)
        assert torch.allclose(b.grad, a.grad, rtol=1e-4, atol=1e-6)
