"""``torchvision:`` / ``timm:`` models. Real builds skip when the vision extra is not installed."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
import urllib.error

import pytest
import torch

from unikd.models import FeatureTap, create_model, default_feature, pool_feature

HAS_TV = importlib.util.find_spec("torchvision") is not None
HAS_TIMM = importlib.util.find_spec("timm") is not None


def test_missing_extra_names_the_install_command(monkeypatch):
    real = importlib.import_module

    def fake_import(name, *args, **kwargs):
        if name.split(".")[0] in ("torchvision", "timm"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", fake_import)
    for spec in ("torchvision:resnet18", "timm:deit_tiny_patch16_224"):
        with pytest.raises(ImportError, match=r"pip install 'unikd\[vision\]'"):
            create_model(spec, num_classes=10)


def test_bad_prefix():
    with pytest.raises(ValueError, match="expected 'torchvision:<name>' or 'timm:<name>'"):
        create_model("torchvision:", num_classes=10)


@pytest.mark.skipif(not HAS_TV, reason="torchvision not installed (pip install 'unikd[vision]')")
def test_torchvision_resnet18():
    model = create_model("torchvision:resnet18", num_classes=10).eval()
    assert default_feature(model) == "layer3"
    with FeatureTap(model, "layer3") as tap, torch.no_grad():
        logits = model(torch.randn(2, 3, 32, 32))
        assert pool_feature(tap.output).shape == (2, 256)
    assert logits.shape == (2, 10)
    with pytest.raises(ValueError, match="Did you mean 'resnet18'"):
        create_model("torchvision:resnet81", num_classes=10)


@pytest.mark.skipif(not HAS_TIMM, reason="timm not installed (pip install 'unikd[vision]')")
def test_timm_deit_tiny():
    model = create_model("timm:deit_tiny_patch16_224", num_classes=10).eval()
    assert default_feature(model) == "blocks.5"
    with FeatureTap(model, "blocks.5") as tap, torch.no_grad():
        logits = model(torch.randn(1, 3, 224, 224))
        assert pool_feature(tap.output).shape == (1, 192)
    assert logits.shape == (1, 10)


class _FakeHeadNet(torch.nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.layer1, self.layer2 = torch.nn.Conv2d(3, 4, 1), torch.nn.Conv2d(4, 4, 1)
        self.layer3, self.layer4 = torch.nn.Conv2d(4, 4, 1), torch.nn.Conv2d(4, 6, 1)
        self.classifier = torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.Linear(6, num_classes))


def _fake_package(monkeypatch, name: str, **attrs) -> list:
    calls: list = []
    module = types.ModuleType(name)
    for key, fn in attrs.items():
        setattr(module, key, fn(calls) if key in ("get_model", "create_model") else fn)
    monkeypatch.setitem(sys.modules, name, module)
    return calls


class _FakeWeights:
    url = "https://download.example/models/resnet18-0123abcd.pth"
    meta = {"categories": ["c"] * 1000}


def _fake_torchvision(monkeypatch, offline: bool = False) -> list:
    def get_model(calls):
        def build(name, weights=None, num_classes=1000, **kw):
            calls.append((name, weights, num_classes, kw))
            if weights is not None and offline:
                raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
            return _FakeHeadNet(num_classes)

        return build

    calls = _fake_package(
        monkeypatch,
        "torchvision.models",
        list_models=lambda: ["resnet18"],
        get_model=get_model,
        get_model_weights=lambda name: types.SimpleNamespace(DEFAULT=_FakeWeights),
    )
    monkeypatch.setitem(sys.modules, "torchvision", types.ModuleType("torchvision"))
    return calls


def test_torchvision_path_with_a_fake_package(monkeypatch):
    # Exercises our glue (name check, random vs pretrained, head swap) without the real package.
    calls = _fake_torchvision(monkeypatch)
    model = create_model("torchvision:resnet18", num_classes=10)
    assert calls[-1] == ("resnet18", None, 10, {}) and model.classifier[1].out_features == 10
    model = create_model("torchvision:resnet18", num_classes=10, pretrained=True)
    assert calls[-1] == ("resnet18", _FakeWeights, 1000, {})
    assert model.classifier[1].out_features == 10 and model.classifier[0].out_features == 6
    with pytest.raises(ValueError, match="Did you mean 'resnet18'"):
        create_model("torchvision:resnet19", num_classes=10)


def test_torchvision_pretrained_offline_names_the_cache_folder(monkeypatch, tmp_path):
    _fake_torchvision(monkeypatch, offline=True)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    with pytest.raises(FileNotFoundError) as err:
        create_model("torchvision:resnet18", num_classes=10, pretrained=True)
    msg = str(err.value)
    assert "resnet18-0123abcd.pth" in msg and str(tmp_path / "th" / "hub" / "checkpoints") in msg
    assert "Temporary failure in name resolution" in msg  # the cause is shown, not hidden


def test_timm_path_with_a_fake_package(monkeypatch):
    def create(calls):
        def build(name, pretrained=False, num_classes=1000, **kw):
            calls.append((name, pretrained, num_classes, kw))
            return _FakeHeadNet(num_classes)

        return build

    calls = _fake_package(
        monkeypatch,
        "timm",
        is_model=lambda n: n == "deit_tiny_patch16_224",
        list_models=lambda: ["deit_tiny_patch16_224"],
        create_model=create,
    )
    create_model("timm:deit_tiny_patch16_224", num_classes=10, in_chans=1)
    assert calls[-1] == ("deit_tiny_patch16_224", False, 10, {"in_chans": 1})
    with pytest.raises(ValueError, match="Did you mean 'deit_tiny_patch16_224'"):
        create_model("timm:deit_tiny_patch16_24", num_classes=10)


def test_zoo_models_have_no_pretrained_weights():
    with pytest.raises(ValueError, match="no bundled pretrained weights"):
        create_model("resnet20", pretrained=True)
