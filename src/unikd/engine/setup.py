"""Build everything a run needs from its config: data, student, teacher, the objective (its term modules
and feature taps), optimiser, scheduler, scaler, EMA, DDP wrapper, run folder; then resume and the
preflight table."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from unikd.engine.checkpoint import SEALED_VERSION
from unikd.engine.config import Config
from unikd.engine.diagnostics import GradDiagnostics, build_diagnostics
from unikd.engine.distributed import DistInfo, has_batchnorm, sync_batchnorm
from unikd.engine.evaluate import autocast_factory, dataset_kwargs, evaluate, model_kwargs
from unikd.engine.network import train_parts
from unikd.engine.objective import Objective
from unikd.engine.preflight import (
    Preflight,
    check_teacher_classes,
    check_teacher_input,
    check_teacher_top1,
    count_parameters,
    normalisation_note,
)
from unikd.engine.resume import restore, resume_checkpoint, seed_everything
from unikd.engine.resume_check import check_resume
from unikd.engine.run_dir import RunDir
from unikd.engine.state import TrainState
from unikd.engine.taps import TapSet
from unikd.engine.teacher import CHECKPOINT_FORMAT, LiveTeacher, TeacherSource, load_teacher_model
from unikd.engine.terms import build_objective, plan_terms, student_specs, teacher_specs

if TYPE_CHECKING:
    from unikd.engine.online import OnlineRun

log = logging.getLogger("unikd")


@dataclass
class Components:
    """Everything the loop touches. ``model`` is the bare student; ``ddp_model`` is what runs forward."""

    cfg: Config
    info: DistInfo
    num_classes: int
    in_chans: int
    train_ds: Any
    val_ds: Any
    train_loader: Any
    val_loader: Any
    model: nn.Module
    ddp_model: nn.Module
    objective: Objective
    student_taps: TapSet
    teacher_taps: TapSet
    teacher: TeacherSource | None
    teacher_meta: dict[str, Any]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    ema: Any
    run_dir: RunDir
    state: TrainState
    autocast: Callable[[], Any]
    online: OnlineRun | None = None  # the peers of online training (online.peers)
    diagnostics: GradDiagnostics | None = None  # per-term gradient measurements (diagnostics.every)
    input_size: tuple[int, ...] | None = None  # (H, W) of the training images, recorded in checkpoints
    run_id: str | None = None  # the run's identity (unikd.engine.run_identity), recorded in checkpoints

    def term_names(self) -> list[str]:
        """Names of the logged loss terms: the student's, then each peer's as ``<peer>/<term>``."""
        return self.objective.term_names() + (self.online.term_names() if self.online else [])

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are evaluated, saved as ``model`` and exported: the EMA when it is on."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def class_groups(self) -> dict[str, list[int]] | None:
        """The dropped and the kept classes when data.drop_classes removed some (scored apart), else None."""
        from unikd.engine.class_metrics import class_groups

        return class_groups(self.train_ds, self.num_classes)

    @property
    def extra_params(self) -> list[nn.Parameter]:
        """Trainable parameters outside the DDP wrapper: the term modules' (heads, connectors, ...)."""
        return [p for p in self.objective.parameters() if p.requires_grad]

    def remove_taps(self) -> None:
        self.student_taps.remove()
        self.teacher_taps.remove()
        if self.online is not None:
            self.online.remove_taps()

    @property
    def trainable_params(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad] + self.extra_params

    def eval_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.eval_model.state_dict().items()}

    def checkpoint(self, rng: dict[str, Any]) -> dict[str, Any]:
        """The full resumable checkpoint (plain containers and tensors only)."""
        st = self.state
        loader_state = {**self.train_loader.state_dict(), "epoch": st.epoch, "position": st.position}
        ckpt: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "version": SEALED_VERSION,  # sealed: a copy without its checksum is refused as damaged
            "run_id": self.run_id,
            "model_name": self.cfg.model,
            "num_classes": self.num_classes,
            "in_chans": self.in_chans,
            "input_size": list(self.input_size) if self.input_size else None,
            "method": self.cfg.method,
            "seed": self.cfg.seed,
            "epoch": st.epoch,
            "global_step": st.global_step,
            "data": {
                **dataclasses.asdict(self.cfg.data),
                "mean": list(self.train_ds.mean),
                "std": list(self.train_ds.std),
                "content_hash": getattr(self.train_ds, "content_hash", None),
            },
            "config": self.cfg.to_dict(),
            "model": self.eval_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng,
            "loader": loader_state,
            "progress": st.state_dict(),
        }
        if self.ema is not None:
            ckpt["train_model"] = self.model.state_dict()  # raw weights; "model" holds the EMA
            ckpt["ema"] = self.ema.state_dict()
        if self.scaler is not None:
            ckpt["scaler"] = self.scaler.state_dict()
        ckpt["objective"] = self.objective.state_dict()  # term modules by name (heads, connectors, banks)
        if self.online is not None:
            ckpt["online"] = self.online.state_dict()  # every peer's weights, optimiser, schedule, EMA, terms
        if self.diagnostics is not None:
            ckpt["diagnostics"] = self.diagnostics.state_dict()
        return ckpt


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
    from unikd.engine.transfer import apply_transfer  # data.transfer: the student trains on other images

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


