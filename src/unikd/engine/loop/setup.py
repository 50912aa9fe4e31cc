"""Build everything a run needs from its config, in the order a run depends on it: resume check, data,
student, the objective's terms and taps, teacher, optimiser / schedule / EMA / DDP wrapper of every network
(the student and the peers of online training), run folder; then resume and the preflight table.

The order is part of the result: every model and term module draws its initial weights from the seeded
RNG in this order, so an offline run and an online run with the same seed start the student alike.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from unikd.engine.config import Config
from unikd.engine.config.plan import TermPlan, plan_terms
from unikd.engine.config.step_options import compile_mode
from unikd.engine.config.transfer import preflight_rows, wants_teacher_outputs
from unikd.engine.eval.evaluate import evaluate
from unikd.engine.loop.components import Components
from unikd.engine.loop.network import Network, build_parts
from unikd.engine.loop.online import build_online, check_online_terms
from unikd.engine.loop.outputs import RunDir
from unikd.engine.loop.parts import (  # noqa: F401  (re-exported: the cache builder and tests use them)
    build_datasets,
    build_loaders,
    build_student,
    build_teacher,
    sample_images,
    teacher_source,
)
from unikd.engine.loop.preflight import (
    Preflight,
    check_teacher_classes,
    check_teacher_input,
    check_teacher_top1,
    count_parameters,
    normalisation_note,
)
from unikd.engine.loop.resume import restore, resume_checkpoint
from unikd.engine.loop.resume_check import check_resume
from unikd.engine.loop.state import TrainState
from unikd.engine.objective.build import build_objective, student_specs, teacher_specs
from unikd.engine.objective.diagnostics import build_diagnostics
from unikd.engine.objective.taps import TapSet
from unikd.engine.run.distributed import DistInfo, autocast_factory, has_batchnorm, sync_batchnorm
from unikd.engine.run.rng import seed_everything

__all__ = ["Components", "build", "build_datasets", "build_loaders", "build_teacher"]

log = logging.getLogger("unikd")


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
    d = _Data(cfg, info)
    autocast = autocast_factory(cfg.precision, dev)
    model = build_student(cfg, d.num_classes, d.in_chans, dev)
    if cfg.sync_bn:
        model = sync_batchnorm(model, info)

    plans = plan_terms(cfg)
    if cfg.online.peers:
        check_online_terms(cfg, plans)
    tap_terms = [p.name for p in plans if p.needs_teacher_taps]
    pre = Preflight()
    pre.add("method", f"{cfg.method}  (loss terms: ce{''.join(', ' + p.name for p in plans)})")
    pre.add("student", f"{cfg.model}  ({count_parameters(model)} params, {d.num_classes} classes)")
    teacher, teacher_model, teacher_meta = _teacher(cfg, info, d, plans, tap_terms, autocast, pre)
    objective, term_rows = build_objective(
        cfg,
        plans,
        student=model,
        teacher=teacher_model if tap_terms else None,
        sample=d.sample,
        num_classes=d.num_classes,
        num_samples=len(d.train_ds),
        train_labels=None if d.on_transfer else d.train_ds.labels,  # a transfer set has no labels
    )
    for label, text in term_rows:
        pre.add(label, text)
    _data_rows(pre, cfg, d, teacher_meta, objective)

    steps = len(d.train_loader)
    optimizer, scheduler, ema, ddp_model = build_parts(cfg, info, model, objective, steps)
    scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None
    online = None
    if cfg.online.peers:  # after the student, so the student starts as it does offline
        online = build_online(cfg, info, plans, pre, num_classes=d.num_classes, in_chans=d.in_chans,
                              sample=d.sample, num_samples=len(d.train_ds), steps_per_epoch=steps)
    # Attached after the EMA copy (which must not inherit the hooks) and before the first step.
    taps = TapSet(model, student_specs(objective))
    student = Network("student", cfg.model, model, ddp_model, objective, taps, optimizer, scheduler, ema)
    c = Components(
        cfg=cfg, info=info, num_classes=d.num_classes, in_chans=d.in_chans, train_ds=d.train_ds,
        val_ds=d.val_ds, train_loader=d.train_loader, val_loader=d.val_loader,
        networks=[student, *(online.peers if online else [])],
        teacher_taps=TapSet(teacher_model, teacher_specs(objective)), teacher=teacher,
        teacher_meta=teacher_meta, scaler=scaler,
        run_dir=RunDir(cfg.out_dir, enabled=info.is_main, tensorboard=cfg.tensorboard, trackers=cfg.trackers),
        state=TrainState(), autocast=autocast, online=online,
        diagnostics=build_diagnostics(cfg, info, model, objective, d.sample),
        input_size=tuple(d.sample.shape[2:]), run_id=run_id,
    )
    resumed = restore(c, found)
    _run_rows(pre, c, resumed)
    c.run_dir.write_config(cfg, run_id, resumed_from)
    c.run_dir.rewrite_metrics(c.state.history)
    if info.is_main:
        log.info("%s", pre.table())
    return c


class _Data:
    """The run's datasets, loaders and the sample images of the dummy forwards."""

    def __init__(self, cfg: Config, info: DistInfo) -> None:
        self.train_ds, self.val_ds = build_datasets(cfg)
        self.num_classes = cfg.num_classes or self.train_ds.num_classes
        if self.num_classes < self.train_ds.num_classes:
            raise ValueError(
                f"num_classes={self.num_classes} but the data has {self.train_ds.num_classes} classes; "
                "set num_classes=null to use the dataset's count"
            )
        self.sample = sample_images(self.train_ds, info.device, cfg)
        self.in_chans = int(self.sample.shape[1])
        self.train_loader, self.val_loader = build_loaders(cfg, info, self.train_ds, self.val_ds)
        if len(self.train_loader) == 0:
            raise ValueError(
                f"data.batch_size={cfg.data.batch_size} gives no full batch from {len(self.train_ds)} samples"
            )
        self.on_transfer = bool(getattr(self.train_ds, "transfer_source", None))


