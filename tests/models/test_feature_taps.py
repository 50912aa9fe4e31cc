"""FeatureTap, pool_feature, default_feature and feature_dim on zoo and foreign modules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unikd.models import FeatureTap, create_model, default_feature, feature_dim, pool_feature


class ForeignNet(nn.Module):
    """A model we know nothing about (not a zoo model, no ResNet/ViT layout)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Sequential(nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(12, 16, 3))
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        return self.head(self.body(self.stem(x)).mean((2, 3)))


class FakeTorchvisionResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        for i in range(1, 5):
            setattr(self, f"layer{i}", nn.Conv2d(3, 3, 1))
        self.fc = nn.Linear(3, 2)


class FakeViT(nn.Module):
    """timm-like layout: cls token + ``blocks`` of token mixers on (N, L, D)."""

    def __init__(self, depth: int = 6, dim: int = 8) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.patch = nn.Linear(4, dim)
        self.blocks = nn.Sequential(*[nn.Linear(dim, dim) for _ in range(depth)])
        self.head = nn.Linear(dim, 3)

    def forward(self, x):  # x: (N, L, 4)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), self.patch(x)], 1)
        return self.head(self.blocks(tokens)[:, 0])


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_1", "vgg8", "mobilenetv2", "shufflenetv2", "resnet18"])
def test_tap_matches_return_features_on_every_stage(name):
    model = create_model(name).eval()
    x = torch.randn(2, 3, 32, 32)
    taps = [FeatureTap(model, path) for path in model.stage_names]
    with torch.no_grad():
        _, feats = model(x, return_features=True)
    for tap, feat in zip(taps, feats):
        assert tap.output is feat
        tap.remove()


def test_default_feature_tap_gives_gradients_to_the_backbone():
    model = create_model("resnet8")
    with FeatureTap(model, default_feature(model)) as tap:
        model(torch.randn(3, 3, 32, 32))
        pooled = pool_feature(tap.output)
    assert pooled.shape == (3, 32)
    pooled.sum().backward()
    assert model.layer1[0].conv1.weight.grad is not None
    assert model.layer3[0].conv1.weight.grad is None  # after the tapped stage: untouched


def test_hooks_are_removed():
    model = ForeignNet()
    target = model.body[1]
    with FeatureTap(model, "body.1") as tap:
        assert len(target._forward_hooks) == 1 and len(model._forward_pre_hooks) == 1
        model(torch.randn(2, 3, 8, 8))
        assert tap.output.shape == (2, 12, 4, 4)
    assert len(target._forward_hooks) == 0 and len(model._forward_pre_hooks) == 0
    assert not tap.active
    tap.remove()  # idempotent
    with pytest.raises(RuntimeError, match="was removed"):
        _ = tap.output


def test_output_before_forward_and_stale_outputs():
    model = ForeignNet()
    tap = FeatureTap(model, "body.2")
    with pytest.raises(RuntimeError, match="has not seen a forward pass"):
        _ = tap.output
    model(torch.randn(2, 3, 8, 8))
    first = tap.output
    model(torch.randn(2, 3, 8, 8))
    assert tap.output is not first  # refreshed by every forward
    tap.remove()


def test_unknown_path_lists_close_names():
    model = ForeignNet()
    with pytest.raises(ValueError, match=r"no submodule 'body\.5'.*body\.\d"):
        FeatureTap(model, "body.5")
    zoo = create_model("resnet20")
    with pytest.raises(ValueError, match="layer2"):
        FeatureTap(zoo, "layer_2")
    with pytest.raises(ValueError, match="non-empty string"):
        FeatureTap(zoo, "")


def test_default_feature_foreign_layouts():
    assert default_feature(FakeTorchvisionResNet()) == "layer3"
    assert default_feature(FakeViT(depth=12)) == "blocks.5"
    assert default_feature(FakeViT(depth=6)) == "blocks.2"
    with pytest.raises(ValueError, match=r"feature=<module path>.*Candidates: body"):
        default_feature(ForeignNet())


def test_vit_default_feature_is_the_cls_token():
    vit = FakeViT(depth=4)
    x = torch.randn(2, 5, 4)
    with FeatureTap(vit, default_feature(vit)) as tap:
        vit(x)
        feat = pool_feature(tap.output)
    tokens = torch.cat([vit.cls_token.expand(2, -1, -1), vit.patch(x)], 1)
    torch.testing.assert_close(feat, vit.blocks[:2](tokens)[:, 0])


def test_pool_feature():
    t4 = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(pool_feature(t4), t4.mean((2, 3)))
    t3 = torch.randn(2, 7, 6)
    assert torch.equal(pool_feature(t3), t3[:, 0])
    t2 = torch.randn(2, 6)
    assert pool_feature(t2) is t2
    with pytest.raises(ValueError, match="2-D, 3-D or 4-D"):
        pool_feature(torch.randn(2))
    with pytest.raises(ValueError, match="expects a tensor"):
        pool_feature((t2, t2))


def test_feature_dim_and_mode_restored():
    model = create_model("wrn_16_2")
    assert feature_dim(model) == 64
    assert model.training
    assert feature_dim(create_model("resnet50"), "layer3") == 1024
    assert feature_dim(ForeignNet(), "body.0", input_size=(3, 8, 8)) == 12
