"""The parts of a run that come from the config alone: its datasets and loaders, the sample images of the
dummy forwards, the student model and the teacher (live or cached). :func:`unikd.engine.loop.setup.build`
assembles them; the cache builder reuses the same builders so that it replays the exact training stream.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from unikd.engine.config import Config
from unikd.engine.config.inputs import dataset_kwargs, model_kwargs
from unikd.engine.run.distributed import DistInfo
from unikd.engine.teacher.live import LiveTeacher, TeacherSource, load_teacher_model


def build_datasets(cfg: Config) -> tuple[Any, Any]:
    d = cfg.data
    val_split = "val" if d.val_split > 0 else "test"
    if d.loader == "torch" and d.name == "imagefolder":
        # Lazily decoded folder (too large for memory): the DataLoader path decodes in workers.
        from unikd.data import FolderDataset

        if d.root is None:
            raise ValueError("data.name=imagefolder needs data.root=<folder with train/ and test/ inside>")
        if d.val_split or d.samples_per_class or d.drop_classes is not None:
            raise ValueError(
                "data.loader=torch with imagefolder reads whole splits; set data.val_split=0, "
                "data.samples_per_class=null and data.drop_classes=null, or use data.loader=memory"
            )
        return (
            FolderDataset(d.root, "train", resize=d.image_size),
            FolderDataset(d.root, val_split, resize=d.image_size),
        )
    from unikd.data import apply_drop, create_dataset

    kwargs = dataset_kwargs(dataclasses.asdict(d), split="train", seed=cfg.seed)
    train_ds = create_dataset(d.name, **kwargs)
    val_ds = create_dataset(d.name, **{**kwargs, "split": val_split})
    # after the validation hold-out, so validation keeps every class; the training split alone loses some
    from unikd.engine.config.transfer import (
        apply_transfer,  # data.transfer: the student trains on other images
    )

    return apply_transfer(cfg, apply_drop(train_ds, d.drop_classes, d.drop_seed)), val_ds


def build_loaders(cfg: Config, info: DistInfo, train_ds: Any, val_ds: Any) -> tuple[Any, Any]:
    from unikd.data import InMemoryLoader, TorchLoader

    d = cfg.data
    common: dict[str, Any] = {
        "rank": info.rank,
        "world_size": info.world_size,
        "seed": cfg.seed,
        "device": info.device,
    }
    cls: Any = InMemoryLoader
    if d.loader == "torch":
        cls, common = TorchLoader, {**common, "num_workers": d.num_workers}
    from unikd.data.views import view_options

    views = view_options(dataclasses.asdict(d))
    train = cls(
        train_ds,
        d.batch_size,
        train=True,
        crop_padding=d.crop_padding,
        hflip=d.hflip,
        mixup_alpha=d.mixup_alpha,
        cutmix_alpha=d.cutmix_alpha,
        mix_prob=d.mix_prob,
        randaugment=d.randaugment,
        random_erasing=d.random_erasing,
        **views,
        **common,
    )
    # The eval batch must split evenly over ranks too; round it up to a multiple of the world size.
    eval_bs = -(-d.eval_batch_size // info.world_size) * info.world_size
    val = cls(val_ds, eval_bs, train=False, **views, **common)
    return train, val


def sample_images(ds: Any, device: torch.device, cfg: Config) -> torch.Tensor:
    """Two normalised images for the dummy forwards (feature width, teacher class count), at the size the
    model sees (the eval view of the ImageNet protocol)."""
    from unikd.data.views import eval_view

    if hasattr(ds, "images"):
        raw = ds.images[:2]
    else:  # lazily decoded folder: items are (image, label, index)
        raw = [ds[i][0] for i in range(min(2, len(ds)))]
    raw = eval_view(raw, dataclasses.asdict(cfg.data))
    mean = torch.tensor(ds.mean).view(1, -1, 1, 1)
    std = torch.tensor(ds.std).view(1, -1, 1, 1)
    return ((raw.float() / 255.0 - mean) / std).to(device)


def build_student(cfg: Config, num_classes: int, in_chans: int, device: torch.device) -> nn.Module:
    from unikd.models import create_model

    if cfg.pretrained:
        from unikd.engine.teacher.pretrained import pretrained_student

        model = pretrained_student(
            cfg.model, num_classes=num_classes, in_chans=in_chans, dataset=cfg.data.name, **cfg.model_args
        )
    else:
        model = create_model(cfg.model, num_classes=num_classes, **model_kwargs(in_chans), **cfg.model_args)
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def build_teacher(
    cfg: Config,
    num_classes: int,
    info: DistInfo,
    train_loader: Any,
    autocast: Callable[[], Any],
    in_chans: int = 3,
    *,
    live: bool = False,
) -> tuple[TeacherSource, nn.Module | None, dict[str, Any]]:
    """The teacher source, plus the loaded teacher model (for the preflight checks) when configured.

    ``live=True`` (a term reads the teacher's features, which the cache does not hold) uses the model even
    when ``teacher.cache`` is set.
    """
    t = cfg.teacher
    model, meta = None, {}
    if t.model is not None and (t.checkpoint is not None or t.pretrained):
        model, meta = load_teacher_model(
            t.model, t.checkpoint, num_classes=num_classes, device=info.device, in_chans=in_chans,
            pretrained=t.pretrained, dataset=cfg.data.name, model_args=t.model_args,
        )
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
    elif live:
        raise ValueError(
            f"method {cfg.method!r} reads the teacher's features, which teacher.cache does not hold (it "
            "stores logits only): set teacher.model=<name> and teacher.checkpoint=<path>; the live teacher "
            "is then used"
        )
    elif t.cache is None:
        raise ValueError(
            f"method {cfg.method!r} distils from a teacher: set teacher.model=<name> and "
            "teacher.checkpoint=<path to its best.pt / state_dict / .safetensors> (or "
            "teacher.pretrained=true, or teacher.cache)"
        )
    if t.cache is not None and not live:
        from unikd.engine.teacher.live import open_cached_teacher

        return open_cached_teacher(cfg, train_loader, info.device), model, meta
    assert model is not None
    return LiveTeacher(model, autocast), model, meta


def teacher_source(cfg: Config, tap_terms: list[str]) -> str:
    """Which teacher outputs the run uses, and why (a preflight row)."""
    cache = cfg.teacher.cache
    if tap_terms:
        why = f"term(s) {', '.join(tap_terms)} read the teacher's features"
        return f"live model ({why}; the cache {cache} holds logits only)" if cache else f"live model ({why})"
    if cache:
        return f"cache {cache} (every term needs only the teacher's logits)"
    return "live model"
