"""Forward+backward time and peak memory of the unikd losses, side by side with baselines.

Compares, in one run and interleaved round-robin (so machine load hits every method alike):
plain cross-entropy, a plain KD-KL one-liner, every ``unikd.losses`` function (the newer logit losses at
their published CIFAR-100 settings), and straightforward
re-implementations of the published NKD/USKD formulation (github.com/yzd-v/cls_KD: boolean-mask selection of
the non-target columns, ``torch.sort`` + ``torch.argsort`` for the USKD ranks), written here from the
formulas for comparison only.

Usage::

    python benchmarks/loss_speed.py            # (N, C) = (256, 100), (256, 1000), (1024, 32000), wall clock
    python benchmarks/loss_speed.py --quick    # small sizes, few repeats (smoke test)
    python benchmarks/loss_speed.py --threads 1 --clock cpu   # process CPU time: robust to other load
    python benchmarks/loss_speed.py --device all              # CPU, then CUDA when present
    python benchmarks/loss_speed.py --threads 1 --clock cpu --sizes 256x1000 1024x32000 \
        --methods standardize,dist,ttm,abkd,CTKD                # the newer logit losses next to kd_loss

Peak memory is the peak of tensor bytes allocated above the inputs during one forward+backward: on CPU from
the PyTorch profiler's allocation events plus numpy's own peak measured in a separate run with tracemalloc
(unikd's CPU rank sort uses numpy buffers; the sum is an upper bound), on CUDA from
``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
import tracemalloc
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from unikd.losses import (
    CTKDLoss,
    abkd_loss,
    dist_loss,
    dkd_loss,
    kd_loss,
    nkd_loss,
    tfkd_loss,
    ttm_loss,
    uskd_loss,
    wttm_loss,
    zipf_ls_loss,
)

Inputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


# ---- straightforward re-implementations of the published formulation (for comparison only) -------------
def published_nkd(zs: torch.Tensor, zt: torch.Tensor, y: torch.Tensor, temp: float = 1.0, gamma: float = 1.5):
    n = zs.shape[0]
    label = y.view(-1, 1)
    s_t = F.log_softmax(zs, dim=1).gather(1, label)
    t_t = F.softmax(zt, dim=1).gather(1, label).detach()
    loss_t = -(t_t * s_t).mean()
    keep = torch.ones_like(zs).scatter_(1, label, 0).bool()  # boolean mask -> (N, C-1) copies
    s_non = F.log_softmax(zs[keep].reshape(n, -1) / temp, dim=1)
    t_non = F.softmax(zt[keep].reshape(n, -1) / temp, dim=1)
    return loss_t - gamma * temp**2 * (t_non * s_non).sum(1).mean()


def published_uskd(zs: torch.Tensor, zw: torch.Tensor, y: torch.Tensor, alpha=1.0, beta=0.1, mu=0.005):
    n, c = zs.shape
    label = y.view(-1, 1)
    value = torch.ones_like(label)
    s = F.softmax(zs, dim=1)
    p_t = s.gather(1, label) ** 2
    p_t = (p_t + value - p_t.mean(0, True)).detach()
    log_s = F.log_softmax(zs, dim=1)
    log_s_t = log_s.gather(1, label)
    loss_t = -(p_t * log_s_t).sum(1).mean()
    label_w = torch.zeros_like(zs).scatter_(1, label, 0.9) + 0.1 / c
    loss_weak = -(mu * label_w * F.log_softmax(zw, dim=1)).sum(1).mean()
    w = F.softmax(zw, dim=1)
    w_t = w.gather(1, label)
    score = w / (1 - w_t.sum(1, True) + 1e-6) + log_s / (1 - log_s_t.sum(1, True) + 1e-6)  # published code
    order = torch.sort(score, dim=1, descending=True).indices
    zipf = (1.0 / torch.arange(1, c + 1, device=zs.device)).repeat(n, 1)
    z = zipf.gather(1, torch.argsort(order, dim=1))
    keep = torch.ones_like(zs).scatter_(1, label, 0).bool()
    log_ns = F.log_softmax(zs[keep].reshape(n, -1), dim=1)
    nz = z[keep].reshape(n, -1)
    nz = (nz / nz.sum(1, keepdim=True)).detach()
    loss_non = -(nz * log_ns).sum(1).mean()
    return alpha * loss_t + beta * loss_non + loss_weak


_CTKD = CTKDLoss()  # its temperature parameter gets a gradient too, as in training

# ---- the methods -----------------------------------------------------------------------------------------
METHODS: dict[str, Callable[[Inputs], torch.Tensor]] = {
    "cross_entropy": lambda a: F.cross_entropy(a[0], a[2]),
    "plain KD-KL (T=4)": lambda a: (
        F.kl_div(F.log_softmax(a[0] / 4, 1), F.softmax(a[1].detach() / 4, 1), reduction="batchmean") * 16
    ),
    "kd_loss": lambda a: kd_loss(a[0], a[1]),
    "dkd_loss": lambda a: dkd_loss(a[0], a[1], a[2]),
    "nkd_loss": lambda a: nkd_loss(a[0], a[1], a[2]),
    "nkd_loss (T=3)": lambda a: nkd_loss(a[0], a[1], a[2], temperature=3.0),
    "published NKD": lambda a: published_nkd(a[0], a[1], a[2]),
    "uskd_loss (paper)": lambda a: uskd_loss(a[0], a[1], a[2]),
    "uskd_loss (legacy)": lambda a: uskd_loss(a[0], a[1], a[2], rank="legacy"),
    "published USKD": lambda a: published_uskd(a[0], a[1], a[2]),
    "tfkd_loss": lambda a: tfkd_loss(a[0], a[2]),
    "zipf_ls_loss": lambda a: zipf_ls_loss(a[0], a[2]),
    # the newer logit losses, at their published CIFAR-100 settings
    "kd_loss (standardize, T=2)": lambda a: kd_loss(a[0], a[1], temperature=2.0, standardize=True),
    "dkd_loss (standardize, T=2)": lambda a: dkd_loss(a[0], a[1], a[2], temperature=2.0, standardize=True),
    "nkd_loss (standardize, T=3)": lambda a: nkd_loss(a[0], a[1], a[2], temperature=3.0, standardize=True),
    "dist_loss (tau=4)": lambda a: dist_loss(a[0], a[1], temperature=4.0),
    "ttm_loss (l=0.1)": lambda a: ttm_loss(a[0], a[1], power=0.1),
    "wttm_loss (l=0.1)": lambda a: wttm_loss(a[0], a[1], power=0.1),
    "abkd_loss (0.8, 0.3, T=4)": lambda a: abkd_loss(a[0], a[1], alpha=0.8, beta=0.3),
    "CTKDLoss (learned T)": lambda a: _CTKD(a[0], a[1], 3.5),
}


def make_inputs(n: int, c: int, device: torch.device, seed: int = 0) -> Inputs:
    g = torch.Generator().manual_seed(seed)
    zs = (torch.randn(n, c, generator=g) * 2).to(device).requires_grad_(True)
    # The second logits get gradients too (USKD's weak head); teacher losses detach them.
    zo = (torch.randn(n, c, generator=g) * 2).to(device).requires_grad_(True)
    y = torch.randint(0, c, (n,), generator=g).to(device)
    return zs, zo, y


def run_once(fn: Callable[[Inputs], torch.Tensor], inputs: Inputs) -> None:
    for x in inputs[:2]:
        x.grad = None
    fn(inputs).backward()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_bytes(fn: Callable[[Inputs], torch.Tensor], inputs: Inputs, device: torch.device) -> int:
    """Peak bytes allocated above the inputs during one forward+backward."""
    run_once(fn, inputs)  # warm (grads exist afterwards; drop them so each run starts equal)
    for x in inputs[:2]:
        x.grad = None
    if device.type == "cuda":
        sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn(inputs).backward()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    # numpy's buffers (unikd's CPU rank sort) bypass the torch allocator: tracemalloc sees them. It runs
    # separately because the profiler's own Python objects would be counted too.
    tracemalloc.start()
    fn(inputs).backward()
    _, np_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    for x in inputs[:2]:
        x.grad = None
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn(inputs).backward()
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    )
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak + np_peak


def bench(
    n: int, c: int, device: torch.device, repeats: int, warmup: int, clock: Callable[[], float]
) -> dict[str, tuple[float, float]]:
    inputs = make_inputs(n, c, device)
    for fn in METHODS.values():
        for _ in range(warmup):
            run_once(fn, inputs)
    times: dict[str, list[float]] = {k: [] for k in METHODS}
    for _ in range(repeats):  # round-robin so load spikes hit all methods alike
        for name, fn in METHODS.items():
            sync(device)
            t0 = clock()
            run_once(fn, inputs)
            sync(device)
            times[name].append(clock() - t0)
    return {
        name: (statistics.median(ts) * 1e3, peak_bytes(METHODS[name], inputs, device) / 2**20)
        for name, ts in times.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes and few repeats (smoke test)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, or 'all' (cpu plus cuda when present)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per method (default 30/5/3)")
    ap.add_argument("--sizes", nargs="+", default=None, help="NxC pairs, e.g. 256x1000 (default: the three)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument(
        "--methods",
        default=None,
        help="comma-separated substrings; only methods whose name contains one run (kd_loss always runs, "
        "as the ratio's reference), e.g. --methods standardize,dist,ttm,abkd,CTKD",
    )
    ap.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: elapsed time; cpu: process CPU time (robust to other load; use with --threads 1)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.methods:
        wanted = [w for w in args.methods.split(",") if w]
        for name in list(METHODS):
            if name != "kd_loss" and not any(w in name for w in wanted):
                del METHODS[name]
    devices = [torch.device("cpu")]
    if args.device == "all" and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    elif args.device not in ("cpu", "all"):
        devices = [torch.device(args.device)]
    sizes = [(64, 100), (256, 1000)] if args.quick else [(256, 100), (256, 1000), (1024, 32000)]
    if args.sizes:
        sizes = [tuple(int(v) for v in size.lower().split("x")) for size in args.sizes]
    print(f"# unikd loss benchmark, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(
        f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"threads={torch.get_num_threads()}, command: python benchmarks/loss_speed.py"
        f"{' --quick' if args.quick else ''}{f' --threads {args.threads}' if args.threads else ''}"
        f"{' --sizes ' + ' '.join(args.sizes) if args.sizes else ''}"
        f"{f' --methods {args.methods}' if args.methods else ''} --clock {args.clock}"
    )
    for device in devices:
        for n, c in sizes:
            repeats = args.repeats or (3 if args.quick else (30 if c <= 1000 else 5))
            clock = time.process_time if args.clock == "cpu" else time.perf_counter
            res = bench(n, c, device, repeats=repeats, warmup=1 if args.quick or c > 1000 else 3, clock=clock)
            kd_ms = res["kd_loss"][0]
            print(f"\n## {device.type}, N={n}, C={c} (median of {repeats})\n")
            print(f"| method | fwd+bwd ms ({args.clock}) | x kd_loss | peak MiB |")
            print("|---|---:|---:|---:|")
            for name, (ms, mib) in res.items():
                print(f"| {name} | {ms:.3f} | {ms / kd_ms:.2f} | {mib:.1f} |")
            if not {"nkd_loss", "published NKD", "uskd_loss (paper)", "published USKD"} <= set(res):
                continue
            nkd, pnkd = res["nkd_loss"], res["published NKD"]
            uskd, puskd = res["uskd_loss (paper)"], res["published USKD"]
            print(
                f"\nnkd_loss / kd_loss = {nkd[0] / kd_ms:.2f} (target <= 1.5); "
                f"published USKD / uskd_loss(paper) = {puskd[0] / uskd[0]:.2f}x (target >= 4); "
                f"published USKD / uskd_loss(legacy) = {puskd[0] / res['uskd_loss (legacy)'][0]:.2f}x; "
                f"peak nkd_loss / published NKD = {nkd[1] / pnkd[1]:.2f} (target <= 0.5); "
                f"peak uskd_loss / published USKD = {uskd[1] / puskd[1]:.2f}"
            )


if __name__ == "__main__":
    main()
