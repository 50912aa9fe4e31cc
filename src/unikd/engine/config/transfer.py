"""Distilling with a transfer set (``data.transfer``), the teacher's prediction as the target
(``loss.target``) and the instance selection (``selection``): the config checks, the training split, the
step's target and the preflight rows.

A transfer set has no labels of the task. The step's target is then the teacher's predicted class of each
training view (``argmax`` of the teacher's logits, from the live teacher or the teacher-output cache), which
``train/ce`` and ``train/top1`` (the student's agreement with the teacher) read. Anything that trains on a
target -- the cross-entropy with ``loss.ce_weight > 0`` (label smoothing included) or a term that reads
``target`` (NKD, DKD, ...) -- must say so with ``loss.target=teacher_argmax``; otherwise the run is refused
before it starts, naming both ways out. ``loss.target=teacher_argmax`` also works on the task's own labeled
data (pseudo-labels in place of the labels).
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from torch import Tensor

TARGETS = ("labels", "teacher_argmax")
SELECTION_METHODS = ("kd3",)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def teacher_target(cfg: Any) -> bool:
    """Whether the step's target is the teacher's predicted class (``loss.target`` or a transfer set)."""
    return cfg.loss.target == "teacher_argmax" or cfg.data.transfer is not None


def wants_teacher_outputs(cfg: Any) -> bool:
    """Whether the run needs the teacher's logits besides what its terms read (target, selection)."""
    return teacher_target(cfg) or cfg.selection.method is not None


def step_target(cfg: Any, target: Tensor, teacher_logits: Tensor | None) -> Tensor:
    """The target of one step: the batch's labels, or the teacher's argmax on the same views."""
    if not teacher_target(cfg):
        return target
    if teacher_logits is None:
        raise ValueError("loss.target=teacher_argmax needs the teacher's logits, but this step has none")
    return teacher_logits.argmax(dim=1)


def _has_teacher(cfg: Any) -> bool:
    t = cfg.teacher
    return t.model is not None or t.cache is not None


def _check_selection(cfg: Any) -> None:
    from unikd.losses.kd3_select import WEIGHTS

    sel = cfg.selection
    if sel.method is None:
        from unikd.engine.config.sections import SelectionConfig

        changed = [k for k, v in vars(SelectionConfig()).items() if getattr(sel, k) != v]
        _check(not changed, f"selection.{changed[0] if changed else ''} is set but selection.method is not: "
                            "set "
               "selection.method=kd3 to select instances (or remove the selection keys)")
        return
    _check(sel.method in SELECTION_METHODS, f"selection.method={sel.method!r} is not valid; choose "
           f"{', '.join(SELECTION_METHODS)} (or null: no selection)")
    _check(0.0 < sel.threshold <= 1.0, f"selection.threshold must be in (0, 1], got {sel.threshold}")
    _check(len(sel.teacher_share) == 2 and all(0.0 <= a <= 1.0 for a in sel.teacher_share),
           f"selection.teacher_share is [start, end], two numbers in [0, 1], got {sel.teacher_share}")
    _check(sel.ramp_epochs is None or sel.ramp_epochs >= 0,
           f"selection.ramp_epochs must be >= 0 or null (the run's epochs), got {sel.ramp_epochs}")
    _check(sel.weights in WEIGHTS, f"selection.weights must be one of {', '.join(WEIGHTS)}, got "
                                   f"{sel.weights!r}")
    _check(not cfg.online.peers, "selection selects instances by the teacher's and the student's "
                                 "predictions; "
           "it is not supported with online.peers (no teacher)")
    _check(_has_teacher(cfg), "selection needs the teacher's predictions: set teacher.model and "
           "teacher.checkpoint (or teacher.cache)")


def reads_target(cls: type) -> bool:
    """Whether a term trains on ``target``: it requires it and its forward() gives it no default (KD accepts
    ``target=None`` so that every teacher loss is called alike, and ignores it)."""
    if "target" not in getattr(cls, "requires", ()):
        return False
    param = inspect.signature(cls.forward).parameters.get("target")
    return param is None or param.default is inspect.Parameter.empty


def _target_readers(cfg: Any) -> list[str]:
    from unikd.engine.config.plan import plan_terms

    return [p.name for p in plan_terms(cfg) if reads_target(p.cls)]


def _same_source(cfg: Any, spec: Any) -> bool:
    d = cfg.data
    if spec.name != d.name:
        return False
    if spec.root is None or d.root is None:
        return spec.root == d.root
    return os.path.realpath(os.path.expanduser(spec.root)) == os.path.realpath(os.path.expanduser(d.root))


