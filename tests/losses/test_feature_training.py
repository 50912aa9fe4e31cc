"""Each feature loss in a tiny training loop driven only by the module contract: built with the context
arguments measured from the networks, called as ``module(student_logits, **{name: inputs[name] for name in
module.requires})``, its parameters in the optimiser. Two epochs of three steps on random data."""

import inspect

import pytest
import torch
import torch.nn.functional as F

from unikd.losses import LOSSES, create_loss
from unikd.models import create_model

N, C, BATCH = 24, 3, 8
HYPER = {"crd": {"num_negatives": 10, "feat_dim": 8}}


def _context(student, teacher, labels):
    x = torch.zeros(2, 3, 16, 16)
    with torch.no_grad():
        _, fs = student(x, return_features=True)
        _, ft = teacher(x, return_features=True)
    return {
        "student_shapes": [tuple(f.shape[1:]) for f in fs],
        "teacher_shapes": [tuple(f.shape[1:]) for f in ft],
        "in_features": fs[-1].shape[1],
        "teacher_in_features": ft[-1].shape[1],
        "num_samples": N,
        "num_classes": C,
        "train_labels": labels,
    }


def _build(name, context):
    accepted = inspect.signature(LOSSES.get(name)).parameters
    return create_loss(name, **HYPER.get(name, {}), **{k: v for k, v in context.items() if k in accepted})


@pytest.mark.parametrize("name", ["rkd", "pkt", "sp", "crd", "reviewkd", "nd"])
def test_two_epochs_through_the_contract(name):
    torch.manual_seed(0)
    images, labels = torch.randn(N, 3, 16, 16), torch.arange(N) % C
    student = create_model("tiny_cnn", num_classes=C, width=4)
    teacher = create_model("tiny_cnn", num_classes=C, width=8).eval()
    term = _build(name, _context(student, teacher, labels))
    before = {k: v.clone() for k, v in term.state_dict().items()}
    opt = torch.optim.SGD(list(student.parameters()) + list(term.parameters()), lr=0.05, momentum=0.9)
    for epoch in range(2):
        order = torch.randperm(N)
        for step in range(N // BATCH):
            index = order[step * BATCH : (step + 1) * BATCH]
            logits, fs = student(images[index], return_features=True)
            with torch.no_grad():
                _, ft = teacher(images[index], return_features=True)
            inputs = {
                "target": labels[index],
                "student_features": fs,
                "teacher_features": ft,
                "student_embedding": fs[-1].mean(dim=(2, 3)),
                "teacher_embedding": ft[-1].mean(dim=(2, 3)),
                "indices": index,
            }
            value = term(logits, **{k: inputs[k] for k in term.requires})
            assert value.dim() == 0 and value.dtype == torch.float32 and torch.isfinite(value), (epoch, step)
            opt.zero_grad()
            (F.cross_entropy(logits, labels[index]) + value).backward()
            opt.step()
    assert student.fc.weight.grad is not None
    after = term.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    # trainable heads / fusion modules / projector moved, banks and class sums filled
    expected = {
        "rkd": [],
        "pkt": [],
        "sp": [],
        "crd": ["student_head.weight", "memory_student", "normalisers"],
        "reviewkd": ["abfs.0.conv1.0.weight"],
        "nd": ["class_sums", "fitted"],
    }[name]
    assert set(expected) <= set(changed), changed
