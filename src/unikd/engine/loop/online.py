"""Online training: the run's student (``model``) and its peers (``online.peers``) trained together.

Every network is a :class:`~unikd.engine.loop.network.Network` (its own model, objective, optimiser,
schedule, EMA and feature taps), the peers built here after the student; the one step of
:mod:`unikd.engine.loop.step` trains them all together (each objective receives the other networks' logits
as ``teacher_logits``). Terms are built with ``role="student"`` for the student and ``role="peer"`` for
the peers (BD-KD's peer regulariser differs from its student term). This file holds what only online
training has: the peers' construction, epoch records, summary, test and checkpoint entry.

The student stays the run's student: ``best.pt`` is chosen on its validation top-1, ``summary.json`` keeps
its numbers at the top level and lists every network under ``online``; a peer's logged keys are the
student's with its name after the first ``/`` (``train/peer1/loss``, ``val/peer1/top1``).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch

from unikd.engine.config import Config
from unikd.engine.config.plan import TermPlan
from unikd.engine.loop.network import Network, build_parts, create_network
from unikd.engine.loop.preflight import Preflight, count_parameters
from unikd.engine.objective.build import build_objective, student_specs
from unikd.engine.objective.taps import TapSet
from unikd.engine.run.distributed import DistInfo, sync_batchnorm
from unikd.losses.contract import TEACHER_TAP_INPUTS

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
        optimizer, scheduler, ema, ddp_model = build_parts(cfg, info, model, objective, steps_per_epoch)
        taps = TapSet(model, student_specs(objective))  # after the EMA copy, which must not inherit hooks
        peers.append(Network(name, model_name, model, ddp_model, objective, taps, optimizer, scheduler, ema))
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

    def __init__(self, peers: list[Network]) -> None:
        self.peers = peers

    def reset_epoch(self) -> None:
        for p in self.peers:
            p.epoch_correct = 0

    def set_train(self) -> None:
        for p in self.peers:
            p.model.train()

    # ------------------------------------------------------------------------------------------ epochs

    def end_epoch(self, c: Any, record: dict[str, Any], epoch: int, evaluated: bool) -> list[str]:
        """Add every peer's ``train/<peer>/top1`` and ``val/<peer>/*`` to the epoch record; log lines."""
        from unikd.engine.eval.evaluate import evaluate

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
        self, c: Any, student: dict[str, Any], test: dict[str, dict[str, Any]] | None = None
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

    def final_test(self, c: Any) -> dict[str, dict[str, Any]]:
        """Every peer on the test split at the selected epoch (the student's, from ``best.pt``) and at the
        last epoch, like :func:`unikd.engine.loop.final_test.final_test` for the student."""
        from unikd.engine.loop.final_test import METRICS, build_test_loader, score
        from unikd.engine.run.checkpoint import load_checkpoint
        from unikd.engine.run.weights import load_weights

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
        """Every peer's name, model, train state (:meth:`Network.train_state`) and best epoch."""
        return {
            "peers": [
                {
                    "name": p.name,
                    "model_name": p.model_name,
                    **p.train_state(),
                    "progress": {"best_top1": p.best_top1, "best_epoch": p.best_epoch,
                                 "epoch_correct": p.epoch_correct},
                }
                for p in self.peers
            ]
        }

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
            p.load_train_state(entry, path, whose=f"{p.name}'s")
            progress = entry["progress"]
            p.best_top1, p.best_epoch = progress["best_top1"], progress["best_epoch"]
            p.epoch_correct = int(progress["epoch_correct"])
