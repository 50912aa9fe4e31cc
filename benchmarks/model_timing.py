"""Training and evaluation throughput of zoo models on CIFAR-sized inputs (the timing pass behind the CPU
benchmark protocols).

For every (model, precision, memory format, threads) it runs a few warm-up steps, then times
``--seconds`` of SGD steps (forward, cross-entropy, backward, step) on random 32x32 images and the same for
inference. Prints one table; ``--json`` records it.

    python benchmarks/model_timing.py --models resnet8 resnet20 --threads 1 2 --batch 64
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time

import torch
import torch.nn.functional as F

from unikd.models import create_model


def _throughput(fn, batch: int, seconds: float, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n * batch / (time.perf_counter() - t0)


def measure(name: str, *, precision: str, channels_last: bool, threads: int, batch: int, seconds: float,
            num_classes: int, size: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model(name, num_classes=num_classes)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, num_classes, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    ac = contextlib.nullcontext
    if precision == "bf16":
        ac = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731

    def train_step() -> None:
        with ac():
            out = model(x)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    xe = torch.randn(512, 3, size, size)
    if channels_last:
        xe = xe.contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def eval_step() -> None:
        with ac():
            model(xe)

    model.train()
    tr = _throughput(train_step, batch, seconds)
    model.eval()
    ev = _throughput(eval_step, 512, seconds / 2, warmup=1)
    params = sum(p.numel() for p in model.parameters())
    return {"model": name, "params": params, "precision": precision, "channels_last": channels_last,
            "threads": threads, "batch": batch, "size": size, "train_img_s": tr, "eval_img_s": ev}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["resnet8", "resnet20", "resnet8x4", "wrn_16_2"])
    p.add_argument("--precisions", nargs="+", default=["bf16", "fp32"])
    p.add_argument("--channels-last", nargs="+", default=["0", "1"])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=100)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    rows = []
    print(f"torch {torch.__version__} | {platform.processor() or platform.machine()} | batch {a.batch}")
    print(f"{'model':<12}{'params':>10} {'prec':<5}{'cl':>3}{'thr':>4}{'train img/s':>13}{'eval img/s':>12}")
    for name in a.models:
        for prec in a.precisions:
            for cl in a.channels_last:
                for th in a.threads:
                    r = measure(name, precision=prec, channels_last=cl == "1", threads=th, batch=a.batch,
                                seconds=a.seconds, num_classes=a.num_classes, size=a.size)
                    rows.append(r)
                    print(f"{name:<12}{r['params']:>10} {prec:<5}{int(r['channels_last']):>3}{th:>4}"
                          f"{r['train_img_s']:>13.0f}{r['eval_img_s']:>12.0f}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"torch": torch.__version__, "rows": rows, "date": time.strftime("%F %T")}, f, indent=1)


if __name__ == "__main__":
    main()
