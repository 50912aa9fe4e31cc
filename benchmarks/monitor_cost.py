"""CPU cost of the logged KL forms (``NKDLoss.monitor``, ``USKDLoss.monitor``) next to each loss's own
forward + backward: the per-step price of ``train/<term>_kl``.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/monitor_cost.py              # N=256, C=1000, D=512, 1 thread
    python benchmarks/monitor_cost.py --batch 64 --classes 100
"""

from __future__ import annotations

import argparse
import time

import torch

from unikd.losses import NKDLoss, USKDLoss


def cpu_ms(fn, repeats: int) -> float:
    """Mean process CPU time of ``fn()`` in ms over ``repeats`` calls after one warm-up call."""
    fn()
    start = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - start) / repeats * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--features", type=int, default=512, help="width of USKD's weak-head input")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    n, c, d = args.batch, args.classes, args.features
    z = torch.randn(n, c, generator=g).requires_grad_(True)
    teacher = torch.randn(n, c, generator=g)
    emb = torch.randn(n, d, generator=g)
    y = torch.randint(0, c, (n,), generator=g)
    nkd, uskd = NKDLoss(), USKDLoss(in_features=d, num_classes=c)
    print(f"# monitor_cost: N={n}, C={c}, D={d}, {args.threads} thread(s), torch {torch.__version__}, "
          f"mean process CPU time of {args.repeats} calls after 1 warm-up")
    print("| loss | loss forward + backward (ms) | monitor (ms) |")
    print("|---|---:|---:|")
    rows = [
        ("NKD", lambda: nkd(z, teacher, y).backward(), lambda: nkd.monitor(z, teacher, y)),
        ("USKD", lambda: uskd(z, emb, y).backward(), lambda: uskd.monitor(z, emb, y)),
    ]
    for name, loss, monitor in rows:
        print(f"| {name} | {cpu_ms(loss, args.repeats):.1f} | {cpu_ms(monitor, args.repeats):.1f} |")


if __name__ == "__main__":
    main()
