"""Online training: the run's student (``model``) and its peers (``online.peers``) trained together.

Every network is a bundle of its own model, objective (its own term modules), optimiser, schedule, EMA and
feature taps (:class:`Peer`; the student's bundle is the run's ordinary components). In each step every
network runs forward once on the same batch; each objective receives the other networks' logits, detached,
as ``teacher_logits`` (a term that reads them is averaged over them), and one backward of the summed
losses gives each network exactly the gradient of its own objective, since nothing flows between networks.
Terms are built with ``role="student"`` for the student and ``role="peer"`` for the peers (BD-KD's peer
regulariser differs from its student term).

The student stays the run's student: ``best.pt`` is chosen on its validation top-1, ``summary.json`` keeps
its numbers at the top level and lists every network under ``online``; a peer's logged keys are the
student's with its name after the first ``/`` (``train/peer1/loss``, ``val/peer1/top1``).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from unikd.engine.config import Config
from unikd.engine.distributed import DistInfo, all_reduce_sum, average_gradients, sync_batchnorm
from unikd.engine.network import create_network, train_parts
from unikd.engine.objective import TEACHER_TAP_INPUTS, Objective
from unikd.engine.step import check_finite
from unikd.engine.taps import TapSet
from unikd.engine.terms import TermPlan, build_objective, student_specs

if TYPE_CHECKING:
    from unikd.engine.preflight import Preflight
    from unikd.engine.setup import Components

log = logging.getLogger("unikd")

VAL_KEYS = ("top1", "top5", "nll", "ece")


def check_online_terms(cfg: Config, plans: list[TermPlan]) -> None:
    """Online training needs a term that reads the other network (``teacher_logits``) and none that reads
    the teacher's features (the peers' feature taps are not wired)."""
    features = [p.name for p in plans if any(r in TEACHER_TAP_INPUTS for r in p.requires)]
    if features:
        raise ValueError(
            f"online.peers: term(s) {', '.join(features)} read the teacher's features, which online training "
            "does not provide (terms see the other networks' logits as teacher_logits); use logit terms such "
            "as dml, bdkd, kd, or distil offline from a trained teacher"
        )
    if not any("teacher_logits" in p.requires for p in plans):
        raise ValueError(
            f"online.peers={cfg.online.peers} but no loss term reads the other network's logits (method "
            f"{cfg.method!r}); set method=dml or method=bdkd (or a loss.terms entry such as kd), or remove "
            "online.peers to train one network"
        )


@dataclass
class Peer:
    """One peer network with everything trained or tracked for it."""

    name: str  # peer1, peer2, ... (the key prefix of its logged values)
    model_name: str
    model: nn.Module
    ddp_model: nn.Module
    objective: Objective
    taps: TapSet
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ema: Any
    best_top1: float | None = None
    best_epoch: int | None = None
    epoch_correct: int = 0  # training rows of this epoch (all ranks) whose top-1 hit the target

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    @property
    def extra_params(self) -> list[nn.Parameter]:
        return [p for p in self.objective.parameters() if p.requires_grad]

    @property
    def trainable_params(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad] + self.extra_params

    def state_dict(self) -> dict[str, Any]:
        sd: dict[str, Any] = {
            "name": self.name,
            "model_name": self.model_name,
            "model": {k: v.detach().clone() for k, v in self.eval_model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "objective": self.objective.state_dict(),
            "progress": {
                "best_top1": self.best_top1,
                "best_epoch": self.best_epoch,
                "epoch_correct": self.epoch_correct,
            },
        }
        if self.ema is not None:
            sd["train_model"] = self.model.state_dict()
            sd["ema"] = self.ema.state_dict()
        return sd

    def load_state_dict(self, sd: dict[str, Any], path: Path) -> None:
        self.model.load_state_dict(sd["train_model"] if "train_model" in sd else sd["model"])
        if self.ema is not None:
            if "ema" in sd:
                self.ema.load_state_dict(sd["ema"])
            else:
                self.ema.module.load_state_dict(sd["model"])
        try:
            self.objective.load_state_dict(sd["objective"])
        except RuntimeError as exc:
            raise ValueError(
                f"cannot resume from {str(path)!r}: the state of {self.name}'s loss terms does not fit this "
                f"config's terms ({exc}). Use a fresh out_dir or resume=no"
            ) from None
        self.optimizer.load_state_dict(sd["optimizer"])
        self.scheduler.load_state_dict(sd["scheduler"])
        progress = sd["progress"]
        self.best_top1, self.best_epoch = progress["best_top1"], progress["best_epoch"]
        self.epoch_correct = int(progress["epoch_correct"])


def build_online(
    cfg: Config,
    info: DistInfo,
    plans: list[TermPlan],
    pre: Preflight,
    *,
    num_classes: int,
    in_chans: int,
    sample: torch.Tensor,
    num_samples: int,
    steps_per_epoch: int,
) -> OnlineRun:
    """Build every peer (after the student, so the student's initialisation is the one an offline run with
    the same seed gets) and add their preflight rows."""
    from unikd.engine.preflight import count_parameters

    peers = []
    for i, model_name in enumerate(cfg.online.peers, start=1):
        name = f"peer{i}"
        model = create_network(cfg, model_name, num_classes, in_chans, info.device)
        if cfg.sync_bn:
            model = sync_batchnorm(model, info)
        objective, rows = build_objective(
            cfg,
            plans,
            student=model,
            teacher=None,
            sample=sample,
            num_classes=num_classes,
            num_samples=num_samples,
            role="peer",
        )
        parts = train_parts(cfg, info, model, objective, steps_per_epoch)
        taps = TapSet(model, student_specs(objective))  # after the EMA copy, which must not inherit hooks
        peers.append(
            Peer(
                name,
                model_name,
                model,
                parts.ddp_model,
                objective,
                taps,
                parts.optimizer,
                parts.scheduler,
                parts.ema,
            )
        )
        pre.add(name, f"{model_name}  ({count_parameters(model)} params), trained with the student")
        for (label, text), plan in zip(rows, plans):
            pre.add(f"{name} {label}", text + (" (peer role)" if "role" in plan.context else ""))
    pre.add(
        "online",
        f"{len(peers) + 1} networks, each with its own optimizer, schedule"
        + (", EMA" if cfg.ema_decay is not None else "")
        + " and checkpoint state; best.pt by the student's val top-1",
    )
    return OnlineRun(peers)


class OnlineRun:
    """The peers of a run and the loop's online-specific work (steps, evaluation, summary, state)."""

    def __init__(self, peers: list[Peer]) -> None:
        self.peers = peers

    def term_names(self) -> list[str]:
        return [f"{p.name}/{n}" for p in self.peers for n in p.objective.term_names()]

    def reset_epoch(self) -> None:
        for p in self.peers:
            p.epoch_correct = 0

    def remove_taps(self) -> None:
        for p in self.peers:
            p.taps.remove()

    def set_train(self) -> None:
        for p in self.peers:
            p.model.train()

    # ------------------------------------------------------------------------------------------ step

    def step(
        self, trainer: Any, batch: Any, epoch: int, position: int, steps: int
    ) -> tuple[torch.Tensor, int]:
        """One optimiser step of every network on ``batch`` (see :meth:`unikd.engine.trainer.Trainer.step`):
        returns all networks' loss terms (``Components.term_names()`` order) and the student's hits."""
        c = trainer.c
        images, target = batch.images, batch.target
        if c.cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        progress = epoch + (position + 1) / steps
        nets = [(c.ddp_model, c.objective, c.student_taps)] + [
            (p.ddp_model, p.objective, p.taps) for p in self.peers
        ]
        with c.autocast():
            logits = [ddp(images) for ddp, _, _ in nets]  # every network once, same images
            detached = [z.detach() for z in logits]
            outs = [
                objective(
                    logits[k],
                    target,
                    teacher_logits=[d for j, d in enumerate(detached) if j != k],
                    student_taps=taps.outputs(),
                    indices=batch.index,
                    epoch_progress=progress,
                )
                for k, (_, objective, taps) in enumerate(nets)
            ]
        hard = target if target.ndim == 1 else target.argmax(dim=1)
        correct = [(d.argmax(dim=1) == hard).sum().float() for d in detached]
        names = [net[1].term_names() for net in nets]
        flat = [outs[k][n].detach().float() for k in range(len(nets)) for n in names[k]]
        reduced = all_reduce_sum(torch.stack(flat + correct), c.info)  # one collective for every network
        values = reduced[: len(flat)] / c.info.world_size
        hits = [int(h) for h in reduced[len(flat) :].tolist()]
        check_finite(
            values.cpu(),
            c.term_names(),
            step=c.state.global_step + 1,
            epoch=epoch + 1,
            where=trainer._kept_checkpoint_note(),
        )
        optimizers = [c.optimizer] + [p.optimizer for p in self.peers]
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        c.state.last_lr = float(c.optimizer.param_groups[0]["lr"])
        if c.diagnostics is not None:
            c.diagnostics.maybe_measure(c.state.global_step + 1, logits[0], outs[0], c.objective, progress)
        loss = torch.stack([out["loss"] for out in outs]).sum()  # the networks share no gradient path
        if c.scaler is not None:
            c.scaler.scale(loss).backward()
        else:
            loss.backward()
        average_gradients(c.extra_params + [q for p in self.peers for q in p.extra_params], c.info)
        clip = c.cfg.optim.clip_grad_norm
        groups = [c.trainable_params] + [p.trainable_params for p in self.peers]
        for opt, params in zip(optimizers, groups):
            if clip is not None:
                if c.scaler is not None:
                    c.scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(params, clip)
            if c.scaler is not None:
                c.scaler.step(opt)
            else:
                opt.step()
        if c.scaler is not None:
            c.scaler.update()
        c.scheduler.step()
        if c.ema is not None:
            c.ema.update(c.model)
        for p, h in zip(self.peers, hits[1:]):
            p.scheduler.step()
            if p.ema is not None:
                p.ema.update(p.model)
            p.epoch_correct += h
        return values.cpu(), hits[0]

    # ------------------------------------------------------------------------------------------ epochs

    def end_epoch(self, c: Components, record: dict[str, Any], epoch: int, evaluated: bool) -> list[str]:
        """Add every peer's ``train/<peer>/top1`` and ``val/<peer>/*`` to the epoch record; log lines."""
        from unikd.engine.evaluate import evaluate

        lines = []
        for p in self.peers:
            record[f"train/{p.name}/top1"] = 100.0 * p.epoch_correct / max(c.state.epoch_images, 1)
            if evaluated:
                metrics = evaluate(
                    p.eval_model,
                    c.val_loader,
                    num_classes=c.num_classes,
                    precision=c.cfg.precision,
                    device=c.info.device,
                    channels_last=c.cfg.channels_last,
                    dist_info=c.info,
                )
            else:
                metrics = {k: None for k in VAL_KEYS}
            record.update({f"val/{p.name}/{k}": metrics[k] for k in VAL_KEYS})
            top1 = metrics["top1"]
            if top1 is not None and (p.best_top1 is None or top1 > p.best_top1):
                p.best_top1, p.best_epoch = top1, epoch + 1
            val = (
                f"val top1={top1:.2f}% top5={metrics['top5']:.2f}% nll={metrics['nll']:.4f} "
                f"ece={metrics['ece']:.4f}"
                if top1 is not None
                else "val skipped"
            )
            loss = record.get(f"train/{p.name}/loss")
            lines.append(f"  {p.name} {p.model_name}: loss={loss:.4f}  {val}" if loss is not None else val)
        return lines

    # ------------------------------------------------------------------------------------------ results

    def summary(
        self, c: Components, student: dict[str, Any], test: dict[str, dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """``summary.json``'s ``online`` entry: every network's numbers and which one is the student."""
        keys = ("best_top1", "best_epoch", "last_top1", "last_top5", "last_nll", "last_ece")
        networks = [
            {
                "name": "student",
                "model": c.cfg.model,
                **{k: student.get(k) for k in keys},
                **{k: v for k, v in student.items() if k.startswith("test_") and k != "test_count"},
            }
        ]
        last = next((r for r in reversed(c.state.history) if r.get("val/top1") is not None), {})
        for p in self.peers:
            entry: dict[str, Any] = {
                "name": p.name,
                "model": p.model_name,
                "best_top1": p.best_top1,
                "best_epoch": p.best_epoch,
            }
            entry.update({f"last_{k}": last.get(f"val/{p.name}/{k}") for k in VAL_KEYS})
            entry.update((test or {}).get(p.name, {}))
            networks.append(entry)
        return {"student": "student", "networks": networks}

    def final_test(self, c: Components) -> dict[str, dict[str, Any]]:
        """Every peer on the test split at the selected epoch (the student's, from ``best.pt``) and at the
        last epoch, like :func:`unikd.engine.final_test.final_test` for the student."""
        from unikd.engine.checkpoint import load_checkpoint
        from unikd.engine.final_test import METRICS, build_test_loader, score
        from unikd.engine.teacher import load_weights

        loader, _ = build_test_loader(c)
        best = load_checkpoint(c.run_dir.best) if c.run_dir.best.exists() else None
        out: dict[str, dict[str, Any]] = {}
        for i, p in enumerate(self.peers):
            last = score(c, p.eval_model, loader)
            selected: dict[str, Any] = {k: None for k in METRICS}
            if best is not None:
                model = copy.deepcopy(p.eval_model)
                load_weights(
                    model, best["online"]["peers"][i]["model"], path=c.run_dir.best, what="checkpoint"
                )
                selected = score(c, model, loader)
            out[p.name] = {
                **{f"test_selected_{k}": selected[k] for k in METRICS},
                **{f"test_last_{k}": last[k] for k in METRICS},
            }
            if c.info.is_main:
                log.info(
                    "test split, %s %s: selected epoch top1=%.2f%%, last epoch top1=%.2f%%",
                    p.name,
                    p.model_name,
                    selected["top1"] if selected["top1"] is not None else float("nan"),
                    last["top1"],
                )
        return out

    # ------------------------------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {"peers": [p.state_dict() for p in self.peers]}

    def load_state_dict(self, sd: dict[str, Any] | None, path: Path) -> None:
        saved = [(e["name"], e["model_name"]) for e in (sd or {}).get("peers", [])]
        mine = [(p.name, p.model_name) for p in self.peers]
        if saved != mine:
            raise ValueError(
                f"cannot resume from {str(path)!r}: it holds the peers "
                f"{saved or 'none (a run without peers)'} "
                f"but online.peers gives {mine}. Use a fresh out_dir or resume=no, or set online.peers to "
                "match the checkpoint"
            )
        for p, entry in zip(self.peers, sd["peers"]):  # type: ignore[index]
            p.load_state_dict(entry, path)
