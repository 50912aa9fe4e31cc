"""Build the inputs of any registered loss by its parameter names, and call it (tests of every loss).

``*logits`` arguments get ``(N, C)`` tensors, ``*emb`` ``(N, D)`` embeddings, ``*feat`` a ``(N, C, H, W)``
map, ``*feats`` a list of maps; ``target`` is passed where the loss takes one, and the few other arguments
in ``OTHER_ARGS`` get a fixed valid value. A loss with another kind of argument fails loudly here.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from unikd.losses import LOSS_FUNCTIONS

# argument name -> value maker(device): inputs that are neither logits, feature maps nor the target
OTHER_ARGS = {
    "global_t": lambda device: torch.ones(1, device=device, requires_grad=True),  # CTKD's temperature
    "epoch_progress": lambda device: 3.5,
}

# losses that compare the samples of a batch with each other need more than one row
MIN_BATCH = {"rkd": 2}


def _positional(fn) -> list[str]:
    return [p.name for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def inputs_of(name: str) -> list[str]:
    """The tensor arguments of loss ``name`` other than ``target``, each of a kind this file can build:
    ``*logits`` (N, C), ``*emb`` (N, D), ``*feat`` (N, C, H, W), ``*feats`` (a list of (N, C, H, W) maps)."""
    args = [a for a in _positional(LOSS_FUNCTIONS[name]) if a != "target" and a not in OTHER_ARGS]
    unknown = [a for a in args if not a.endswith(("logits", "emb", "feat", "feats"))]
    if unknown:
        pytest.fail(f"loss {name!r} takes {unknown}: teach inputs_of/build in {__file__} to make them")
    return args


def build(name: str, n: int, c: int, make) -> list:
    """Inputs of loss ``name``: ``make(shape)`` gives one float64 tensor."""
    out: list = []
    for arg in inputs_of(name):
        if arg.endswith("logits"):
            out.append(make((n, c)))
        elif arg.endswith("emb"):
            out.append(make((n, 5)))
        elif arg.endswith("feats"):
            out.append([make((n, 2, 4, 4)), make((n, 3, 2, 2))])
        else:
            out.append(make((n, 3, 2, 2)))
    return out


def leaves(inputs: list) -> list[torch.Tensor]:
    return [t for x in inputs for t in (x if isinstance(x, list) else [x])]


def convert(inputs: list, fn) -> list:
    return [[fn(t) for t in x] if isinstance(x, list) else fn(x) for x in inputs]


def arguments(name: str, inputs: list, target: torch.Tensor) -> list:
    """The positional arguments of loss ``name``: ``inputs`` (in order), ``target`` and ``OTHER_ARGS``."""
    it = iter(inputs)
    device = leaves(inputs)[0].device
    return [target if a == "target" else OTHER_ARGS[a](device) if a in OTHER_ARGS else next(it)
            for a in _positional(LOSS_FUNCTIONS[name])]


def call(name: str, inputs: list, target: torch.Tensor) -> torch.Tensor:
    """Call loss ``name`` with ``inputs`` (in argument order) and ``target`` where it takes one."""
    return LOSS_FUNCTIONS[name](*arguments(name, inputs, target))


def uses_target(name: str) -> bool:
    return "target" in _positional(LOSS_FUNCTIONS[name])
