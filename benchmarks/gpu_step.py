"""Milliseconds per training step on one device: eager vs torch.compile vs CUDA graphs, and k concurrent jobs.

Ready for a GPU run in one command: ``python benchmarks/gpu_step.py`` on a CUDA machine (the full grid;
every mode, CE/KD/NKD/USKD, k = 1, 2, 4, 8 jobs). Two kinds of step are timed:

- the self-contained step built here from unikd's models and losses (so it can be captured in a CUDA graph
  whatever the engine does): the teacher forward under ``no_grad``, the student forward, CE plus the
  method's term, the backward pass and a fused (else foreach) SGD update, in the modes ``eager`` (checks
  off: ``unikd.losses.checks``, no host sync in the losses), ``eager+checks`` (checks full), ``compile``
  (``torch.compile`` of the whole step including backward and update, ``--backend``, inductor by default),
  ``cudagraphs`` (the eager step captured once in a ``torch.cuda.CUDAGraph``, CUDA only) and
  ``compile+cudagraphs`` (``mode="reduce-overhead"``, CUDA only);
- the engine's own step (``Trainer.step``, benchmarks/_gpu_step_engine.py), CE and USKD only (teacher-free):
  ``engine`` (eager, checks off) and ``engine+compile`` (``compile=step``). It keeps its one host copy per
  step (the finiteness check and the logs), so it is not captured in a CUDA graph.

Data are random CIFAR-shaped batches (nothing is downloaded). Configurations of a pair are timed round
robin (``--rounds`` rounds of ``--block`` steps, one device sync per block; medians), so drifts of the
machine hit all alike. Printed: ms/step, the ratio to CE of the same pair and mode, images/s, and the
projected wall time of one ``--epochs`` run over ``--train-size`` images (drop-last batches; steps only: no
data loading or evaluation). Then, for ``--jobs`` k = 1, 2, 4, 8, k processes run one configuration at once
(CPU threads split between them): images/s per device, and the projected time of the standard table
(``--table-runs`` runs of that configuration, k at a time).

    python benchmarks/gpu_step.py                                # CUDA, the full grid
    python benchmarks/gpu_step.py --device cpu --quick           # CPU smoke run, under a minute
    python benchmarks/gpu_step.py --device cpu --quick --backend inductor --modes eager,engine,engine+compile
    python benchmarks/gpu_step.py --pairs resnet32x4:resnet8x4 --methods ce,uskd --modes eager,cudagraphs
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch
from _gpu_step import METHODS, MODES, batches, make_step  # benchmarks/ is on sys.path when run as a script


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_block(step, data, block: int, device: str) -> float:
    sync(device)
    t0 = time.perf_counter()
    for i in range(block):
        step(*data[i % len(data)])
    sync(device)
    return (time.perf_counter() - t0) * 1e3 / block


def run_pair(pair: str, args: argparse.Namespace) -> dict[tuple[str, str], float]:
    """Median ms/step of every (method, mode) of ``pair``, timed round robin."""
    data = batches(args)
    steps = {}
    for method in args.methods:
        for mode in args.modes:
            try:
                step = make_step(mode, pair, method, args, *data[0])
                if step is not None:
                    for _ in range(args.warmup):  # compilation happens here
                        step(*data[0])
                    steps[method, mode] = step
            except Exception as err:  # a mode that fails is reported, the others still run
                print(f"  {pair} {method} {mode}: failed ({type(err).__name__}: {str(err)[:160]})")
    times: dict[tuple[str, str], list[float]] = {key: [] for key in steps}
    for _ in range(args.rounds):
        for key, step in steps.items():
            times[key].append(time_block(step, data, args.block, args.device))
    return {key: statistics.median(v) for key, v in times.items()}


def run_hours(ms: float, args: argparse.Namespace) -> float:
    return ms * args.epochs * (args.train_size // args.batch) / 3.6e6


def print_pair(pair: str, ms: dict[tuple[str, str], float], args: argparse.Namespace) -> None:
    print(f"\n{pair}  (batch {args.batch}, {args.image_size}x{args.image_size}, {args.device})")
    print(
        f"  {'method':<6} {'mode':<20} {'ms/step':>9} {'x CE':>6} {'x eager':>8} {'img/s':>8} {'run (h)':>8}"
    )
    for (method, mode), v in ms.items():
        ce = ms.get(("ce", mode))
        eager = ms.get((method, "eager"))
        print(
            f"  {method:<6} {mode:<20} {v:9.2f} {v / ce if ce else float('nan'):6.2f} "
            f"{v / eager if eager else float('nan'):8.2f} {args.batch * 1e3 / v:8.0f} "
            f"{run_hours(v, args):8.2f}"
        )


def worker(pair, method, mode, args, barrier, queue) -> None:
    torch.set_num_threads(args.threads)
    data = batches(args)
    step = make_step(mode, pair, method, args, *data[0])
    for _ in range(args.warmup):
        step(*data[0])
    sync(args.device)
    barrier.wait()  # all jobs time the same stretch
    queue.put(statistics.median(time_block(step, data, args.block, args.device) for _ in range(args.rounds)))


def run_jobs(pair: str, args: argparse.Namespace) -> None:
    method, mode = args.jobs_method, args.jobs_mode
    print(f"\n{pair} {method} {mode}: k concurrent jobs (standard table = {args.table_runs} runs)")
    print(f"  {'k':>2} {'ms/step':>9} {'img/s/device':>13} {'x k=1':>6} {'run (h)':>8} {'table (h)':>10}")
    ctx = mp.get_context("spawn")
    base = None
    for k in args.jobs:
        args.threads = max(1, torch.get_num_threads() // k)  # the threads of this process, split
        barrier, queue = ctx.Barrier(k), ctx.Queue()
        job = (pair, method, mode, args, barrier, queue)
        procs = [ctx.Process(target=worker, args=job) for _ in range(k)]
        for p in procs:
            p.start()
        ms = [queue.get() for _ in procs]
        for p in procs:
            p.join()
        rate = sum(args.batch * 1e3 / m for m in ms)
        base = base or rate
        per_run = run_hours(statistics.mean(ms), args)
        table = per_run * -(-args.table_runs // k)  # k runs at a time
        print(
            f"  {k:>2} {statistics.mean(ms):9.2f} {rate:13.0f} {rate / base:6.2f} {per_run:8.2f} "
            f"{table:10.1f}"
        )


def describe(args: argparse.Namespace) -> None:
    if args.device == "cuda":
        machine = torch.cuda.get_device_name()
    else:
        machine = platform.processor() or platform.machine()
        try:
            out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
            machine = next(
                (ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")),
                machine,
            )
        except OSError:
            pass
    root = Path(__file__).resolve().parents[1]
    commit = (
        subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        or "unknown"
    )
    print(
        f"# gpu_step: {machine}, torch {torch.__version__}, {os.cpu_count()} CPUs, commit {commit}, "
        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; compile backend {args.backend}"
    )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = "cuda" if torch.cuda.is_available() else "cpu"
    p.add_argument("--device", default=default, choices=("cuda", "cpu"))
    p.add_argument("--quick", action="store_true",
                   help="CPU smoke run in under a minute: one small pair at 16x16, CE and USKD, few steps, "
                   "no concurrent jobs, compile backend aot_eager (no code generation: not inductor's times)")
    p.add_argument("--pairs", default="resnet32x4:resnet8x4,resnet56:resnet20", help="teacher:student,...")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--jobs", default="1,2,4,8", help="concurrent jobs k ('' for none)")
    p.add_argument("--jobs-method", default="kd")
    p.add_argument("--jobs-mode", default=None, help="default: cudagraphs on CUDA, eager on CPU")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--block", type=int, default=20, help="steps per timed block")
    p.add_argument("--backend", default=None,
                   help="torch.compile backend of the compiled modes (inductor; aot_eager with --quick)")
    p.add_argument("--epochs", type=int, default=240)
    p.add_argument("--train-size", type=int, default=50000)
    p.add_argument("--table-runs", type=int, default=140, help="runs of the standard table (28 cells x 5)")
    args = p.parse_args(argv)
    if args.quick:
        for name, value in (
            ("pairs", "resnet20:resnet8"),
            ("image_size", 16),
            ("warmup", 2),
            ("rounds", 5),
            ("block", 4),
            ("jobs", ""),
            ("methods", "ce,uskd"),
        ):
            if getattr(args, name) == p.get_default(name):
                setattr(args, name, value)
    args.backend = args.backend or ("aot_eager" if args.quick else "inductor")
    args.pairs = [s for s in args.pairs.split(",") if s]
    args.methods = [s for s in args.methods.split(",") if s]
    args.modes = [s for s in args.modes.split(",") if s]
    args.jobs = [int(s) for s in str(args.jobs).split(",") if s]
    args.jobs_mode = args.jobs_mode or ("cudagraphs" if args.device == "cuda" else "eager")
    unknown = [m for m in args.modes if m not in MODES] + [m for m in args.methods if m not in METHODS]
    if unknown:
        p.error(f"unknown modes/methods {unknown}; modes: {', '.join(MODES)}; methods: {', '.join(METHODS)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    torch._dynamo.config.cache_size_limit = 64  # one compiled step per configuration
    describe(args)
    for pair in args.pairs:
        print_pair(pair, run_pair(pair, args), args)
    for pair in args.pairs if args.jobs else []:
        run_jobs(pair, args)


if __name__ == "__main__":
    main()
