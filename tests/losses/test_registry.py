"""create_loss / list_losses / the LOSSES registry and the module attributes the harness relies on."""

import inspect

import pytest
import torch

import unikd.losses as L


def test_list_and_create_every_loss():
    assert L.list_losses() == ["dkd", "jsd", "kd", "nkd", "reverse_kl", "taid", "tfkd", "uskd", "zipf_ls"]
    assert set(L.LOSS_FUNCTIONS) == set(L.list_losses())
    for name in L.list_losses():
        kw = {"in_features": 4, "num_classes": 5} if name == "uskd" else {}
        m = L.create_loss(name, **kw)
        assert isinstance(m, torch.nn.Module)
        assert isinstance(m.requires_teacher, bool) and isinstance(m.requires_features, bool)
        assert m.requires_teacher == (name in ("kd", "dkd", "nkd", "reverse_kl", "jsd", "taid"))
        assert m.requires_features == (name == "uskd")


def test_hyperparameters_are_keyword_only_with_defaults():
    for name, fn in L.LOSS_FUNCTIONS.items():
        hp = [p for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY]
        assert hp, name
        assert all(p.default is not p.empty for p in hp), name


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
