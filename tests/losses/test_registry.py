"""create_loss / list_losses / the LOSSES registry and the module contract the training harness relies on
(docs/architecture.md, "Loss terms"): checked for every registered module, so a new method is checked too."""

import inspect

import pytest
import torch

import unikd.losses as L
from unikd.losses.contract import (
    CONTEXT,
    REQUIRES,
    TAP_KINDS,
    context_arguments,
    hyperparameters,
    requires_of,
)


def _head():  # the student_head / teacher_head context value: a classifier's (weight, bias)
    return torch.randn(5, 4), torch.randn(5)


# Per-sample shapes handed to modules that take student_shapes / teacher_shapes, by tap kind.
_SHAPES = {"stages": [(4, 8, 8), (8, 4, 4), (16, 2, 2)]}


def test_list_and_create_every_loss():
    names = L.list_losses()
    assert {"at", "dkd", "fitnet", "kd", "nkd", "tfkd", "uskd", "zipf_ls", "dist", "ttm", "wttm", "abkd",
            "ctkd",
            "reverse_kl", "jsd", "taid"} <= set(names)
    assert {"crd", "nd", "pkt", "reviewkd", "rkd", "sp"} <= set(names)
    assert set(L.LOSS_FUNCTIONS) <= set(names)
    for name in names:
        cls = L.LOSSES.get(name)
        shapes = _SHAPES.get(getattr(cls, "taps", None), [(4, 8, 8)])
        ctx = {"num_classes": 5, "num_samples": 20, "in_features": 4, "teacher_in_features": 6,
               "student_shapes": shapes, "teacher_shapes": shapes, "total_epochs": 3, "role": "student",
               "train_labels": torch.arange(20) % 5, "student_head": _head, "teacher_head": _head,
               "student_rerun": lambda images, perturb: torch.randn(len(images), 4)}
        m = L.create_loss(name, **{k: ctx[k] for k in context_arguments(cls)})
        assert isinstance(m, torch.nn.Module)


@pytest.mark.parametrize("name", L.list_losses())
def test_every_module_follows_the_term_contract(name):
    cls = L.LOSSES.get(name)
    req = requires_of(cls)  # a tuple of vocabulary names
    assert set(req) <= set(REQUIRES) and len(set(req)) == len(req)
    # forward(student_logits, <requires in order>, [optional extras]): the harness passes them by name
    params = list(inspect.signature(cls.forward).parameters.values())[1:]
    assert params[0].name == "student_logits", name
    assert tuple(p.name for p in params[1:1 + len(req)]) == req, name
    assert all(p.default is not p.empty for p in params[1 + len(req):]), name
    if any(r.endswith("_features") for r in req):
        assert getattr(cls, "taps", None) in TAP_KINDS, f"{name} reads features but declares no taps kind"
    assert getattr(cls, "embedding_tap", "embedding") in TAP_KINDS
    # every hyperparameter has a default, so a config needs to set none of them
    for hp in hyperparameters(cls).values():
        assert hp.default is not hp.empty, f"{name}: hyperparameter {hp.name} needs a default"
        assert hp.name not in CONTEXT


def test_teacher_and_feature_needs():
    need = {n: requires_of(L.LOSSES.get(n)) for n in L.list_losses()}
    assert need["kd"] == need["dkd"] == need["nkd"] == ("teacher_logits", "target")
    assert need["tfkd"] == need["zipf_ls"] == ("target",)
    assert need["uskd"] == ("student_embedding", "target")
    assert need["fitnet"] == need["at"] == need["sp"] == ("student_features", "teacher_features")
    assert need["rkd"] == need["pkt"] == ("student_embedding", "teacher_embedding")
    assert need["crd"] == ("student_embedding", "teacher_embedding", "indices")
    assert need["nd"] == ("student_embedding", "teacher_embedding", "target")
    assert need["reviewkd"] == need["sp"] + ("student_embedding", "teacher_embedding")
    assert need["dist"] == need["ttm"] == need["wttm"] == need["abkd"] == ("teacher_logits",)
    assert need["ctkd"] == need["taid"] == ("teacher_logits", "epoch_progress")
    assert need["reverse_kl"] == need["jsd"] == ("teacher_logits",)


def test_function_hyperparameters_are_keyword_only_with_defaults():
    for name, fn in L.LOSS_FUNCTIONS.items():
        hp = [p for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY]
        assert all(p.default is not p.empty for p in hp), name
        # the module's hyperparameters are the function's (the config is validated against the module),
        # except TAID's: the function's interpolation ``t`` is the state of the module's schedule
        expected = {p.name for p in hp}
        if name == "taid":
            expected = (expected - {"t"}) | {"t_start", "t_end", "alpha", "beta", "adaptive"}
        assert set(hyperparameters(L.LOSSES.get(name))) == expected, name


def test_create_loss_passes_hyperparameters():
    m = L.create_loss("nkd", temperature=3.0, gamma=3.5)
    assert (m.temperature, m.gamma) == (3.0, 3.5)


def test_unknown_name_suggests_closest():
    with pytest.raises(ValueError, match="Did you mean 'uskd'"):
        L.create_loss("usdk")


def test_unknown_argument_lists_valid_ones():
    with pytest.raises(ValueError, match="Valid arguments: temperature, gamma"):
        L.create_loss("nkd", tempreature=2.0)


def test_all_exports_exist():
    for name in L.__all__:
        assert hasattr(L, name), name


def test_meta_device_mismatch_is_a_clear_error():
    zs, zt = torch.randn(2, 3), torch.randn(2, 3, device="meta")
    with pytest.raises(ValueError, match="move both to one device"):
        L.kd_loss(zs, zt)
    with pytest.raises(ValueError, match="move it with"):
        L.nkd_loss(zs, torch.randn(2, 3), torch.zeros(2, dtype=torch.long, device="meta"))
