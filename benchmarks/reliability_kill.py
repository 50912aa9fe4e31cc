"""Kill and resume: N runs, each SIGKILLed at a random moment and resumed with the same command, compared bit
for bit with an uninterrupted run.

The run is a tiny one with every kind of state exact resume must carry (the approach of
tests/engine/test_harness_resume.py): USKD (its weak head), an EMA of the weights, Nesterov momentum, mixup,
a warm-up + cosine schedule, 3 epochs of 22 steps with a checkpoint every 5 steps (most of them inside an
epoch). The uninterrupted reference runs first and gives the window W from its first checkpoint to its end;
run i is then started with ``unikd train base.yaml ... out_dir=RUN_i resume=auto`` and SIGKILLed a delay
drawn uniformly from [0, W) by a seeded RNG (``--seed``) after it wrote its first checkpoint, so kills land
anywhere from the first checkpoint to the end: between checkpoints, while one is being written, in the
evaluation, or after the run finished (then it is not counted as killed mid-run). The same command is
then run again (``--kills K``: the resumed run is killed again K-1 times first) and must finish; its final
last.pt (model, train_model, objective and optimizer state tensors, global step) and metrics.jsonl rows
(without timings) are compared with the reference's: ``identical`` or ``different`` (the first differing
tensor is printed), ``failed`` when the resume did not finish.

Usage::

    python benchmarks/reliability_kill.py                      # 8 runs, ~1.5 min
    python benchmarks/reliability_kill.py --runs 16 --seed 1 --kills 2 --json kill.json --fresh
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from _reliability import (
    Runner,
    first_difference,
    last_line,
    metrics_rows,
    report,
    run_weights,
    script_parser,
    tally,
    work_folder,
)

from unikd.engine.run.checkpoint import load_checkpoint

BASE = """\
model: tiny_cnn
data: {name: digits, mixup_alpha: 0.2}
method: uskd
epochs: 3
ema_decay: 0.9
checkpoint_every: 5
optim: {lr: 0.05, nesterov: true}
sched: {name: cosine, warmup_epochs: 0.5}
tensorboard: false
device: cpu
"""


def saved_step(folder: Path) -> int | None:
    """The step of the checkpoint a resume would start from (None: nothing saved yet)."""
    for name in ("last.pt", "last.prev.pt"):
        try:
            return int(load_checkpoint(folder / name)["global_step"])
        except (OSError, ValueError, KeyError):
            continue
    return None


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None


def run_and_kill(runner: Runner, argv: list[str], out: Path, delay: float | None):  # noqa: ANN201
    """Start ``argv``; once it has written a new last.pt (an atomic replace gives it a new inode) wait
    ``delay`` s and SIGKILL it (``delay=None``: let it finish). Returns the result and when (s after the
    start) the first new last.pt appeared."""
    old = _inode(out / "last.pt")
    proc = runner.start(argv)
    while proc.poll() is None and _inode(out / "last.pt") in (old, None):
        time.sleep(0.002)
    first = time.monotonic() - proc.t0
    if delay is None:
        return proc.wait(600), first
    return proc.wait(600, kill_after=first + delay), first


def main() -> None:
    ap = script_parser(__doc__)
    ap.add_argument("--runs", type=int, default=8, help="killed runs (default 8)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill delays (default 0)")
    ap.add_argument("--kills", type=int, default=1, help="SIGKILLs per run before the final resume")
    ap.add_argument("--json", help="write the runs and the totals to this file")
    args = ap.parse_args()
    t0 = time.monotonic()
    work = work_folder(args.work, "kill")
    base = work / "base.yaml"
    base.write_text(BASE)
    runner = Runner("fresh" if args.fresh else "fork", timeout=600)

    def command(out: Path) -> list[str]:
        return ["train", str(base), f"out_dir={out}", "resume=auto"]

    ref, first = run_and_kill(runner, command(work / "reference"), work / "reference", None)
    if ref.rc != 0:
        raise SystemExit(f"the reference run failed:\n{ref.err[-3000:]}")
    length = ref.seconds - first  # the window between the first checkpoint and the end
    want = {**run_weights(work / "reference"), "metrics": metrics_rows(work / "reference")}
    steps = want["global_step"]
    print(f"work folder: {work}\nreference: {steps} steps in {ref.seconds:.1f}s, the first checkpoint at "
          f"{first:.1f}s; each kill comes a random [0, {length:.1f}) s after the run's next checkpoint")
    rng = random.Random(args.seed)
    rows = []
    for i in range(args.runs):
        out = work / f"run{i}"
        kills = []
        for _ in range(args.kills):
            delay = rng.uniform(0, length)
            res, _ = run_and_kill(runner, command(out), out, delay)
            kills.append({"delay": round(delay, 3), "killed": res.killed, "saved_step": saved_step(out),
                          "rc": res.rc})
        done = runner.run(command(out))
        row = {"run": i, "kills": kills, "resume_rc": done.rc}
        if done.rc != 0:
            row.update(outcome="failed", detail=last_line(done.err))
        else:
            got = {**run_weights(out), "metrics": metrics_rows(out)}
            diff = first_difference(got, want)
            row.update(outcome="different" if diff else "identical", detail=diff or "")
        rows.append(row)
        where = ", ".join(
            f"{'killed' if k['killed'] else 'finished before kill'} {k['delay']:.2f}s after a checkpoint "
            f"(resumable from step {k['saved_step']})" for k in kills)
        print(f"  run {i}: {where} -> {row['outcome']} {row['detail']}", flush=True)
    counts = tally([r["outcome"] for r in rows])
    mid_run = sum(all(k["killed"] for k in r["kills"]) for r in rows)
    print(f"killed before the end: {mid_run}/{len(rows)} runs (a kill that came after the end did nothing)")
    report(f"kill and resume, {len(rows)} runs in {time.monotonic() - t0:.0f}s", counts,
           {"runs": rows, "reference_seconds": round(length, 2), "steps": steps, "killed_mid_run": mid_run,
            "seed": args.seed, "mode": runner.mode}, args.json)


if __name__ == "__main__":
    main()
