"""Seconds per distillation epoch with the teacher-output cache vs a live teacher vs plain CE training.

For each (teacher -> student) pair, on a class-balanced subset of the CIFAR-10 JPEG archive, this script
times three kinds of student epochs through the real harness (``unikd.engine.train``), side by side and
interleaved (ce, live, cache, ce, live, cache, ...) so that machine drift hits all three alike:

- ``ce``: plain cross-entropy training of the student;
- ``live``: KD (T=4) with the teacher running every step;
- ``cache``: the same KD run reading the teacher's logits from a ``unikd cache-teacher`` cache (fp16).

The epoch time is the training loop only (``steps * batch / images_per_s`` from ``metrics.jsonl``; the
end-of-epoch evaluation and checkpoint writes are excluded); the first epoch of every run is a warm-up and
is dropped; the reported figure is the median over the remaining epochs of all repeats. Teachers are
randomly initialised (speed does not depend on the weights), saved as plain state_dict files. It also
times the cache build and reports its size on disk. Results go to stdout and, with ``--write``, between
the markers of ``docs/_parts/cache.md``.

    python benchmarks/cache_speed.py --write
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- cache_speed:begin -->", "<!-- cache_speed:end -->"
MODES = ("ce", "live", "cache")


def shared_data() -> Path:
    return Path(os.environ.get("UNIKD_SHARED_DATA", ROOT.parent / "shared" / "data"))


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(
            line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")
        )
    except (OSError, subprocess.CalledProcessError, StopIteration):
        model = platform.processor() or "unknown CPU"
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def base_overrides(args: argparse.Namespace, work: Path) -> list[str]:
    return [
        "data.name=imagefolder",
        f"data.root={args.data}",
        f"data.samples_per_class={args.per_class}",
        f"data.batch_size={args.batch_size}",
        "data.eval_batch_size=250",
        "device=cpu",
        "tensorboard=false",
        f"epochs={args.epochs}",
        f"eval_every={args.epochs}",
        "sched.name=constant",
        "seed=0",
    ]


def epoch_seconds(run_dir: Path, steps: int, batch: int) -> list[float]:
    """Training-loop seconds of every epoch but the first (warm-up)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [steps * batch / r["images_per_s"] for r in rows[1:]]