def _teacher(cfg: Config, info: DistInfo, d: _Data, plans: list[TermPlan], tap_terms: list[str],
             autocast: Any, pre: Preflight) -> tuple[Any, nn.Module | None, dict[str, Any]]:
    """The teacher source, its model and metadata when the run distils offline (checked on the validation
    split), else nothing; adds the teacher's preflight rows."""
    teach = any(p.needs_teacher for p in plans) or wants_teacher_outputs(cfg)  # terms, target, selection
    if not teach or cfg.online.peers:  # online: the peers teach
        return None, None, {}
    teacher, teacher_model, teacher_meta = build_teacher(
        cfg, d.num_classes, info, d.train_loader, autocast, d.in_chans, live=bool(tap_terms)
    )
    if teacher_model is not None:
        name = cfg.teacher.model or ""
        check_teacher_input(d.sample, teacher_meta, name)
        check_teacher_classes(teacher_model, d.sample, d.num_classes, name)
        t_metrics = evaluate(teacher_model, d.val_loader, num_classes=d.num_classes, precision=cfg.precision,
                             device=info.device, channels_last=cfg.channels_last, dist_info=info,
                             desc="teacher eval")
        check_teacher_top1(t_metrics["top1"], cfg.teacher.min_top1, name)
        pre.add("teacher", f"{cfg.teacher.model}  ({count_parameters(teacher_model)} params, "
                           f"{d.num_classes} classes, val top-1 {t_metrics['top1']:.2f}%)")
    pre.add("teacher source", teacher_source(cfg, tap_terms))
    return teacher, teacher_model, teacher_meta


def _data_rows(pre: Preflight, cfg: Config, d: _Data, teacher_meta: dict[str, Any], objective: Any) -> None:
    from unikd.data.drop import describe_drop

    pre.add(
        "data",
        f"{cfg.data.name}: {len(d.train_ds)} {'transfer' if d.on_transfer else 'train'} / {len(d.val_ds)} "
        f"{'val' if cfg.data.val_split else 'test'}, images {tuple(d.sample.shape[1:])}",
    )
    pre.add("normalisation", normalisation_note((d.train_ds.mean, d.train_ds.std), teacher_meta.get("data")))
    if describe_drop(d.train_ds):
        pre.add("dropped classes", describe_drop(d.train_ds))
    for label, text in preflight_rows(cfg, d.train_ds, objective):
        pre.add(label, text)


def _run_rows(pre: Preflight, c: Components, resumed: Any) -> None:
    cfg, info = c.cfg, c.info
    o, s = cfg.optim, cfg.sched
    steps = len(c.train_loader)
    per_rank = cfg.data.batch_size // info.world_size
    pre.add("batch", f"{cfg.data.batch_size} global = {per_rank} x {info.world_size} rank(s)")
    if info.distributed and has_batchnorm(c.model):
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
        f"{cfg.precision} on {info.device}"
        + (", channels_last" if cfg.channels_last else "")
        + (f", compile={compile_mode(cfg)}" if compile_mode(cfg) else "")
        + (f", checks={cfg.checks}" if cfg.checks != "auto" else "")
        + (f", EMA {cfg.ema_decay}" if c.ema else ""),
    )
    pre.add("out_dir", cfg.out_dir)


