"""create_loss / list_losses / the LOSSES registry and the module attributes the harness relies on."""

import inspect

import pytest
import torch

import unikd.losses as L

LOGIT_LOSSES = ["dkd", "kd", "nkd", "tfkd", "uskd", "zipf_ls"]
FEATURE_LOSSES = ["crd", "nd", "pkt", "reviewkd", "rkd", "sp"]
# What each loss needs at construction (the harness supplies these context arguments).
CONTEXT = {
    "uskd": {"in_features": 4, "num_classes": 5},
    "crd": {
        "in_features": 4,
        "teacher_in_features": 6,
        "num_samples": 20,
        "train_labels": torch.arange(20) % 4,
        "num_negatives": 8,
    },
    "reviewkd": {
        "student_shapes": [(4, 8, 8)],
        "teacher_shapes": [(6, 8, 8)],
        "in_features": 4,
        "teacher_in_features": 6,
    },
    "nd": {"num_classes": 5, "in_features": 4, "teacher_in_features": 6},
}


def test_list_and_create_every_loss():
    assert L.list_losses() == sorted(LOGIT_LOSSES + FEATURE_LOSSES)
    assert set(L.LOSS_FUNCTIONS) == set(L.list_losses())
    for name in L.list_losses():
        m = L.create_loss(name, **CONTEXT.get(name, {}))
        assert isinstance(m, torch.nn.Module)
    for name in LOGIT_LOSSES:
        m = L.create_loss(name, **CONTEXT.get(name, {}))
        assert isinstance(m.requires_teacher, bool) and isinstance(m.requires_features, bool)
        assert m.requires_teacher == (name in ("kd", "dkd", "nkd"))
        assert m.requires_features == (name == "uskd")


def test_feature_modules_declare_requires_and_taps_matching_forward():
    vocabulary = {
        "target",
        "teacher_logits",
        "student_features",
        "teacher_features",
        "student_embedding",
        "teacher_embedding",
        "indices",
        "epoch_progress",
    }
    for name in FEATURE_LOSSES:
        cls = L.LOSSES.get(name)
        assert isinstance(cls.requires, tuple) and set(cls.requires) <= vocabulary, name
        assert cls.taps in ("embedding", "stages"), name
        params = list(inspect.signature(cls.forward).parameters)
        # forward(self, student_logits, *requires, [optional extras with defaults])
        assert params[1] == "student_logits" and tuple(params[2 : 2 + len(cls.requires)]) == cls.requires, (
            name
        )
        extra = list(inspect.signature(cls.forward).parameters.values())[2 + len(cls.requires) :]
        assert all(p.default is not p.empty for p in extra), name


def test_hyperparameters_are_keyword_only_with_defaults():
    without = []
    for name, fn in L.LOSS_FUNCTIONS.items():
        hp = [p for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY]
        assert all(p.default is not p.empty for p in hp), name
        if not hp:
            without.append(name)
    assert sorted(without) == ["nd", "pkt", "reviewkd", "sp"]  # these losses have no hyper-parameters


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