def _check_targets(cfg: Any) -> None:
    """With a transfer set nothing may train on labels it does not have."""
    _check(cfg.loss.target != "labels", "data.transfer: the transfer images have no labels of the task, so "
           "loss.target=labels cannot be met; set loss.target=teacher_argmax (the teacher's predicted class)")
    if cfg.loss.target == "teacher_argmax":
        return
    ls = " with label smoothing (method=ls)" if cfg.method == "ls" else ""
    _check(cfg.loss.ce_weight == 0, f"data.transfer: the transfer images have no labels, so the cross-entropy"
           f"{ls} (loss.ce_weight={cfg.loss.ce_weight:g}) has nothing to learn from: set loss.ce_weight=0 "
           "(distillation terms only) or loss.target=teacher_argmax (the CE on the teacher's predicted "
           "class)")
    readers = _target_readers(cfg)
    _check(not readers, f"data.transfer: term(s) {', '.join(readers)} read the target class, which the "
                        "transfer "
           "images do not have: set loss.target=teacher_argmax (the teacher's predicted class)")


def check_transfer_config(cfg: Any) -> None:
    """Config-time checks of ``data.transfer``, ``loss.target`` and ``selection`` (part of ``validate``)."""
    from unikd.data.transfer import parse_transfer

    _check(cfg.loss.target in (None, *TARGETS), f"loss.target={cfg.loss.target!r} is not valid; choose "
           f"{', '.join(TARGETS)}")
    _check_selection(cfg)
    if cfg.loss.target == "teacher_argmax":
        _check(not cfg.online.peers and _has_teacher(cfg), "loss.target=teacher_argmax trains on the "
                                                           "teacher's "
               "predicted class: set teacher.model and teacher.checkpoint (or teacher.cache); not with "
               "online.peers")
    spec = parse_transfer(cfg.data.transfer)
    if spec is None:
        return
    d = cfg.data
    _check(d.loader == "memory", "data.transfer needs data.loader=memory (the transfer set is read into "
                                 "memory)")
    _check(d.drop_classes is None, "data.drop_classes removes classes of the training split, but a transfer "
                                   "set "
           "has no classes (its labels are ignored): remove data.drop_classes or data.transfer")
    _check(not cfg.online.peers and _has_teacher(cfg), "data.transfer trains the student on the teacher's "
                                                       "outputs "
           "alone: set teacher.model and teacher.checkpoint (or teacher.cache); online.peers is not "
           "supported")
    _check(not (_same_source(cfg, spec) and spec.split == "test"), "data.transfer takes the test split of "
                                                                   "the "
           f"task's own data ({d.name}): the student would train on the images it is tested on; use split: "
           "train")
    _check_targets(cfg)


def apply_transfer(cfg: Any, task_train: Any) -> Any:
    """The run's training split: the transfer set of ``data.transfer``, else ``task_train`` itself."""
    from unikd.data.transfer import build_transfer_set, parse_transfer

    spec = parse_transfer(cfg.data.transfer)
    if spec is None:
        return task_train
    d = cfg.data
    hold_out = None
    if _same_source(cfg, spec) and spec.split == "train" and d.val_split > 0:  # keep validation out of it
        split_seed = cfg.seed if d.split_seed is None else d.split_seed  # the task's hold-out ranking
        hold_out = {"val_split": d.val_split, "split_seed": split_seed}
    return build_transfer_set(spec, task_train, seed=cfg.seed, cache_dir=d.cache_dir, hold_out=hold_out)


def preflight_rows(cfg: Any, train_ds: Any, objective: Any) -> list[tuple[str, str]]:
    """The ``transfer``, ``target`` and ``selection`` rows of the preflight table (those that apply)."""
    from unikd.data.transfer import describe_transfer

    rows = []
    text = describe_transfer(train_ds, cfg.data.name)
    if text:
        rows.append(("transfer", text))
    if teacher_target(cfg):
        readers = (["CE"] if cfg.loss.ce_weight else []) + _target_readers(cfg)
        verb = "trains" if len(readers) == 1 else "train"
        use = f"{', '.join(readers)} {verb} on it" if readers else "only train/ce and train/top1 read it"
        rows.append(("target", f"the teacher's argmax of each training view ({use}; train/top1 is the "
                               "agreement with the teacher)"))
    if objective.selection is not None:
        rows.append(("selection", objective.selection.describe()))
    return rows


__all__ = ["apply_transfer", "check_transfer_config", "preflight_rows", "reads_target", "step_target",
           "teacher_target", "wants_teacher_outputs"]
