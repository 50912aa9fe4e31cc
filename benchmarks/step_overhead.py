"""Training-step overhead of each method against a reference method (plain CE by default) on the same
student, in one run, as ratios.

For every (teacher -> student) pair this builds the harness's own components
(``unikd.engine.loop.setup.build``:
model, loss module, live teacher, optimiser, scheduler, autocast) for each method and times
``Trainer.step`` -- the exact optimiser step ``unikd train`` runs, teacher forward included -- on the same
pre-drawn batches. Methods are interleaved step by step (round robin) so that drifts of the machine (other
processes, clock changes) hit all of them alike:

- ``ratio vs CE``: median over rounds of (method step / CE step of the same round).
- ``ratio vs CE+T``: for teacher methods, median over rounds of method step / (CE step + teacher forward),
  the teacher forward being timed alone (``LiveTeacher``) on the same batch in the same round.

Targets: USKD <= 1.05 x CE; KD, DKD, NKD <= 1.05 x (CE + teacher forward).

A method written ``a+b`` is the objective with the terms ``a`` and ``b`` (``loss.terms``). With
``--reference kd`` the ratios compare each method's step with the KD step on the same pair, e.g. the feature
methods: ``--methods kd,fitnet,at,nkd+fitnet --reference kd``.

The teachers are randomly initialised and saved to a temporary checkpoint (speed does not depend on the
weights); the data are random 32x32 images with 100 classes (CIFAR-100 shaped). Data loading and
augmentation are not part of the timed step (they are the same for every method).

    python benchmarks/step_overhead.py                       # resnet56->resnet20, resnet32x4->resnet8x4
    python benchmarks/step_overhead.py --precision fp32 --steps 30 --pairs resnet56:resnet20
    python benchmarks/step_overhead.py --pairs resnet32x4:resnet8x4 --methods kd,fitnet,at --reference kd
    python benchmarks/step_overhead.py --device cuda --methods ce,nkd,uskd --set diagnostics.monitors=false
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

METHODS = ["ce", "ls", "kd", "dkd", "nkd", "uskd", "tfkd", "zipf"]


def _objective(method: str) -> dict[str, str]:
    """The config overrides of a method, or of the terms ``a+b+...``."""
    if "+" in method:
        return {"loss.terms": "{" + ", ".join(f"{t}: {{}}" for t in method.split("+")) + "}"}
    return {"method": method}


def _needs_teacher(method: str) -> bool:
    from unikd.bench.spec import overrides_require_teacher

    if "+" in method:
        return any(overrides_require_teacher({"method": t}) for t in method.split("+"))
    return overrides_require_teacher({"method": method})


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _make_data(path: Path, num_classes: int, per_class: int) -> None:
    rng = np.random.default_rng(0)
    n = num_classes * per_class
    x = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    y = np.repeat(np.arange(num_classes), per_class)
    np.savez(path, x_train=x, y_train=y, x_test=x[:num_classes], y_test=y[:num_classes])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _components(
    method: str, student: str, teacher: str, ckpt: Path, data: Path, args: argparse.Namespace, work: Path
):
    from unikd.engine.config import load_config
    from unikd.engine.loop.setup import build
    from unikd.engine.loop.trainer import Trainer
    from unikd.engine.run.distributed import init_distributed

    over = [
        *(f"{k}={v}" for k, v in _objective(method).items()),
        f"model={student}",
        f"precision={args.precision}",
        f"device={args.device}",
        "data.name=npz",
        f"data.root={data}",
        f"data.batch_size={args.batch_size}",
        "epochs=1",
        "tensorboard=false",
        f"out_dir={work / method}",
    ]
    if _needs_teacher(method):
        over += [f"teacher.model={teacher}", f"teacher.checkpoint={ckpt}"]
    if args.channels_last:
        over.append("channels_last=true")
    over += args.set
    cfg = load_config(None, over)
    comp = build(cfg, init_distributed(cfg.device))
    return Trainer(comp)


def measure_pair(
    student: str, teacher: str, args: argparse.Namespace
) -> list[tuple[str, float, float, float]]:
    from unikd.engine.run.checkpoint import atomic_save
    from unikd.models import create_model

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "data.npz"
        _make_data(data, 100, max(2, -(-args.batch_size * 4 // 100)))
        ckpt = work / "teacher.pt"
        atomic_save(create_model(teacher, num_classes=100).state_dict(), ckpt)  # checksummed, as unikd writes
        trainers = {m: _components(m, student, teacher, ckpt, data, args, work) for m in args.methods}
        ref = trainers[args.methods[0]].c
        ref.train_loader.set_epoch(0)
        batches = [b for _, b in zip(range(4), ref.train_loader)]
        device = ref.info.device
        # cpu: this process's CPU time, robust when other jobs share the cores (use with --threads 1)
        clock = time.process_time if args.clock == "cpu" else time.perf_counter
        teacher_src = next((t.c.teacher for m, t in trainers.items() if _needs_teacher(m)), None)
        names = [*args.methods] + (["teacher forward"] if teacher_src is not None else [])
        times: dict[str, list[float]] = {m: [] for m in names}
        # Round robin, one step per method per round: a burst of load from another process hits every
        # method of that round alike, and per-round ratios cancel slow drifts.
        for r in range(args.warmup + args.steps):
            b = batches[r % len(batches)]
            for name in names:
                _sync(device)
                t0 = clock()
                if name == "teacher forward":
                    teacher_src(b.images, 0, b.index)
                else:
                    trainers[name].c.model.train()
                    trainers[name].step(b, 0, r, 1000)
                _sync(device)
                if r >= args.warmup:  # the warm-up rounds fill allocator and autocast caches
                    times[name].append(clock() - t0)
        for t in trainers.values():
            t.c.remove_taps()
            t.c.run_dir.close()
    ce, t_fwd = times[args.methods[0]], times.get("teacher forward")
    # "+ teacher forward" only makes sense against a teacher-free reference
    tf = t_fwd if args.methods[0] == "ce" else None

    def ratio(m: str, with_teacher: bool) -> float:
        ref = [c + t for c, t in zip(ce, tf)] if with_teacher and tf else ce
        return statistics.median(a / b for a, b in zip(times[m], ref))

    rows = [
        (
            m,
            statistics.median(times[m]) * 1e3,
            ratio(m, False),
            ratio(m, True) if _needs_teacher(m) and tf else float("nan"),
        )
        for m in args.methods
    ]
    if t_fwd:
        rows.append(
            ("teacher forward", statistics.median(t_fwd) * 1e3, ratio("teacher forward", False), float("nan"))
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--pairs",
        default="resnet56:resnet20,resnet32x4:resnet8x4",
        help="comma-separated TEACHER:STUDENT pairs",
    )
    p.add_argument(
        "--methods", default=",".join(METHODS), help="comma-separated methods; a+b = the terms a and b"
    )
    p.add_argument("--reference", default="ce", help="the method the ratios divide by (default ce)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=30, help="timed steps per method (round robin)")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up rounds")
    p.add_argument("--precision", default="bf16", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--device", default="auto")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides for every method, e.g. diagnostics.monitors=false",
    )
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: elapsed time (default); cpu: process CPU time, for a machine shared with other "
        "jobs (CPU device, best with --threads 1)",
    )
    args = p.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.reference in args.methods:
        args.methods.remove(args.reference)
    args.methods.insert(0, args.reference)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# step_overhead: {' '.join(sys.argv)}")
    print(
        f"# {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC} | torch {torch.__version__} | "
        f"{_cpu_name()} | {torch.get_num_threads()} threads | device {args.device} | {args.precision} | "
        f"batch {args.batch_size} | {args.steps} timed steps per method after {args.warmup} warm-up, "
        f"round robin | {args.clock} clock"
    )
    for pair in args.pairs.split(","):
        teacher, student = pair.split(":")
        print(f"\n## {teacher} -> {student}\n")
        ref = args.reference
        print(f"| method | median step (ms) | ratio vs {ref} | ratio vs {ref} + teacher fwd |")
        print("|---|---|---|---|")
        for m, ms, r_ce, r_cet in measure_pair(student, teacher, args):
            cet = "–" if r_cet != r_cet else f"{r_cet:.3f}"
            print(f"| {m} | {ms:.1f} | {r_ce:.3f} | {cet} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
