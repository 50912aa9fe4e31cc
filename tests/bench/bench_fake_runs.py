"""Synthetic run folders in the format of docs/training.md ("Where results live"), for report tests that must
not depend on the training harness."""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

import yaml


def write_run(
    run_dir: Path,
    *,
    method: str,
    seed: int,
    curve: list[float],
    model: str = "resnet8",
    teacher_model: str | None = None,
    finished: bool = True,
    seconds: float = 2.0,
    record: dict | None = None,
    torn_tail: bool = False,
    test: dict | None = None,
    summary_extra: dict | None = None,
) -> Path:
    """A run folder whose per-epoch val top-1 is ``curve``; top-5 = top-1 + 20, ece = 0.01 * epoch.

    ``test`` adds test-split numbers to the summary (keys without the ``test_`` prefix, e.g.
    ``{"selected_top1": 50.0}``), as a run with ``final_test`` writes them; ``summary_extra`` adds any
    other summary keys (e.g. the per-class top-1 of a run with dropped classes).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = {
        "method": method,
        "model": model,
        "seed": seed,
        "epochs": len(curve),
        "teacher": {"model": teacher_model, "checkpoint": None},
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    lines = []
    for i, top1 in enumerate(curve, start=1):
        lines.append(
            json.dumps(
                {
                    "epoch": i,
                    "lr": 0.1,
                    "train/loss": 1.0,
                    "train/ce": 1.0,
                    "val/top1": top1,
                    "val/top5": top1 + 20,
                    "val/nll": 1.5 - i * 0.1,
                    "val/ece": 0.01 * i,
                    "images_per_s": 100.0,
                    "epoch_seconds": seconds,
                }
            )
        )
    text = "\n".join(lines) + "\n"
    if torn_tail:
        text += '{"epoch": 99, "val/to'
    (run_dir / "metrics.jsonl").write_text(text)
    if finished:
        best = max(range(len(curve)), key=lambda i: curve[i])
        summary = {
            "best_top1": curve[best],
            "best_epoch": best + 1,
            "last_top1": curve[-1],
            "last_top5": curve[-1] + 20,
            "last_nll": 1.5 - len(curve) * 0.1,
            "last_ece": 0.01 * len(curve),
            "epochs": len(curve),
            "wall_seconds": seconds * len(curve),
            "seconds_per_epoch": seconds,
            "method": method,
            "model": model,
            "teacher_model": teacher_model,
            "seed": seed,
            "finished": True,
        }
        summary.update({f"test_{k}": v for k, v in (test or {}).items()})
        summary.update(summary_extra or {})
        (run_dir / "summary.json").write_text(json.dumps(summary))
    if record is not None:
        (run_dir / "bench_run.json").write_text(json.dumps(record))
    return run_dir


def write_grid(root: Path) -> None:
    """Track ``t`` with ce / kd (3 seeds each, bench records) and one unfinished kd seed 3."""
    ce = {0: [60.0, 70.0], 1: [62.0, 72.0], 2: [64.0, 74.0]}  # best = last: 70, 72, 74
    kd = {0: [61.0, 71.0], 1: [65.0, 74.0], 2: [77.0, 76.0]}  # best 71, 74, 77; last 71, 74, 76
    for label, curves, teacher in (("ce", ce, None), ("kd", kd, "resnet20")):
        for seed, curve in curves.items():
            rec = {"role": "student", "track": "t", "label": label, "method": label, "seed": seed}
            write_run(
                root / "runs" / "t" / label / f"seed{seed}",
                method=label,
                seed=seed,
                curve=curve,
                teacher_model=teacher,
                record=rec,
                seconds=2.0 if label == "ce" else 3.0,
            )
    rec = {"role": "student", "track": "t", "label": "kd", "method": "kd", "seed": 3}
    write_run(
        root / "runs" / "t" / "kd" / "seed3",
        method="kd",
        seed=3,
        curve=[10.0],
        teacher_model="resnet20",
        record=rec,
        finished=False,
        torn_tail=True,
    )
    rec = {"role": "teacher", "track": "t", "label": "teacher", "method": "ce", "seed": 0}
    write_run(
        root / "teachers" / "resnet20-abc",
        method="ce",
        seed=0,
        curve=[80.0, 85.0],
        model="resnet20",
        record=rec,
    )


def run_cli(command: str, argv: list[str]) -> int:
    """Run one ``unikd`` subcommand through its own ``register`` (independent of the other commands)."""
    parser = argparse.ArgumentParser(prog="unikd")
    importlib.import_module(f"unikd.cli.{command}").register(parser.add_subparsers(dest="command"))
    args = parser.parse_args([command, *argv])
    return int(args.func(args) or 0)
