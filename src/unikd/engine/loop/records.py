"""What the loop reports: the epoch's log line and the run's ``summary.json`` contents."""

from __future__ import annotations

import logging
from typing import Any

from unikd.engine.eval.class_metrics import summary_values

log = logging.getLogger("unikd")


def _pct(name: str, value: float | None) -> str:
    return f"{name} " + ("-" if value is None else f"{value:.2f}%")


def log_epoch(c: Any, epoch: int, names: list[str], means: list[float], metrics: dict[str, Any],
              record: dict[str, Any], peer_lines: list[str]) -> None:
    """Log one finished epoch (main process): the student's terms and validation numbers, then the peers'."""
    cfg = c.cfg
    top1 = metrics["top1"]
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


def run_summary(c: Any, wall: float, *, finished: bool) -> dict[str, Any]:
    """The summary of the run so far (``c``: its Components): best and last validation numbers, timing,
    the method and, online, every network's numbers."""
    st, cfg = c.state, c.cfg
    last = next((r for r in reversed(st.history) if r.get("val/top1") is not None), {})
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
