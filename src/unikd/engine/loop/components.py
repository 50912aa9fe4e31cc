"""Everything the loop touches, built by :func:`unikd.engine.loop.setup.build`: :class:`Components`.

``networks`` is the list of trained networks, the student first (``[student]`` offline, ``[student,
*peers]`` online); the student's parts are also reachable directly (``c.model``, ``c.objective``, ...).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from unikd.engine.config import Config
from unikd.engine.loop.network import Network
from unikd.engine.loop.outputs import RunDir
from unikd.engine.loop.state import TrainState
from unikd.engine.objective.diagnostics import GradDiagnostics
from unikd.engine.objective.objective import Objective
from unikd.engine.objective.taps import TapSet
from unikd.engine.run.checkpoint import CHECKPOINT_FORMAT, SEALED_VERSION
from unikd.engine.run.distributed import DistInfo
from unikd.engine.teacher.live import TeacherSource


@dataclass
class Components:
    """The run's data, networks, teacher and files. ``networks[0]`` is the student."""

    cfg: Config
    info: DistInfo
    num_classes: int
    in_chans: int
    train_ds: Any
    val_ds: Any
    train_loader: Any
    val_loader: Any
    networks: list[Network]
    teacher_taps: TapSet
    teacher: TeacherSource | None
    teacher_meta: dict[str, Any]
    scaler: Any
    run_dir: RunDir
    state: TrainState
    autocast: Callable[[], Any]
    online: Any = None  # the peers' epoch, summary and test work (unikd.engine.loop.online.OnlineRun)
    diagnostics: GradDiagnostics | None = None  # per-term gradient measurements (diagnostics.every)
    input_size: tuple[int, ...] | None = None  # (H, W) of the training images, recorded in checkpoints
    run_id: str | None = None  # the run's identity (unikd.engine.run.identity), recorded in checkpoints

    # the student's parts
    @property
    def student(self) -> Network:
        return self.networks[0]

    @property
    def model(self) -> nn.Module:
        return self.student.model

    @property
    def ddp_model(self) -> nn.Module:
        return self.student.ddp_model

    @property
    def objective(self) -> Objective:
        return self.student.objective

    @property
    def student_taps(self) -> TapSet:
        return self.student.taps

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.student.optimizer

    @property
    def scheduler(self) -> Any:
        return self.student.scheduler

    @property
    def ema(self) -> Any:
        return self.student.ema

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are evaluated, saved as ``model`` and exported: the EMA when it is on."""
        return self.student.eval_model

    @property
    def extra_params(self) -> list[nn.Parameter]:
        return self.student.extra_params

    @property
    def trainable_params(self) -> list[nn.Parameter]:
        return self.student.trainable_params

    def eval_state(self) -> dict[str, torch.Tensor]:
        return self.student.eval_state()

    def term_names(self) -> list[str]:
        """Names of the logged loss terms: the student's, then each peer's as ``<peer>/<term>``."""
        names = self.student.objective.term_names()
        return names + [f"{n.name}/{t}" for n in self.networks[1:] for t in n.objective.term_names()]

    @property
    def class_groups(self) -> dict[str, list[int]] | None:
        """The dropped and the kept classes when data.drop_classes removed some (scored apart), else None."""
        from unikd.engine.eval.class_metrics import class_groups

        return class_groups(self.train_ds, self.num_classes)

    def remove_taps(self) -> None:
        for net in self.networks:
            net.remove_taps()
        self.teacher_taps.remove()

    def checkpoint(self, rng: dict[str, Any]) -> dict[str, Any]:
        """The full resumable checkpoint (plain containers and tensors only)."""
        st = self.state
        loader_state = {**self.train_loader.state_dict(), "epoch": st.epoch, "position": st.position}
        own = self.student.train_state()
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
            "model": own.pop("model"),
            "optimizer": own.pop("optimizer"),
            "scheduler": own.pop("scheduler"),
            "rng": rng,
            "loader": loader_state,
            "progress": st.state_dict(),
        }
        objective = own.pop("objective")
        ckpt.update(own)  # train_model and ema when the EMA is on
        if self.scaler is not None:
            ckpt["scaler"] = self.scaler.state_dict()
        ckpt["objective"] = objective
        if self.online is not None:
            ckpt["online"] = self.online.state_dict()  # every peer's weights, optimiser, schedule, EMA, terms
        if self.diagnostics is not None:
            ckpt["diagnostics"] = self.diagnostics.state_dict()
        return ckpt