def run_pair(args: argparse.Namespace, teacher: str, student: str, work: Path) -> dict:
    from unikd.cache import read_manifest
    from unikd.cache.build import build_teacher_cache
    from unikd.engine.config import load_config
    from unikd.engine.loop.trainer import train
    from unikd.models import create_model

    tag = f"{teacher}-{student}"
    ckpt = work / f"{teacher}.pt"
    if not ckpt.exists():
        torch.manual_seed(0)
        torch.save(create_model(teacher, num_classes=10).state_dict(), ckpt)
    base = base_overrides(args, work) + [f"model={student}"]
    kd = ["method=kd", f"teacher.model={teacher}", f"teacher.checkpoint={ckpt}", "loss.temperature=4.0"]
    cfg_kd = load_config(None, base + kd)

    cache_dir = work / f"cache-{tag}"
    from unikd.engine.loop.setup import build_datasets

    build_datasets(cfg_kd)  # decode/cache the images first, so the build time below is the teacher pass
    shutil.rmtree(cache_dir, ignore_errors=True)  # time a full build, not the reuse of an earlier one
    t0 = time.perf_counter()
    build_teacher_cache(cfg_kd, cache_dir, show_progress=False)
    build_s = time.perf_counter() - t0
    manifest = read_manifest(cache_dir)
    assert manifest is not None and manifest["epochs_built_last_run"] == args.epochs, "cache was not rebuilt"

    variants = {
        "ce": base + ["method=ce"],
        "live": base + kd,
        "cache": base + kd + [f"teacher.cache={cache_dir}"],
    }
    times: dict[str, list[float]] = {m: [] for m in MODES}
    top1: dict[str, list[float]] = {m: [] for m in MODES}
    for rep in range(args.repeats):
        for mode in MODES if rep % 2 == 0 else MODES[::-1]:  # alternate the order against drift
            out = work / "runs" / tag / f"{mode}-{rep}"
            # overwrite=true: a rerun of this script replaces its own earlier timing runs
            summary = train(load_config(None, variants[mode] + [f"out_dir={out}", "overwrite=true"]))
            n = manifest["num_samples"]
            times[mode] += epoch_seconds(out, n // args.batch_size, args.batch_size)
            top1[mode].append(summary["last_top1"])
            last = [round(t, 2) for t in times[mode][-(args.epochs - 1) :]]
            print(f"  {tag} {mode} rep {rep}: epoch seconds {last}", flush=True)
    med = {m: statistics.median(v) for m, v in times.items()}
    return {
        "pair": f"{teacher} -> {student}",
        "seconds": med,
        "spread": {m: (min(v), max(v)) for m, v in times.items()},
        "samples": {m: len(v) for m, v in times.items()},
        "cache_over_ce": med["cache"] / med["ce"],
        "live_over_cache": med["live"] / med["cache"],
        "live_over_ce": med["live"] / med["ce"],
        # the fastest epoch of each kind: interference from other processes only ever adds time
        "cache_over_ce_min": min(times["cache"]) / min(times["ce"]),
        "live_over_cache_min": min(times["live"]) / min(times["cache"]),
        "build_seconds": build_s,
        "build_seconds_per_epoch": manifest["build_seconds_last_run"] / args.epochs,
        "cache_bytes": manifest["total_bytes"],
        "bytes_per_sample": manifest["bytes_per_sample"],
        "num_samples": manifest["num_samples"],
        "top1_equal_live_cache": top1["live"] == top1["cache"],
    }


def render(results: list[dict], args: argparse.Namespace, command: str) -> str:
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Measured {date} on {machine()}.",
        f"Command: `{command}`.",
        f"Data: CIFAR-10 JPEG archive, {args.per_class} training images per class ({args.per_class * 10} "
        f"images; the class-balanced subset `data.samples_per_class={args.per_class}`), batch "
        f"{args.batch_size}, {args.epochs} epochs per run (the first dropped as warm-up), {args.repeats} "
        "interleaved repeats (order alternated); median training-loop seconds per epoch (min-max in "
        "brackets). KD at T=4; cache in fp16 full-logit storage. Cache build: seconds per cached epoch of "
        "the teacher pass (the build's total wall time, with loading the data and the teacher, in brackets).",
        "",
        "| pair | plain CE s/epoch | KD live teacher | KD cached | cached / CE (min/min) | "
        "live / cached (min/min) | cache build s/epoch | cache size |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s, sp = r["seconds"], r["spread"]
        cell = {m: f"{s[m]:.2f} [{sp[m][0]:.2f}-{sp[m][1]:.2f}]" for m in MODES}
        lines.append(
            f"| {r['pair']} | {cell['ce']} | {cell['live']} | {cell['cache']} | {r['cache_over_ce']:.3f}x "
            f"({r['cache_over_ce_min']:.3f}x) | {r['live_over_cache']:.2f}x "
            f"({r['live_over_cache_min']:.2f}x) | {r['build_seconds_per_epoch']:.2f} "
            f"({r['build_seconds']:.1f} total) | "
            f"{r['cache_bytes'] / 1e6:.2f} MB ({r['bytes_per_sample']} B x {r['num_samples']} x "
            f"{args.epochs}) |"
        )
    lines += ["", "Targets:"]
    for r in results:
        ok = max(r["cache_over_ce"], r["cache_over_ce_min"]) <= 1.15
        lines.append(
            f"- {r['pair']}: cached epoch = {r['cache_over_ce']:.3f}x a plain CE epoch by medians, "
            f"{r['cache_over_ce_min']:.3f}x by fastest epochs (target <= 1.15x): "
            f"**{'met' if ok else 'missed'}**; live teacher / cached = {r['live_over_cache']:.2f}x."
        )
    return "\n".join(lines) + "\n"


def write_section(path: Path, text: str) -> None:
    doc = path.read_text() if path.exists() else f"{BEGIN}\n{END}\n"
    if BEGIN not in doc or END not in doc:
        doc += f"\n{BEGIN}\n{END}\n"
    pattern = re.escape(BEGIN) + r".*?" + re.escape(END)
    new = re.sub(pattern, lambda _: f"{BEGIN}\n{text}{END}", doc, flags=re.S)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(new)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=shared_data() / "cifar10-jpg.tar.gz")
    p.add_argument("--per-class", type=int, default=32, help="training images per class (subset)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3, help="epochs per run (the first is a warm-up)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--pairs", default="resnet32x4:resnet8x4,resnet56:resnet20", help="teacher:student,...")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "cache_speed")
    p.add_argument("--write", action="store_true", help="write the results into docs/_parts/cache.md")
    args = p.parse_args(argv)
    if args.epochs < 2:
        p.error("--epochs must be >= 2 (the first epoch of every run is dropped as warm-up)")
    if not args.data.exists():
        print(f"data {args.data} not found; set UNIKD_SHARED_DATA or pass --data", file=sys.stderr)
        return 2
    import logging

    logging.getLogger("unikd").setLevel(logging.WARNING)  # keep the output to the timing lines
    os.environ.setdefault("CI", "1")  # plain progress lines, no bars
    args.work.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/cache_speed.py " + " ".join(sys.argv[1:] if argv is None else argv)
    results = []
    for pair in args.pairs.split(","):
        teacher, student = pair.split(":")
        print(f"{teacher} -> {student}", flush=True)
        results.append(run_pair(args, teacher, student, args.work))
    text = render(results, args, command.strip())
    print(text)
    if args.write:
        write_section(ROOT / "docs" / "_parts" / "cache.md", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
