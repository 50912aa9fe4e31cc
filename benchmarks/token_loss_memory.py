"""Peak memory and time of token-level KD: materialised logits vs unikd.token.fused_distill_loss.

One training step (forward + backward of ``KD + CE`` from the hidden states and output heads of a student
and a teacher, gradients for the student's hidden states and head) per method, B*T tokens, vocabulary V:

- ``naive unikd``: logits ``F.linear(h, W)`` of both models materialised, then ``unikd.token.kd_loss`` +
  ``unikd.token.cross_entropy`` (i.e. :func:`unikd.token.fused_distill_loss_reference`);
- ``naive F.kl_div``: the same logits, ``F.kl_div(log_softmax(z_s), log_softmax(z_t), log_target=True,
  reduction="batchmean") + F.cross_entropy(z_s, y)``;
- ``fused``: :func:`unikd.token.fused_distill_loss` (default chunk ``2**25 // V`` tokens, or ``--chunks``).

Each method runs in its own fresh process (so one method's freed memory cannot hide another's peak), in
rounds whose order alternates (A B C, then C B A, ...) so machine load hits every method alike. Peak memory
is the process's peak resident set during its first step above its resident set just before it (``VmHWM``
after resetting it through ``/proc/self/clear_refs``): the logits, softmaxes, gradients and the head's
gradient (which every method must produce). Time is the median over the timed steps that follow, both wall
clock and process CPU time (the latter is robust to other jobs on a shared machine). Before each vocabulary
the script checks ``MemAvailable`` against an estimate of the naive peak and skips that vocabulary when it
would not fit. ``--fused-only`` measures chunk sizes without the naive methods.

Usage::

    python benchmarks/token_loss_memory.py                       # B*T=4096, V=32768 and 131072, d=512
    python benchmarks/token_loss_memory.py --quick               # small smoke run
    python benchmarks/token_loss_memory.py --vocab 32768 --chunks 64 256 1024 4096   # chunk-size sweep
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from _peak_memory import PeakMemory  # benchmarks/ is on sys.path when run as a script

METHODS = ("naive unikd", "naive F.kl_div", "fused")


# ---- worker: one method, one process ---------------------------------------------------------------------
def worker(args: argparse.Namespace) -> dict:
    import torch
    import torch.nn.functional as F

    import unikd.token as T

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    n, v, d, dt = args.tokens, args.vocab[0], args.hidden, args.teacher_hidden
    hs = (torch.randn(n, d, generator=g)).requires_grad_(True)
    ws = (torch.randn(v, d, generator=g) * d**-0.5).requires_grad_(True)
    ht = torch.randn(n, dt, generator=g)
    wt = torch.randn(v, dt, generator=g) * (1.5 * dt**-0.5)
    labels = torch.randint(0, v, (n,), generator=g)

    def step() -> float:
        hs.grad = ws.grad = None
        if args.method == "fused":
            loss = T.fused_distill_loss("kd", hs, ws, ht, wt, labels, chunk_size=args.chunk)
        elif args.method == "naive unikd":
            loss = T.fused_distill_loss_reference("kd", hs, ws, ht, wt, labels)
        else:
            zs = F.linear(hs, ws)
            with torch.no_grad():
                zt = F.linear(ht, wt)
            loss = F.kl_div(zs.log_softmax(-1), zt.log_softmax(-1), reduction="batchmean", log_target=True)
            loss = loss + F.cross_entropy(zs, labels)
        loss.backward()
        return loss.item()

    with PeakMemory() as mem:  # above the resident set of the inputs
        value = step()  # the peak step; also the warm-up of the timed steps
    peak = mem.peak_bytes
    wall, cpu = [], []
    for _ in range(args.repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return {"peak_bytes": peak, "wall": wall, "cpu": cpu, "loss": value}


# ---- driver ------------------------------------------------------------------------------------------------
def mem_available() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def run_case(args: argparse.Namespace, method: str, vocab: int, chunk: int | None) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--tokens", str(args.tokens), "--vocab", str(vocab),
           "--hidden", str(args.hidden), "--teacher-hidden", str(args.teacher_hidden), "--repeats",
           str(args.repeats), "--threads", str(args.threads)]
    if chunk is not None:
        cmd += ["--chunk", str(chunk)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{method} V={vocab} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=int, default=4096, help="B*T tokens per step (default 4096)")
    p.add_argument("--vocab", type=int, nargs="+", default=[32768, 131072])
    p.add_argument("--hidden", type=int, default=512, help="student hidden size d_s")
    p.add_argument("--teacher-hidden", type=int, default=512, help="teacher hidden size d_t")
    p.add_argument("--repeats", type=int, default=2, help="timed steps per process (after warm-up and peak)")
    p.add_argument("--rounds", type=int, default=2, help="fresh processes per method, in alternating order")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--chunks", type=int, nargs="*", default=None,
                   help="fused chunk sizes to compare (default: the automatic one)")
    p.add_argument("--naive-factor", type=float, default=7.5,
                   help="estimated naive peak in units of B*T*V float32 logits, for the memory check")
    p.add_argument("--fused-only", action="store_true", help="only the fused method (chunk-size sweeps)")
    p.add_argument("--quick", action="store_true", help="B*T=512, V=4096, d=64, one round: a smoke test")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--chunk", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.method = args.worker
        print(json.dumps(worker(args)))
        return
    if args.quick:
        args.tokens, args.vocab, args.hidden, args.teacher_hidden, args.rounds = 512, [4096], 64, 64, 1

    import torch

    from unikd.token import default_chunk_size

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    print(f"# token_loss_memory  {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC  "
          f"commit {commit or '?'}")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, threads {args.threads}, load average {os.getloadavg()[0]:.1f}")
    print(f"# command: python benchmarks/token_loss_memory.py {' '.join(sys.argv[1:])}")
    print(f"# B*T={args.tokens}, d_s={args.hidden}, d_t={args.teacher_hidden}, KD (T=1) + CE, fp32, "
          f"{args.rounds} rounds x {args.repeats} timed steps per method")
    for vocab in args.vocab:
        logits_gib = args.tokens * vocab * 4 / 2**30
        need = args.naive_factor * logits_gib * 2**30
        avail = mem_available()
        chunks = args.chunks or [default_chunk_size(vocab)]
        fused = [("fused", c) for c in chunks]
        cases = fused if args.fused_only else [(m, None) for m in METHODS[:2]] + fused
        print(f"\n## V={vocab}: one fp32 logits tensor = {logits_gib:.2f} GiB; MemAvailable "
              f"{avail / 2**30:.1f} GiB")
        if avail < need and not args.fused_only:
            print(f"skipped: the naive methods need about {need / 2**30:.1f} GiB "
                  f"({args.naive_factor:g} x logits)")
            continue
        results: dict[tuple[str, int | None], list[dict]] = {c: [] for c in cases}
        for r in range(args.rounds):
            for case in cases if r % 2 == 0 else cases[::-1]:
                res = run_case(args, case[0], vocab, case[1])
                results[case].append(res)
                print(f"  round {r + 1} {case[0]}{'' if case[1] is None else f' chunk={case[1]}'}: "
                      f"peak {res['peak_bytes'] / 2**20:.0f} MiB, wall {min(res['wall']):.2f} s", flush=True)
        base = results[cases[0]]
        base_name = cases[0][0] + ("" if cases[0][1] is None else f" (chunk {cases[0][1]})")
        base_peak = max(x["peak_bytes"] for x in base)
        base_wall = statistics.median(t for x in base for t in x["wall"])
        base_cpu = statistics.median(t for x in base for t in x["cpu"])
        print(f"\nratios relative to {base_name}")
        print("\n| method | peak MiB | peak ratio | wall s | wall ratio | CPU s | CPU ratio |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for case, runs in results.items():
            peak = max(x["peak_bytes"] for x in runs)
            wall = statistics.median(t for x in runs for t in x["wall"])
            cpu = statistics.median(t for x in runs for t in x["cpu"])
            name = case[0] + ("" if case[1] is None else f" (chunk {case[1]})")
            print(f"| {name} | {peak / 2**20:.0f} | {peak / base_peak:.3f} | {wall:.2f} | "
                  f"{wall / base_wall:.2f} | {cpu:.2f} | {cpu / base_cpu:.2f} |")
        losses = {f"{c[0]}/{c[1]}": runs[0]["loss"] for c, runs in results.items()}
        print(f"losses (same inputs): {losses}")


if __name__ == "__main__":
    main()
