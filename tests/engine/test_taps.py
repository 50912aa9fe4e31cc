"""Tap kinds per model family: the zoo defaults capture what the benchmark code's feature lists hold
(mdistiller a08d46f, mdistiller/models/cifar/*.py: ``feats[1:]``, the hint ``feats[2]``, ``pooled_feat``),
overrides, foreign-style models and the TapSet hooks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unikd.engine.objective.taps import TapSet, default_taps, parse_spec, resolve_taps
from unikd.models import create_model, pool_feature

# Channels of the benchmark code's feats[1:] per model (its stem feature feats[0] is not a stage here).
BENCHMARK_STAGE_CHANNELS = {
    "resnet8x4": (64, 128, 256),
    "resnet32x4": (64, 128, 256),
    "resnet20": (16, 32, 64),
    "wrn_16_2": (32, 64, 128),
    "vgg8": (128, 256, 512, 512),
    "mobilenetv2": (12, 16, 48, 160),
    "shufflenetv1": (240, 480, 960),
    "shufflenetv2": (116, 232, 464),
    "resnet18": (64, 128, 256, 512),
}


@pytest.mark.parametrize("name", sorted(BENCHMARK_STAGE_CHANNELS))
def test_zoo_defaults_match_the_benchmark_feature_lists(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    kinds = {k: resolve_taps(model, k, role="student", overrides={})
             for k in ("stages", "hint", "last", "embedding")}
    assert kinds["hint"] == [kinds["stages"][1]] and kinds["last"] == [kinds["stages"][-1]]
    with TapSet(model, {s for v in kinds.values() for s in v}) as taps, torch.no_grad():
        logits, feats = model(x, return_features=True)
        out = taps.outputs()
    stages = [out[s] for s in kinds["stages"]]
    assert tuple(f.shape[1] for f in stages) == BENCHMARK_STAGE_CHANNELS[name]
    # the stage taps capture exactly the model's own stage outputs (VGG's first block is its stem)
    skip = len(feats) - len(stages)
    assert skip == (1 if name == "vgg8" else 0)
    assert all(torch.equal(a, b) for a, b in zip(stages, feats[skip:]))
    # the embedding is the classifier's input: the pooled pre-classifier feature
    (emb,) = kinds["embedding"]
    path, _ = parse_spec(emb)
    classifier = model.get_submodule(path)
    assert isinstance(classifier, nn.Linear)
    torch.testing.assert_close(classifier(pool_feature(out[emb])), logits)


def test_uskd_kind_is_the_feature_key_or_the_default_feature():
    model = create_model("resnet20", num_classes=10)
    assert resolve_taps(model, "uskd", role="student", overrides={}) == ["layer2"]
    assert resolve_taps(model, "uskd", role="student", overrides={}, feature="layer1") == ["layer1"]


def test_overrides_win_and_unknown_kinds_or_models_fail_with_the_key():
    model = create_model("resnet20", num_classes=10)
    assert resolve_taps(model, "hint", role="teacher", overrides={"hint": ["layer3"]}) == ["layer3"]
    with pytest.raises(ValueError, match="unknown tap kind 'hnit'. Did you mean 'hint'"):
        resolve_taps(model, "hnit", role="student", overrides={})
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))
    with pytest.raises(ValueError, match=r"no default 'stages' tap .* Sequential; set taps.teacher.stages="):
        resolve_taps(plain, "stages", role="teacher", overrides={})
    assert resolve_taps(plain, "embedding", role="teacher", overrides={}) == ["3:input"]


class _ForeignResNet(nn.Module):
    """The module layout of torchvision / timm ResNets (layer1..layer4, avgpool, fc), not a zoo model."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.layer1, self.layer2 = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.layer3 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.layer4 = nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def test_foreign_resnet_layout_gets_defaults():
    model = _ForeignResNet()
    assert default_taps(model, "stages") == ["layer1", "layer2", "layer3", "layer4"]
    assert default_taps(model, "hint") == ["layer2"] and default_taps(model, "embedding") == ["fc:input"]
    assert default_taps(model, "uskd") == ["layer3"]


def test_tapset_captures_inputs_outputs_and_refuses_tuples():
    model = _ForeignResNet()
    x = torch.randn(2, 3, 16, 16)
    with TapSet(model, ["fc:input", "layer2", "avgpool"]) as taps:
        model(x)
        out = taps.outputs()
        assert taps.shapes() == {"fc:input": (64,), "layer2": (16, 8, 8), "avgpool": (64, 1, 1)}
    torch.testing.assert_close(out["fc:input"], pool_feature(out["avgpool"]))
    assert len(TapSet()) == 0 and TapSet().outputs() == {}

    class Pair(nn.Module):
        def forward(self, x):
            return x, x

    holder = nn.Sequential(Pair())
    with TapSet(holder, ["0"]) as taps:
        holder(x)
        with pytest.raises(ValueError, match="captured a tuple, not a tensor"):
            taps.outputs()
    for bad in ("", "fc:output", ":input"):
        with pytest.raises(ValueError, match="is not valid"):
            parse_spec(bad)
