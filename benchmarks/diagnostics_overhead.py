"""Cost of the per-term gradient diagnostics (``diagnostics.every``): training steps with diagnostics off and
on, side by side in one run, as ratios.

For each objective this builds the harness's own components (``unikd.engine.loop.setup.build``) three times --
``diagnostics.every`` 0 (off), 10 and 1 -- and times ``Trainer.step`` on the same pre-drawn batches. The
configurations are interleaved block by block (round robin, blocks of ``--block`` steps, so a block of
``every=10`` holds exactly one measurement) so that drifts of a shared machine hit all of them alike:

- ``ratio vs off``: median over rounds of (block time / the same round's block time with diagnostics off).
- ``every=N`` for larger N follows as ``1 + (ratio(every=1) - 1) / N`` (the measurement is the only extra
  work), printed for N = 100.

Objectives: ``kd`` (every term reads the logits, so the measured layer is the classifier: each term's
gradient is taken through the loss and the last linear layer only) and ``kd+fitnet`` (FitNet's gradient
stops at the hint, so the shared layer is inside the backbone and the CE gradient is taken back through the
later stages). The teacher is randomly initialised (speed does not depend on the weights); the data are
random CIFAR-shaped images.

    python benchmarks/diagnostics_overhead.py --threads 1 --clock cpu
    python benchmarks/diagnostics_overhead.py --pair resnet32x4:resnet8x4 --rounds 10
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from step_overhead import _cpu_name, _make_data, _objective

EVERY = (0, 10, 1)


def _trainer(method: str, every: int, student: str, teacher: str, ckpt: Path, data: Path, work: Path, args):
    from unikd.engine.config import load_config
    from unikd.engine.loop.setup import build
    from unikd.engine.loop.trainer import Trainer
    from unikd.engine.run.distributed import init_distributed

    over = [
        *(f"{k}={v}" for k, v in _objective(method).items()),
        f"model={student}",
        f"teacher.model={teacher}",
        f"teacher.checkpoint={ckpt}",
        "precision=fp32",
        "device=cpu",
        "data.name=npz",
        f"data.root={data}",
        f"data.batch_size={args.batch_size}",
        "epochs=1",
        "tensorboard=false",
        f"diagnostics.every={every}",
        f"out_dir={work / f'{method}-{every}'}",
    ]
    cfg = load_config(None, over)
    return Trainer(build(cfg, init_distributed(cfg.device)))


def measure(method: str, args) -> dict[int, list[float]]:
    from unikd.engine.run.checkpoint import atomic_save
    from unikd.models import create_model

    teacher, student = args.pair.split(":")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "data.npz"
        _make_data(data, 100, max(2, -(-args.batch_size * 4 // 100)))
        ckpt = work / "teacher.pt"
        atomic_save(create_model(teacher, num_classes=100).state_dict(), ckpt)  # checksummed, as unikd writes
        trainers = {e: _trainer(method, e, student, teacher, ckpt, data, work, args) for e in EVERY}
        ref = trainers[0].c
        ref.train_loader.set_epoch(0)
        batches = [b for _, b in zip(range(4), ref.train_loader)]
        clock = time.process_time if args.clock == "cpu" else time.perf_counter
        times: dict[int, list[float]] = {e: [] for e in EVERY}
        steps = {e: 0 for e in EVERY}
        for r in range(args.warmup + args.rounds):
            for e in EVERY:
                t = trainers[e]
                t.c.model.train()
                t0 = clock()
                for _ in range(args.block):
                    steps[e] += 1
                    t.c.state.global_step = steps[e] - 1  # the step counter decides when to measure
                    t.step(batches[steps[e] % len(batches)], 0, steps[e] % 1000, 1000)
                if r >= args.warmup:
                    times[e].append(clock() - t0)
        for t in trainers.values():
            t.c.remove_taps()
            t.c.run_dir.close()
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pair", default="resnet20:resnet8", help="TEACHER:STUDENT (default resnet20:resnet8)")
    p.add_argument("--methods", default="kd,kd+fitnet", help="comma-separated objectives; a+b = terms a, b")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--block", type=int, default=10, help="steps per timed block")
    p.add_argument("--rounds", type=int, default=12, help="timed rounds (one block per setting each)")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up rounds")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall: elapsed time; cpu: process CPU time (for a shared machine, with --threads 1)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# diagnostics_overhead: {' '.join(sys.argv)}")
    print(
        f"# {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC} | torch {torch.__version__} | "
        f"{_cpu_name()} | {torch.get_num_threads()} threads | cpu fp32 | batch {args.batch_size} | "
        f"pair {args.pair} | "
        f"{args.rounds} rounds of {args.block}-step blocks per setting after {args.warmup} warm-up, round "
        f"robin | {args.clock} clock"
    )
    print("\n| objective | diagnostics | median ms/step | ratio vs off |")
    print("|---|---|---|---|")
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        times = measure(method, args)
        off = times[0]
        ratios = {}
        for e in EVERY:
            ratios[e] = statistics.median(a / b for a, b in zip(times[e], off))
            label = "off" if e == 0 else f"every={e}"
            ms = statistics.median(times[e]) / args.block * 1e3
            print(f"| {method} | {label} | {ms:.1f} | {ratios[e]:.3f} |", flush=True)
        print(f"| {method} | every=100 (from every=1) | – | {1 + (ratios[1] - 1) / 100:.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
