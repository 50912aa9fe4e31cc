"""``train(cfg)``: one harness for teachers, distillation (KD, DKD, NKD) and self-distillation (USKD, tf-KD,
Zipf-LS).

The pieces are built in :mod:`unikd.engine.loop.setup`; this file holds the loop: steps, epochs, checkpoints,
the run folder and the stop conditions (SIGINT/SIGTERM, non-finite losses). Exact resume works because
every source of state (weights, optimiser, scheduler, scaler, EMA, weak head, RNGs, loader position and the
running epoch sums) goes into ``last.pt`` at step boundaries only.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from typing import Any

import torch

from unikd import integrity
from unikd._progress import progress
from unikd.engine.config import Config
from unikd.engine.eval.class_metrics import epoch_values
from unikd.engine.eval.evaluate import evaluate
from unikd.engine.loop.claim import claim_run_folder, resolve_out_dir
from unikd.engine.loop.components import Components
from unikd.engine.loop.final_test import final_test, wants_final_test
from unikd.engine.loop.records import log_epoch, run_summary
from unikd.engine.loop.setup import build
from unikd.engine.loop.step import train_step
from unikd.engine.loop.step_mode import StepMode
from unikd.engine.run.checkpoint import atomic_save, save_safetensors
from unikd.engine.run.distributed import all_reduce_max, barrier, cleanup_distributed, init_distributed
from unikd.engine.run.last_checkpoint import save_last
from unikd.engine.run.rng import rng_state
from unikd.engine.run.write_errors import inside, run_write_error
from unikd.losses.checks import checks

log = logging.getLogger("unikd")


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped the run after ``last.pt`` was saved; ``resume=auto`` continues it."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum


def ensure_log_handler() -> None:
    """Print ``unikd`` log records to stdout unless the application configured logging itself."""
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        if log.level == logging.NOTSET:
            log.setLevel(logging.INFO)


def train(cfg: Config) -> dict[str, Any]:
    """Train according to ``cfg`` and return the summary (also written to ``out_dir/summary.json``).

    Launched by ``torchrun``, each process calls this and the run uses DDP. Raises ``ValueError`` /
    ``FileNotFoundError`` for bad configs, data or checkpoints,
    :class:`~unikd.engine.loop.step.NonFiniteLossError`
    when a loss term stops being finite (the last good checkpoint is kept) and :class:`TrainingInterrupted`
    after SIGINT/SIGTERM (``last.pt`` saved first).
    """
    ensure_log_handler()
    info = init_distributed(cfg.device)
    try:
        cfg = resolve_out_dir(cfg, info)
        # Rank 0 locks out_dir for the whole run; the integrity policy reaches every file read below (teacher
        # weights, resume, teacher cache) without an argument threaded through each layer.
        with claim_run_folder(cfg, info), integrity.policy(cfg.integrity):
            trainer = Trainer(build(cfg, info))
            summary = trainer.fit()
            # Teardown: drop the DDP wrapper (and its reducer) first, then let all ranks reach the group's
            # destruction together; gloo can abort (SIGABRT) a process whose peer tears down first.
            del trainer
        barrier(info)
        return summary
    finally:
        cleanup_distributed(info)


class Trainer:
    """The training loop over prepared :class:`~unikd.engine.loop.setup.Components`."""

    def __init__(self, c: Components) -> None:
        self.c = c
        self.cfg = c.cfg
        self._stop_signal = 0
        self._old_handlers: dict[int, Any] = {}
        self.mode = StepMode(c.cfg)  # checks and compile=step; counts this process's steps

    # ------------------------------------------------------------------------------------------ signals

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._stop_signal:  # second signal: give up on the clean stop
            self._restore_signals()
            raise KeyboardInterrupt
        self._stop_signal = signum
        if self.c.info.is_main:
            log.warning("signal %d received: saving last.pt after this step, then exiting", signum)

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def _restore_signals(self) -> None:
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers = {}

    # ------------------------------------------------------------------------------------------ loop

    def fit(self) -> dict[str, Any]:
        c = self.c
        self._install_signals()
        try:
            start = time.perf_counter() - c.state.wall_seconds
            self._t0 = start
            for epoch in range(c.state.epoch, self.cfg.epochs):
                self._train_epoch(epoch)
                self._end_epoch(epoch)
            summary = self._summary(finished=True)
            if wants_final_test(self.cfg):
                summary.update(final_test(c))
            if c.online is not None:
                tested = c.online.final_test(c) if wants_final_test(self.cfg) else None
                summary.pop("online", None)  # rebuilt last, with the peers' test numbers
                summary["online"] = c.online.summary(c, summary, tested)
            c.run_dir.write_summary(summary)
            if c.info.is_main:
                log.info(
                    "done: best top-1 %.2f%% (epoch %d), last %.2f%%; %s",
                    summary["best_top1"] or 0.0,
                    summary["best_epoch"] or 0,
                    summary["last_top1"] or 0.0,
                    c.run_dir.path,
                )
            return summary
        except OSError as exc:
            if inside(exc.filename, c.run_dir.path):  # disk full, permission denied, read-only folder
                raise run_write_error(exc, c.run_dir.path, saved_step=c.state.saved_step) from exc
            raise
        finally:
            self._restore_signals()
            c.remove_taps()
            c.run_dir.close()

    def _train_epoch(self, epoch: int) -> None:
        c, st = self.c, self.c.state
        steps = len(c.train_loader)
        names = c.term_names()
        if st.position == 0:
            st.reset_epoch(len(names))
            if c.online is not None:
                c.online.reset_epoch()
            if c.diagnostics is not None:
                c.diagnostics.reset_epoch()
        c.train_loader.set_epoch(epoch)  # keeps a resumed mid-epoch position (same epoch)
        c.model.train()
        if c.online is not None:
            c.online.set_train()
        bar = progress(
            c.train_loader,
            total=steps - st.position,
            desc=f"epoch {epoch + 1}/{self.cfg.epochs}",
            enabled=c.info.is_main and log.isEnabledFor(logging.INFO),
        )
        t_epoch = time.perf_counter() - st.epoch_train_seconds
        for batch in bar:
            values, correct = self.step(batch, epoch, st.position, steps)
            st.position += 1
            st.epoch_correct += correct
            st.global_step += 1
            st.epoch_sums += values.double()
            st.epoch_steps += 1
            st.epoch_images += int(batch.images.shape[0]) * c.info.world_size
            st.epoch_train_seconds = time.perf_counter() - t_epoch
            if self.cfg.checkpoint_every and st.global_step % self.cfg.checkpoint_every == 0:
                self._save_last()
            bar.set_postfix(
                {
                    **{n: float(v) for n, v in zip(names, values)},
                    "img/s": st.epoch_images / max(st.epoch_train_seconds, 1e-9),
                }
            )
        st.position = 0

    def step(self, batch: Any, epoch: int, position: int, steps: int) -> tuple[torch.Tensor, int]:
        """One optimiser step of every network on ``batch`` (step ``position`` of ``steps`` in ``epoch``;
        :func:`~unikd.engine.loop.step.train_step`), after honouring a pending stop signal."""
        c = self.c
        # Stop before the forward pass: in train mode it already updates BatchNorm statistics, which the
        # checkpoint must not contain for a step that is not taken. All ranks agree on the stop step.
        stop = bool(self._stop_signal)
        if c.info.distributed:  # one tiny collective; single-process runs read the flag directly
            flag = torch.tensor([float(stop)], device=c.info.device)
            stop = all_reduce_max(flag, c.info).item() > 0
        if stop:
            self._interrupt()
        with checks(self.mode.checks()):  # checks=auto: the first steps of this process, then sync-free
            out = train_step(c, batch, epoch, position, steps, self._kept_checkpoint_note(), self.mode)
        self.mode.steps += 1
        return out

    def _kept_checkpoint_note(self) -> str:
        last = self.c.run_dir.last
        if last.exists():
            return f"the last good checkpoint {last} (step {self.c.state.saved_step}) is kept"
        return "no checkpoint had been written yet"

    def _interrupt(self) -> None:
        self._save_last()
        self.c.run_dir.write_summary(self._summary(finished=False))
        signum = self._stop_signal or int(signal.SIGTERM)  # another rank may have received it
        raise TrainingInterrupted(
            signum,
            f"training interrupted by signal {signum} at step {self.c.state.global_step}; "
            f"{self.c.run_dir.last} saved, continue with resume=auto",
        )

    def _end_epoch(self, epoch: int) -> None:
        c, st, cfg = self.c, self.c.state, self.cfg
        names = c.term_names()
        means = (st.epoch_sums / max(st.epoch_steps, 1)).tolist()
        lr = st.last_lr if st.last_lr is not None else c.optimizer.param_groups[0]["lr"]
        record: dict[str, Any] = {"epoch": epoch + 1, "lr": float(lr)}
        record.update({f"train/{n}": m for n, m in zip(names, means)})
        if c.diagnostics is not None:
            record.update(c.diagnostics.epoch_record())
        # Running top-1 on the augmented training batches (mixed labels: their argmax): a cheap over-fit
        # indicator next to val/top1, not a clean training-set accuracy.
        record["train/top1"] = 100.0 * st.epoch_correct / max(st.epoch_images, 1)
        t_eval = time.perf_counter()
        evaluated = (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs
        if evaluated:
            metrics = evaluate(
                c.eval_model,
                c.val_loader,
                num_classes=c.num_classes,
                precision=cfg.precision,
                device=c.info.device,
                channels_last=cfg.channels_last,
                dist_info=c.info,
                desc=f"eval {epoch + 1}/{cfg.epochs}",
                class_groups=c.class_groups,
            )
        else:
            metrics = {k: None for k in ("top1", "top5", "nll", "ece")}
        record.update({f"val/{k}": metrics[k] for k in ("top1", "top5", "nll", "ece")})
        record.update(epoch_values(metrics, c.class_groups))
        peer_lines = c.online.end_epoch(c, record, epoch, evaluated) if c.online is not None else []
        record["images_per_s"] = st.epoch_images / max(st.epoch_train_seconds, 1e-9)
        st.history.append(record)
        st.epoch = epoch + 1
        top1 = metrics["top1"]
        improved = top1 is not None and (st.best_top1 is None or top1 > st.best_top1)
        if improved:
            st.best_top1, st.best_epoch = top1, epoch + 1
        record["epoch_seconds"] = st.epoch_train_seconds + (time.perf_counter() - t_eval)
        if improved:
            self._save(c.run_dir.best)
            if c.info.is_main:
                save_safetensors(
                    c.eval_state(),
                    c.run_dir.safetensors,
                    metadata={"model": cfg.model, "num_classes": str(c.num_classes), "epoch": str(epoch + 1),
                              **({"run_id": c.run_id} if c.run_id else {})},
                )
        self._save_last()
        c.run_dir.append_metrics(record)
        c.run_dir.write_summary(self._summary(finished=False))
        if c.info.is_main:
            log_epoch(c, epoch, names, means, metrics, record, peer_lines)

    # ------------------------------------------------------------------------------------------ files

    def _save_last(self) -> None:
        self._save(self.c.run_dir.last, keep_previous=True)
        self.c.state.saved_step = self.c.state.global_step

    def _save(self, path: Any, keep_previous: bool = False) -> None:
        if self.c.info.is_main:
            self.c.state.wall_seconds = time.perf_counter() - self._t0
            (save_last if keep_previous else atomic_save)(self.c.checkpoint(rng_state()), path)

    def _summary(self, *, finished: bool) -> dict[str, Any]:
        return run_summary(self.c, time.perf_counter() - self._t0, finished=finished)
