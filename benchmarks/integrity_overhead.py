"""What the integrity checks cost, measured side by side in one process (ratios, interleaved round-robin).

1. Checkpoints: ``atomic_save`` + ``load_checkpoint`` (sha256 in the zip comment, verified on load, plus the
   ``last.prev.pt`` rotation of ``save_last``) against plain ``torch.save`` to a temp file + ``os.replace``
   + ``torch.load``, for a CIFAR ResNet-56 training checkpoint (weights + SGD momentum) and a ResNet-50-size
   one (25.6M parameters).
2. Losses: forward+backward of every loss with the non-finite guard (``nan_if_nonfinite``) against the same
   loss with the guard replaced by the identity (feature losses on (N, C/16, 8, 8) maps).

Usage::

    python benchmarks/integrity_overhead.py            # medians of 15 (checkpoints) / 30 (losses) repeats
    python benchmarks/integrity_overhead.py --quick
    python benchmarks/integrity_overhead.py --clock cpu   # process CPU time: robust to other load
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter


def _median_ms(fns: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(repeats):
        for name, fn in fns.items():  # interleaved, so machine load hits every variant alike
            t0 = _clock()
            fn()
            times[name].append((_clock() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def _checkpoint(params: int) -> dict:
    g = torch.Generator().manual_seed(0)
    w = {f"layer{i}.weight": torch.randn(params // 8, generator=g) for i in range(8)}
    state = {i: {"momentum_buffer": v.clone()} for i, v in enumerate(w.values())}
    return {"format": "unikd-checkpoint", "model": w, "optimizer": {"state": state}, "epoch": 1}


def bench_checkpoints(repeats: int, sizes: dict[str, int]) -> None:
    from unikd.engine.run.checkpoint import atomic_save, load_checkpoint
    from unikd.engine.run.last_checkpoint import save_last

    print("checkpoint write + read (median ms)")
    print(f"{'checkpoint':24s} {'MB':>7s} {'plain':>9s} {'checksum':>9s} {'ratio':>6s} {'save_last':>9s} "
          f"{'ratio':>6s}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for label, n in sizes.items():
            obj = _checkpoint(n)

            def plain(obj=obj) -> None:
                tmp_path = folder / ".plain.tmp"
                with open(tmp_path, "wb") as f:
                    torch.save(obj, f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp_path, folder / "plain.pt")
                torch.load(folder / "plain.pt", weights_only=True)

            def sealed(obj=obj) -> None:
                atomic_save(obj, folder / "sealed.pt")
                load_checkpoint(folder / "sealed.pt")

            def rotated(obj=obj) -> None:
                save_last(obj, folder / "last.pt")
                load_checkpoint(folder / "last.pt")

            ms = _median_ms({"plain": plain, "sealed": sealed, "rotated": rotated}, repeats)
            mb = (folder / "sealed.pt").stat().st_size / 1e6
            plain_ms = ms["plain"]
            print(f"{label:24s} {mb:7.1f} {plain_ms:9.1f} {ms['sealed']:9.1f} {ms['sealed'] / plain_ms:6.2f} "
                  f"{ms['rotated']:9.1f} {ms['rotated'] / plain_ms:6.2f}")


def bench_losses(repeats: int, shapes: list[tuple[int, int]]) -> None:
    import inspect

    import unikd.losses._common as common
    from unikd.losses import LOSS_FUNCTIONS

    guarded = common.nan_if_nonfinite
    modules = {name: inspect.getmodule(fn) for name, fn in LOSS_FUNCTIONS.items()}
    print("\nloss forward+backward, non-finite guard on vs off (median ms)")
    print(f"{'loss':10s} {'N x C':>12s} {'off':>9s} {'on':>9s} {'ratio':>6s}")
    for n, c in shapes:
        g = torch.Generator().manual_seed(0)
        zs, zo = torch.randn(n, c, generator=g), torch.randn(n, c, generator=g)
        y = torch.randint(0, c, (n,), generator=g)
        # feature losses: C/16 channels of 8x8 maps, about as many elements as the logits
        maps = [torch.randn(n, max(1, c // 16), 8, 8, generator=g) for _ in range(2)]
        for name, fn in sorted(LOSS_FUNCTIONS.items()):
            params = [p.name for p in inspect.signature(fn).parameters.values()
                      if p.kind == p.POSITIONAL_OR_KEYWORD]
            args: list = []
            for i, p in enumerate(params):
                if p.endswith("logits"):
                    args.append(zs if i == 0 else zo)
                elif p.endswith("feats"):
                    args.append([maps[min(i, 1)]])
                elif p.endswith("feat"):
                    args.append(maps[min(i, 1)])
                else:
                    args.append(y)

            def run(args=args, fn=fn) -> None:
                a = [[t.clone().requires_grad_(True) for t in x] if isinstance(x, list)
                     else x.clone().requires_grad_(True) if x.is_floating_point() else x for x in args]
                fn(*a).backward()

            def with_guard(name=name, run=run) -> None:
                modules[name].nan_if_nonfinite = guarded
                run()

            def without_guard(name=name, run=run) -> None:
                modules[name].nan_if_nonfinite = lambda loss, *inputs: loss
                run()

            ms = _median_ms({"off": without_guard, "on": with_guard}, repeats)
            modules[name].nan_if_nonfinite = guarded
            shape = f"{n}x{c}"
            print(f"{name:10s} {shape:>12s} {ms['off']:9.3f} {ms['on']:9.3f} {ms['on'] / ms['off']:6.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=sorted(CLOCK), default="wall",
                    help="wall clock, or this process's CPU time (robust to other load on the machine; "
                    "leaves out waiting for the disk)")
    args = ap.parse_args()
    global _clock
    _clock = CLOCK[args.clock]
    torch.set_num_threads(args.threads)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent, check=False).stdout.strip() or "?"
    machine = platform.processor() or platform.machine()
    print(f"# {datetime.date.today()}  torch {torch.__version__}  {machine}  threads {args.threads}  "
          f"clock {args.clock}  commit {commit}  load {os.getloadavg()[0]:.1f}\n")
    if args.quick:
        bench_checkpoints(3, {"resnet56 (0.86M)": 860_000})
        bench_losses(5, [(256, 100)])
    else:
        bench_checkpoints(15, {"resnet56 (0.86M)": 860_000, "resnet50 size (25.6M)": 25_600_000})
        bench_losses(30, [(256, 100), (256, 1000)])


if __name__ == "__main__":
    main()