def _sample(ds: Any, device: torch.device, cfg: Config) -> torch.Tensor:
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


def _student(cfg: Config, num_classes: int, in_chans: int, device: torch.device) -> nn.Module:
    from unikd.models import create_model

    if cfg.pretrained:
        from unikd.engine.pretrained import pretrained_student

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
        from unikd.engine.teacher import open_cached_teacher

        return open_cached_teacher(cfg, train_loader, info.device), model, meta
    assert model is not None
    return LiveTeacher(model, autocast), model, meta


def build(cfg: Config, info: DistInfo) -> Components:
    """Prepare a run: everything is built before the first step, so config mistakes fail fast."""
    dev = info.device
    if cfg.precision == "fp16" and dev.type != "cuda":
        raise ValueError(
            f"precision=fp16 needs a CUDA device (it uses a grad scaler); on {dev.type} use "
            "precision=bf16 (autocast) or precision=fp32"
        )
    found = resume_checkpoint(cfg)  # checked before any data is loaded: a refused resume fails at once
    run_id, resumed_from = check_resume(cfg, found)
    seed_everything(cfg.seed)
    train_ds, val_ds = build_datasets(cfg)
    num_classes = cfg.num_classes or train_ds.num_classes
    if num_classes < train_ds.num_classes:
        raise ValueError(
            f"num_classes={num_classes} but the data has {train_ds.num_classes} classes; "
            "set num_classes=null to use the dataset's count"
        )
    sample = _sample(train_ds, dev, cfg)
    in_chans = int(sample.shape[1])
    train_loader, val_loader = build_loaders(cfg, info, train_ds, val_ds)
    if len(train_loader) == 0:
        raise ValueError(
            f"data.batch_size={cfg.data.batch_size} gives no full batch from {len(train_ds)} samples"
        )
    autocast = autocast_factory(cfg.precision, dev)
    model = _student(cfg, num_classes, in_chans, dev)
    if cfg.sync_bn:
        model = sync_batchnorm(model, info)

    plans = plan_terms(cfg)
    if cfg.online.peers:
        from unikd.engine.online import check_online_terms

        check_online_terms(cfg, plans)
    tap_terms = [p.name for p in plans if p.needs_teacher_taps]
    pre = Preflight()
    pre.add("method", f"{cfg.method}  (loss terms: ce{''.join(', ' + p.name for p in plans)})")
    pre.add("student", f"{cfg.model}  ({count_parameters(model)} params, {num_classes} classes)")
    teacher, teacher_model, teacher_meta = None, None, {}
    from unikd.engine.transfer import preflight_rows, wants_teacher_outputs

    teach = any(p.needs_teacher for p in plans) or wants_teacher_outputs(cfg)  # terms, target, selection
    on_transfer = bool(getattr(train_ds, "transfer_source", None))
    if teach and not cfg.online.peers:  # online: the peers teach
        teacher, teacher_model, teacher_meta = build_teacher(
            cfg, num_classes, info, train_loader, autocast, in_chans, live=bool(tap_terms)
        )
        if teacher_model is not None:
            check_teacher_input(sample, teacher_meta, cfg.teacher.model or "")
            check_teacher_classes(teacher_model, sample, num_classes, cfg.teacher.model or "")
            t_metrics = evaluate(
                teacher_model,
                val_loader,
                num_classes=num_classes,
                precision=cfg.precision,
                device=dev,
                channels_last=cfg.channels_last,
                dist_info=info,
                desc="teacher eval",
            )
            check_teacher_top1(t_metrics["top1"], cfg.teacher.min_top1, cfg.teacher.model or "")
            pre.add(
                "teacher",
                f"{cfg.teacher.model}  ({count_parameters(teacher_model)} params, "
                f"{num_classes} classes, val top-1 {t_metrics['top1']:.2f}%)",
            )
        pre.add("teacher source", _teacher_source(cfg, tap_terms))
    objective, term_rows = build_objective(
        cfg,
        plans,
        student=model,
        teacher=teacher_model if tap_terms else None,
        sample=sample,
        num_classes=num_classes,
        num_samples=len(train_ds),
        train_labels=None if on_transfer else train_ds.labels,  # a transfer set has no labels
    )
    for label, text in term_rows:
        pre.add(label, text)
    pre.add(
        "data",
        f"{cfg.data.name}: {len(train_ds)} {'transfer' if on_transfer else 'train'} / {len(val_ds)} "
        f"{'val' if cfg.data.val_split else 'test'}, images {tuple(sample.shape[1:])}",
    )
    pre.add("normalisation", normalisation_note((train_ds.mean, train_ds.std), teacher_meta.get("data")))
    from unikd.data.drop import describe_drop

    if describe_drop(train_ds):
        pre.add("dropped classes", describe_drop(train_ds))
    for label, text in preflight_rows(cfg, train_ds, objective):
        pre.add(label, text)

    o, s = cfg.optim, cfg.sched
    steps = len(train_loader)
    parts = train_parts(cfg, info, model, objective, steps)
    optimizer, scheduler, ema, ddp_model = parts.optimizer, parts.scheduler, parts.ema, parts.ddp_model
    scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None
    online = None
    if cfg.online.peers:
        from unikd.engine.online import build_online

        online = build_online(
            cfg, info, plans, pre, num_classes=num_classes, in_chans=in_chans, sample=sample,
            num_samples=len(train_ds), steps_per_epoch=steps,
        )

    # Attached after the EMA copy (which must not inherit the hooks) and before the first step.
    student_taps = TapSet(model, student_specs(objective))
    teacher_taps = TapSet(teacher_model, teacher_specs(objective))
    c = Components(
        cfg=cfg,
        info=info,
        num_classes=num_classes,
        in_chans=in_chans,
        train_ds=train_ds,
        val_ds=val_ds,
        train_loader=train_loader,
        val_loader=val_loader,
        model=model,
        ddp_model=ddp_model,
        objective=objective,
        student_taps=student_taps,
        teacher_taps=teacher_taps,
        teacher=teacher,
        teacher_meta=teacher_meta,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        ema=ema,
        run_dir=RunDir(cfg.out_dir, enabled=info.is_main, tensorboard=cfg.tensorboard, trackers=cfg.trackers),
        state=TrainState(),
        autocast=autocast,
        online=online,
        diagnostics=build_diagnostics(cfg, info, model, objective, sample),
        input_size=tuple(sample.shape[2:]),
        run_id=run_id,
    )
    resumed = restore(c, found)
    per_rank = cfg.data.batch_size // info.world_size
    pre.add("batch", f"{cfg.data.batch_size} global = {per_rank} x {info.world_size} rank(s)")
    if info.distributed and has_batchnorm(model):
        pre.add("batchnorm", "SyncBatchNorm (global batch statistics)" if cfg.sync_bn else
                f"per-rank statistics over {per_rank} images (sync_bn=true on CUDA: global statistics)")
    pre.add(
        "lr",
        f"{o.name} lr={o.lr:g} (not scaled with the batch), wd={o.weight_decay:g}, "
        f"{s.name} schedule"
        + (f" milestones={s.milestones} gamma={s.gamma:g}" if s.name == "multistep" else ""),
    )
    pre.add(
        "steps",
        f"{steps}/epoch x {cfg.epochs} epochs = {steps * cfg.epochs}"
        + (f" (resuming at step {c.state.global_step} from {resumed})" if resumed else ""),
    )
    pre.add(
        "precision",
        f"{cfg.precision} on {dev}"
        + (", channels_last" if cfg.channels_last else "")
        + (", compiled" if cfg.compile else "")
        + (f", EMA {cfg.ema_decay}" if ema else ""),
    )
    pre.add("out_dir", cfg.out_dir)
    c.run_dir.write_config(cfg, run_id, resumed_from)
    c.run_dir.rewrite_metrics(c.state.history)
    if info.is_main:
        log.info("%s", pre.table())
    return c


def _teacher_source(cfg: Config, tap_terms: list[str]) -> str:
    """Which teacher outputs the run uses, and why (a preflight row)."""
    cache = cfg.teacher.cache
    if tap_terms:
        why = f"term(s) {', '.join(tap_terms)} read the teacher's features"
        return f"live model ({why}; the cache {cache} holds logits only)" if cache else f"live model ({why})"
    if cache:
        return f"cache {cache} (every term needs only the teacher's logits)"
    return "live model"
