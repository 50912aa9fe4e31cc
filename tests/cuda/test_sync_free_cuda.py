"""With checks off, a step of every registered loss module and a whole training step (teacher forward,
student forward, CE + term, backward, fused SGD update) issue no host sync on CUDA:
``torch.cuda.set_sync_debug_mode("error")`` raises on any."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from module_inputs import Case
from test_sync_free import NOT_ONE_GRAPH

import unikd.losses as L
from unikd.losses.checks import checks
from unikd.models import create_model

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


class no_sync:
    def __enter__(self):
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")

    def __exit__(self, *exc):
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("name", [n for n in L.list_losses() if n not in NOT_ONE_GRAPH])
def test_module_step_has_no_host_sync(name):
    case = Case(name, device="cuda")
    module = case.module().cuda().train()
    module(**case.inputs())  # the first, checked step may read state once
    inputs = case.inputs()
    with checks("off"), no_sync():
        module(**inputs).backward()


@pytest.mark.parametrize("method", ["kd", "nkd", "uskd"])
def test_training_step_has_no_host_sync(method):
    torch.manual_seed(0)
    student = create_model("resnet8", num_classes=10).cuda().train()
    teacher = create_model("resnet20", num_classes=10).cuda().eval()
    term = L.create_loss(method, **({"in_features": 32, "num_classes": 10} if method == "uskd" else {}))
    term = term.cuda()
    params = list(student.parameters()) + list(term.parameters())
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, fused=True)
    x, y = torch.randn(8, 3, 16, 16, device="cuda"), torch.randint(0, 10, (8,), device="cuda")

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            t = teacher(x)
        logits, feats = student(x, return_features=True)
        extra = term(logits, feats[1].mean(dim=(2, 3)), y) if method == "uskd" else term(logits, t, y)
        (F.cross_entropy(logits, y) + extra).backward()
        opt.step()

    step()  # the first step creates the momentum buffers
    with checks("off"), no_sync():
        step()
