"""Real torchvision / timm students train under KD, NKD and USKD (one short epoch each), USKD's weak head on
the default feature (torchvision ResNet: layer3; timm ViT: the middle block's cls token), and the
pretrained-weight paths read the libraries' own caches (never the network)."""

from __future__ import annotations

import json
import math
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from unikd.engine import evaluate_checkpoint, load_config, train
from unikd.models import create_model, default_feature

MODELS = {
    # name: (model_args, default feature, its pooled width)
    "torchvision:resnet18": ({}, "layer3", 256),
    "timm:deit_tiny_patch16_224": (
        {"img_size": 32},
        "blocks.5",
        192,
    ),  # 12 blocks: the middle one's cls token
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """4 classes of 32x32 RGB images whose class is a bright quadrant: 16 per class train, 4 test."""
    rng = np.random.default_rng(0)

    def split(n: int):
        y = np.repeat(np.arange(4), n)
        x = rng.integers(0, 90, size=(len(y), 32, 32, 3))
        for i, c in enumerate(y):
            x[i, (c // 2) * 16 : (c // 2) * 16 + 16, (c % 2) * 16 : (c % 2) * 16 + 16] += 150
        return x.clip(0, 255).astype(np.uint8), y

    (xa, ya), (xb, yb) = split(16), split(4)
    path = tmp_path_factory.mktemp("vision") / "quad.npz"
    np.savez(path, x_train=xa, y_train=ya, x_test=xb, y_test=yb)
    return path


def _args(d: dict) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in d.items()) + "}"


@pytest.mark.parametrize("name", MODELS)
def test_one_epoch_under_kd_nkd_uskd(name, data, tmp_path):
    args, feature, width = MODELS[name]
    model = create_model(name, num_classes=4, **args)
    assert default_feature(model) == feature
    teacher = tmp_path / "teacher.pt"
    torch.save(create_model(name, num_classes=4, **args).state_dict(), teacher)  # a random-init teacher
    base = [
        "data.name=npz",
        f"data.root={data}",
        "data.batch_size=16",
        "data.eval_batch_size=16",
        "epochs=1",
        "device=cpu",
        "tensorboard=false",
        "optim.lr=0.01",
        "sched.name=constant",
        f"model={name}",
        f"model_args={_args(args)}",
    ]
    for method in ("kd", "nkd", "uskd"):
        out = tmp_path / method
        extra = [f"method={method}", f"out_dir={out}"]
        if method != "uskd":
            extra += [
                f"teacher.model={name}",
                f"teacher.checkpoint={teacher}",
                f"teacher.model_args={_args(args)}",
            ]
        summary = train(load_config(None, base + extra))
        assert summary["finished"] and summary["epochs"] == 1, method
        record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
        for key in ("train/loss", "train/ce", f"train/{method}", "val/top1"):
            assert math.isfinite(record[key]), (method, key)
        ckpt = torch.load(out / "last.pt", weights_only=True)
        assert ckpt["global_step"] == 4  # 64 images / batch 16
        if method == "uskd":  # the weak head reads the default feature: (classes, pooled width)
            (head,) = [v for k, v in ckpt["objective"].items() if k.endswith("head.weight")]
            assert head.shape == (4, width)
        changed = [
            not torch.equal(v, model.state_dict()[k])
            for k, v in ckpt["model"].items()
            if v.is_floating_point() and k in model.state_dict()
        ]
        assert any(changed)
        # unikd eval rebuilds the model (model_args from the checkpoint) and reproduces the run's numbers
        result = evaluate_checkpoint(out / "last.pt", device="cpu")
        assert result["top1"] == pytest.approx(record["val/top1"]) and result["count"] == 16


def test_torchvision_pretrained_reads_the_torch_hub_cache(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = torchvision.models.get_model_weights("resnet18").DEFAULT
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, folder / weights.url.rsplit("/", 1)[-1])  # a filled cache: no download happens
    model = create_model("torchvision:resnet18", num_classes=10, pretrained=True)
    assert torch.equal(model.conv1.weight, state["conv1.weight"]) and model.fc.out_features == 10
    from unikd.engine.teacher.pretrained import pretrained_model

    teacher, meta = pretrained_model("torchvision:resnet18", num_classes=1000)  # the library's own head
    assert torch.equal(teacher.fc.weight, state["fc.weight"])
    assert meta["data"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    with pytest.raises(ValueError, match="predict 1000 classes but the data has 4"):
        pretrained_model("torchvision:resnet18", num_classes=4)  # a random head is no teacher

    def offline(*a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(FileNotFoundError) as err:
        create_model("torchvision:resnet18", num_classes=10, pretrained=True)
    assert str(tmp_path / "empty" / "hub" / "checkpoints") in str(err.value)
    assert weights.url.rsplit("/", 1)[-1] in str(err.value)


def test_timm_pretrained_offline_names_the_hugging_face_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # never the network, whatever the environment
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(FileNotFoundError) as err:
        create_model("timm:deit_tiny_patch16_224", num_classes=10, pretrained=True)
    assert "timm/deit_tiny_patch16_224" in str(err.value) and "Hugging Face cache" in str(err.value)
