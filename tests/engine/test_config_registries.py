"""Config choices come from the registries: a dataset, optimiser or schedule registered from outside the
package can be named in a config, and an unknown name fails with the registered names in the message."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from unikd.data import DATASETS
from unikd.engine.config import load_config
from unikd.engine.optim.optimizers import (
    OPTIMIZERS,
    build_optimizer,
    create_optimizer,
    list_optimizers,
    register_optimizer,
)
from unikd.engine.optim.schedules import (
    SCHEDULES,
    build_scheduler,
    create_schedule,
    list_schedules,
    register_schedule,
)
from unikd.registry import Registry


def _plain_sgd(groups: list[dict], *, lr: float, **_: object) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=lr)


def _halving(**_: object):
    return lambda step: 0.5**step


@pytest.fixture
def registered() -> Iterator[None]:
    """Register ``plainsgd``, ``halving`` and ``tinyset`` through the public entry points, then remove them
    (the registries have no public removal: an entry is meant to live as long as the process)."""
    register_optimizer("plainsgd", _plain_sgd)
    register_schedule("halving", _halving)
    DATASETS.register("tinyset", lambda **kw: None)
    try:
        yield
    finally:
        added: list[tuple[Registry, str]] = [(OPTIMIZERS, "plainsgd"), (SCHEDULES, "halving"),
                                             (DATASETS, "tinyset")]
        for registry, name in added:
            registry._entries.pop(name, None)


def test_built_in_names_are_registered():
    assert list_optimizers() == ["adamw", "sgd"]
    assert list_schedules() == ["constant", "cosine", "multistep"]


def test_registered_names_validate_in_a_config(registered):
    cfg = load_config(None, ["optim.name=plainsgd", "sched.name=halving", "data.name=tinyset"])
    assert (cfg.optim.name, cfg.sched.name, cfg.data.name) == ("plainsgd", "halving", "tinyset")


def test_registered_optimizer_and_schedule_are_built(registered):
    model = nn.Linear(3, 2)
    opt = build_optimizer([model], name="plainsgd", lr=0.4, weight_decay=0.0)
    assert type(opt) is torch.optim.SGD and opt.defaults["momentum"] == 0
    sched = build_scheduler(opt, name="halving", epochs=2, steps_per_epoch=2)
    lrs = []
    for _ in range(3):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == [0.4, 0.2, 0.1]
    assert create_schedule("halving")(3) == 0.125
    assert isinstance(create_optimizer("plainsgd", [{"params": list(model.parameters())}], lr=0.1),
                      torch.optim.SGD)


@pytest.mark.parametrize(
    ("override", "hint", "listing"),
    [("optim.name=plainsgdd", "plainsgd", "adamw, plainsgd, sgd"),
     ("sched.name=halvin", "halving", "constant, cosine, halving, multistep"),
     ("data.name=tinyse", "tinyset", "tinyset")],
)
def test_unknown_names_suggest_and_list_the_registered_ones(registered, override: str, hint: str,
                                                            listing: str):
    key, _, value = override.partition("=")
    with pytest.raises(ValueError, match=re.escape(f"{key}={value!r} is not valid.")) as err:
        load_config(None, [override])
    message = str(err.value)
    assert f"Did you mean {hint!r}?" in message and listing in message, message


def test_unregistered_names_fail_in_the_factories():
    with pytest.raises(ValueError, match=r"unknown optimizer \(optim.name\) 'Lion'.*Valid names: adamw, sgd"):
        build_optimizer([nn.Linear(2, 2)], name="Lion", lr=0.1)
    with pytest.raises(ValueError, match=r"unknown schedule \(sched.name\) 'cosin'.*Did you mean 'cosine'"):
        build_scheduler(torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1), name="cosin", epochs=1,
                        steps_per_epoch=1)


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="registered twice"):
        register_optimizer("sgd", _plain_sgd)
    with pytest.raises(ValueError, match="registered twice"):
        register_schedule("cosine", _halving)


def _load_blobs(root=None, split="train", *, resize=None, samples_per_class=None, val_split=0, seed=0,
                split_seed=None, cache_dir=None, download=False):
    """A dataset defined outside the package: three classes of 8x8 grey images told apart by brightness."""
    import numpy as np

    from unikd.data.dataset import check_split, finish, parse_resize

    check_split(split)
    rng = np.random.default_rng(0 if split == "train" else 1)
    y = np.repeat(np.arange(3), 40)
    x = (rng.integers(0, 60, size=(120, 1, 8, 8)) + 60 * y[:, None, None, None]).astype(np.uint8)
    return finish(x, y, ["dark", "mid", "light"], split=split, name="blobs", mean=[0.5], std=[0.3],
                  val_split=val_split, samples_per_class=samples_per_class, seed=seed, split_seed=split_seed,
                  resize=parse_resize(resize))


def test_a_run_trains_with_a_dataset_optimizer_and_schedule_registered_outside(registered, tmp_path):
    from unikd.engine import train

    DATASETS.register("blobs", _load_blobs)
    try:
        cfg = load_config(None, [
            "model=tiny_cnn", "data.name=blobs", "optim.name=plainsgd", "sched.name=halving", "epochs=2",
            "data.batch_size=40", "data.crop_padding=0", "data.hflip=false", "device=cpu",
            "tensorboard=false", f"out_dir={tmp_path}",
        ])
        summary = train(cfg)
    finally:
        DATASETS._entries.pop("blobs", None)
    assert summary["finished"] and summary["epochs"] == 2
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lrs == [pytest.approx(0.05 * 0.5**2), pytest.approx(0.05 * 0.5**5)]  # halving: 3 steps per epoch
