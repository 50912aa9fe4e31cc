"""Forward shapes, stage outputs, small inputs, registry errors and checkpoint-compatible names of the zoo."""

from __future__ import annotations

import pytest
import torch

from unikd.models import BENCHMARK_MODELS, ZooModel, create_model, list_models

# Stage-output shapes (C, H, W) at 32x32 input.
_R3 = [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
_R3X4 = [(64, 32, 32), (128, 16, 16), (256, 8, 8)]
_VGG = [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 4, 4)]
_RV2 = [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)]
STAGES = {
    **{f"resnet{d}": _R3 for d in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": _R3X4,
    "resnet32x4": _R3X4,
    "resnet18": _RV2,
    "resnet34": _RV2,
    "resnet50": [(256, 32, 32), (512, 16, 16), (1024, 8, 8), (2048, 4, 4)],
    "wrn_16_1": _R3,
    "wrn_40_1": _R3,
    "wrn_16_2": [(32, 32, 32), (64, 16, 16), (128, 8, 8)],
    "wrn_40_2": [(32, 32, 32), (64, 16, 16), (128, 8, 8)],
    **{f"vgg{d}": _VGG for d in (8, 11, 13, 16, 19)},
    "mobilenetv2": [(12, 16, 16), (16, 8, 8), (48, 4, 4), (160, 2, 2)],
    "shufflenetv1": [(240, 16, 16), (480, 8, 8), (960, 4, 4)],
    "shufflenetv2": [(116, 16, 16), (232, 8, 8), (464, 4, 4)],
    "tiny_cnn": _R3,
}
DEFAULT_FEATURE = {
    **{n: "layer2" for n in STAGES if n.startswith("resnet")},
    "resnet18": "layer3",
    "resnet34": "layer3",
    "resnet50": "layer3",
    **{n: "block2" for n in STAGES if n.startswith("wrn")},
    **{n: "block3" for n in STAGES if n.startswith("vgg")},
    "mobilenetv2": "blocks.4",
    "shufflenetv1": "layer2",
    "shufflenetv2": "layer2",
    "tiny_cnn": "stage2",
}


def test_list_models_is_the_issue_list():
    expected = set(STAGES)
    assert set(list_models()) == expected
    assert set(BENCHMARK_MODELS) == expected - {"tiny_cnn"}
    assert list_models("wrn*") == ["wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2"]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_forward_and_stage_shapes(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7).eval()
    assert isinstance(model, ZooModel)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits, feats = model(x, return_features=True)
        plain = model(x)
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
    torch.testing.assert_close(plain, logits)
    assert [tuple(f.shape[1:]) for f in feats] == STAGES[name]
    assert all(f.shape[0] == 2 for f in feats)
    assert model.default_feature == DEFAULT_FEATURE[name] == model.stage_names[-2]
    assert list(model.stage_channels) == [s[0] for s in STAGES[name]]
    model.get_submodule(model.default_feature)  # the declared path exists


@pytest.mark.parametrize("name", ["resnet8", "resnet20", "wrn_16_1", "resnet8x4", "tiny_cnn", "mobilenetv2"])
def test_small_single_channel_inputs(name):
    # scikit-learn digits: 8x8 grey images, 10 classes.
    model = create_model(name, num_classes=10, in_chans=1)
    logits, feats = model(torch.randn(4, 1, 8, 8), return_features=True)
    assert logits.shape == (4, 10)
    logits.sum().backward()  # trainable at that size (BN sees > 1 value per channel)
    assert model.get_submodule(model.default_feature) is not None


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_1", "shufflenetv2", "mobilenetv2"])
def test_channels_last_matches_contiguous(name):
    model = create_model(name).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        out = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["shufflenetv1"])  # the channel shuffle is the tracing risk
def test_compiles_without_graph_breaks(name):
    torch._dynamo.reset()
    model = create_model(name).eval()
    x = torch.randn(2, 3, 32, 32)
    # fullgraph=True fails on any graph break; the eager backend keeps this a tracing-only check.
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        logits, feats = compiled(x, return_features=True)
        ref_logits, ref_feats = model(x, return_features=True)
    torch.testing.assert_close(logits, ref_logits)
    torch.testing.assert_close(feats[-2], ref_feats[-2])
    torch._dynamo.reset()


def test_unknown_name_suggests_closest():
    with pytest.raises(ValueError, match="Did you mean 'resnet32x4'"):
        create_model("resnet32x5")
    with pytest.raises(ValueError, match="Did you mean 'wrn_40_2'"):
        create_model("wrn_40_3")


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="num_classes"):
        create_model("resnet8", num_classes=0)
    with pytest.raises(ValueError, match="in_chans"):
        create_model("resnet8", in_chans=0)
    with pytest.raises(ValueError, match=r"unexpected argument\(s\) \['width_mult'\].*in_chans"):
        create_model("resnet8", width_mult=2)
    with pytest.raises(ValueError, match="torchvision:<name>"):
        create_model("keras:resnet50")


def test_reference_aliases():
    assert type(create_model("ShuffleV2")).__name__ == "ShuffleNetV2"
    assert type(create_model("vgg13_bn")).__name__ == "VGG"
    assert type(create_model("mobile_half")).__name__ == "MobileNetV2"


# A few state_dict keys of the CRD/RepDistiller and DKD/mdistiller model files; matching names let their
# released CIFAR-100 teacher checkpoints load with load_state_dict(ckpt["model"]).
REFERENCE_KEYS = {
    "resnet8x4": ["conv1.weight", "layer1.0.downsample.0.weight", "layer3.0.bn2.running_var", "fc.bias"],
    "resnet56": ["layer2.0.downsample.1.weight", "layer3.8.conv2.weight", "fc.weight"],
    "wrn_40_2": [
        "block1.layer.0.convShortcut.weight",
        "block3.layer.5.bn2.weight",
        "bn1.weight",
        "fc.weight",
    ],
    "vgg13": [
        "block0.0.weight",
        "block0.0.bias",
        "block0.4.running_mean",
        "block4.3.weight",
        "classifier.bias",
    ],
    "mobilenetv2": ["conv1.0.weight", "blocks.6.0.conv.7.weight", "conv2.1.bias", "classifier.0.weight"],
    "shufflenetv1": ["conv1.weight", "layer1.0.conv3.weight", "layer3.3.bn3.bias", "linear.weight"],
    "shufflenetv2": [
        "layer1.0.conv5.weight",
        "layer2.7.conv3.weight",
        "conv2.weight",
        "bn2.bias",
        "linear.bias",
    ],
    "resnet50": ["layer1.0.shortcut.0.weight", "layer4.2.conv3.weight", "linear.weight"],
}


@pytest.mark.parametrize("name", sorted(REFERENCE_KEYS))
def test_reference_state_dict_names(name):
    keys = create_model(name).state_dict().keys()
    missing = [k for k in REFERENCE_KEYS[name] if k not in keys]
    assert not missing


def test_wrn_16_1_first_group_has_identity_shortcuts():
    keys = create_model("wrn_16_1").state_dict().keys()
    assert not any(k.startswith("block1.") and "convShortcut" in k for k in keys)
    assert "block2.layer.0.convShortcut.weight" in keys
