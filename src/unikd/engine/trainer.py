"""``train(cfg)``: one harness for teachers, distillation (KD, DKD, NKD) and self-distillation (USKD, tf-KD,
Zipf-LS).

The pieces are built in :mod:`unikd.engine.setup`; this file holds the loop: steps, epochs, checkpoints,
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
from torch import nn

from unikd import integrity
from unikd.engine.checkpoint import atomic_save, save_safetensors
from unikd.engine.class_metrics import epoch_values, summary_values
from unikd.engine.config import Config
from unikd.engine.distributed import (
    all_reduce_max,
    all_reduce_sum,
    average_gradients,
    barrier,
    cleanup_distributed,
    init_distributed,
)
from unikd.engine.evaluate import evaluate
from unikd.engine.final_test import final_test, wants_final_test
from unikd.engine.last_checkpoint import save_last
from unikd.engine.progress import progress
from unikd.engine.resume import rng_state
from unikd.engine.run_folder import claim_run_folder, resolve_out_dir
from unikd.engine.setup import Components, build
from unikd.engine.step import check_finite
from unikd.engine.transfer import step_target
from unikd.engine.write_errors import inside, run_write_error

log = logging.getLogger("unikd")


def _pct(name: str, value: float | None) -> str:
    return f"{name} " + ("-" if value is None else f"{value:.2f}%")


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
    ``FileNotFoundError`` for bad configs, data or checkpoints, :class:`~unikd.engine.step.NonFiniteLossError`
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
    """The training loop over prepared :class:`~unikd.engine.setup.Components`."""

    def __init__(self, c: Components) -> None:
        self.c = c
        self.cfg = c.cfg
        self._stop_signal = 0
        self._old_handlers: dict[int, Any] = {}

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
        """One optimiser step on ``batch`` (step ``position`` of ``steps`` in ``epoch``); returns the loss
        terms averaged over ranks (float32, ``objective.term_names()`` order) and the number of training rows
        (all ranks) whose top-1 prediction hit the (hard or argmax) target."""
        c = self.c
        # Stop before the forward pass: in train mode it already updates BatchNorm statistics, which the
        # checkpoint must not contain for a step that is not taken. All ranks agree on the stop step.
        stop = bool(self._stop_signal)
        if c.info.distributed:  # one tiny collective; single-process runs read the flag directly
            flag = torch.tensor([float(stop)], device=c.info.device)
            stop = all_reduce_max(flag, c.info).item() > 0
        if stop:
            self._interrupt()
        if c.online is not None:  # several networks: engine/online.py
            return c.online.step(self, batch, epoch, position, steps)
        images, target = batch.images, batch.target
        if self.cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        # The teacher runs once for all terms; its taps (if any term reads features) fire in that forward.
        teacher_logits = c.teacher(images, epoch, batch.index) if c.teacher is not None else None
        target = step_target(self.cfg, target, teacher_logits)  # loss.target=teacher_argmax, data.transfer
        with c.autocast():
            logits = c.ddp_model(images)
            terms = c.objective(
                logits,
                target,
                teacher_logits=teacher_logits,
                student_taps=c.student_taps.outputs(),
                teacher_taps=c.teacher_taps.outputs(),
                indices=batch.index,
                epoch_progress=epoch + (position + 1) / steps,
                images=images,
            )
        names = c.objective.term_names()
        hard = target if target.ndim == 1 else target.argmax(dim=1)
        correct = (logits.detach().argmax(dim=1) == hard).sum().float()
        # Term values averaged over ranks: for logging, and so every rank sees a non-finite term.
        reduced = all_reduce_sum(torch.stack([terms[n].detach().float() for n in names] + [correct]), c.info)
        values = reduced[:-1] / c.info.world_size
        n_correct = int(reduced[-1].item())
        check_finite(
            values.cpu(),
            names,
            step=c.state.global_step + 1,
            epoch=epoch + 1,
            where=self._kept_checkpoint_note(),
        )
        c.optimizer.zero_grad(set_to_none=True)
        c.state.last_lr = float(c.optimizer.param_groups[0]["lr"])
        if c.diagnostics is not None:
            progress = epoch + (position + 1) / steps
            c.diagnostics.maybe_measure(c.state.global_step + 1, logits, terms, c.objective, progress)
        loss = terms["loss"]
        if c.scaler is not None:
            c.scaler.scale(loss).backward()
        else:
            loss.backward()
        average_gradients(c.extra_params, c.info)
        if self.cfg.optim.clip_grad_norm is not None:
            if c.scaler is not None:
                c.scaler.unscale_(c.optimizer)
            nn.utils.clip_grad_norm_(c.trainable_params, self.cfg.optim.clip_grad_norm)
        if c.scaler is not None:
            c.scaler.step(c.optimizer)
            c.scaler.update()
        else:
            c.optimizer.step()
        c.scheduler.step()
        if c.ema is not None:
            c.ema.update(c.model)
        return values.cpu(), n_correct

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
            terms = " ".join(f"{n}={m:.4f}" for n, m in zip(names, means) if "/" not in n)
            val = (
                f"val top1={top1:.2f}% top5={metrics['top5']:.2f}% nll={metrics['nll']:.4f} "
                f"ece={metrics['ece']:.4f}"
                if top1 is not None
                else "val skipped"
            )
            if top1 is not None and c.class_groups:
                val += " (" + ", ".join(_pct(g, metrics.get(f"top1_{g}")) for g in c.class_groups) + ")"
            log.info(
                "epoch %d/%d  %s  %s  lr=%.4g  %.0f img/s  %.1fs",
                epoch + 1,
                cfg.epochs,
                terms,
                val,
                record["lr"],
                record["images_per_s"],
                record["epoch_seconds"],
            )
            for line in peer_lines:
                log.info("%s", line)

    # ------------------------------------------------------------------------------------------ files

    def _save_last(self) -> None:
        self._save(self.c.run_dir.last, keep_previous=True)
        self.c.state.saved_step = self.c.state.global_step

    def _save(self, path: Any, keep_previous: bool = False) -> None:
        if self.c.info.is_main:
            self.c.state.wall_seconds = time.perf_counter() - self._t0
            (save_last if keep_previous else atomic_save)(self.c.checkpoint(rng_state()), path)

    def _summary(self, *, finished: bool) -> dict[str, Any]:
        c, st, cfg = self.c, self.c.state, self.cfg
        last = next((r for r in reversed(st.history) if r.get("val/top1") is not None), {})
        wall = time.perf_counter() - self._t0
        seconds = [r["epoch_seconds"] for r in st.history if r.get("epoch_seconds") is not None]
        summary = {
            "best_top1": st.best_top1,
            "best_epoch": st.best_epoch,
            "last_top1": last.get("val/top1"),
            "last_top5": last.get("val/top5"),
            "last_nll": last.get("val/nll"),
            "last_ece": last.get("val/ece"),
            "epochs": st.epoch,
            "wall_seconds": wall,
            "seconds_per_epoch": sum(seconds) / len(seconds) if seconds else None,
            "method": cfg.method,
            "model": cfg.model,
            "teacher_model": cfg.teacher.model if c.teacher is not None else None,
            "seed": cfg.seed,
            "finished": finished,
        }
        summary.update(summary_values(st.history, st.best_epoch, c.class_groups))
        if c.online is not None:
            summary["online"] = c.online.summary(c, summary)
        return summary
