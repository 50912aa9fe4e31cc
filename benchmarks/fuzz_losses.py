"""Fuzz every registered loss: random shapes, dtypes, target kinds and input categories; count the outcomes.

Each case draws a loss from ``unikd.losses.LOSS_FUNCTIONS``, a logits dtype (float32, float64, bfloat16,
float16), a target kind (int64 class indices or float mixup soft labels) and an input category, runs the
forward and backward pass, and checks the documented contract (docs/losses.md):

- ``finite``: inputs (logits or feature maps) in [-30, 30] -> a finite loss and finite gradients;
- ``large``: inputs up to +-1e4 (+-6e4 for float16) -> a finite loss and finite gradients;
- ``nonfinite``: 1-3 input entries set to NaN/+inf/-inf (target columns included) -> a NaN loss, and
  backward runs;
- ``bad-label-*``: soft labels that sum to 2, sum to 0, hold NaN/inf or a negative entry -> ``ValueError``.

Every (loss, dtype, target kind, category) cell is printed with its pass/fail count; the exit status is 1
when any case fails. Losses are called by parameter name (``*logits``, ``*emb``, ``*feat``, ``*feats`` and
``target``), so new losses with such inputs are fuzzed without editing this script.

Usage::

    python benchmarks/fuzz_losses.py                 # 12,000 cases (seed 0)
    python benchmarks/fuzz_losses.py --cases 50000 --seed 3
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import math
import platform
import subprocess
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from unikd.losses import LOSS_FUNCTIONS

DTYPES = {"fp32": torch.float32, "fp64": torch.float64, "bf16": torch.bfloat16, "fp16": torch.float16}
CATEGORIES = ("finite", "large", "nonfinite", "bad-label-sum2", "bad-label-sum0", "bad-label-nonfinite",
              "bad-label-negative")


def positional(fn) -> list[str]:
    return [p.name for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


# arguments that are neither logits, feature maps nor the target: a fixed valid value
OTHER_ARGS = {
    "global_t": lambda: torch.ones(1, requires_grad=True),  # CTKD's learnable temperature
    "epoch_progress": lambda: 3.5,
}

# losses that compare the samples of a batch with each other need more than one row
MIN_BATCH = {"rkd": 2}


def inputs_of(name: str) -> list[str]:
    """Tensor arguments other than ``target``: ``*logits`` (N, C), ``*emb`` (N, D), ``*feat`` (N, C, H, W),
    ``*feats`` (a list of (N, C, H, W) maps)."""
    args = [a for a in positional(LOSS_FUNCTIONS[name]) if a != "target" and a not in OTHER_ARGS]
    unknown = [a for a in args if not a.endswith(("logits", "emb", "feat", "feats"))]
    if unknown:
        raise SystemExit(f"loss {name!r} takes {unknown}: teach make_case in {__file__} to build them")
    return args


def make_case(rng: np.random.Generator, name: str, dtype: torch.dtype, kind: str, category: str):
    n, c = int(rng.integers(MIN_BATCH.get(name, 1), 9)), int(rng.integers(2, 65))
    bound = 30.0 if category != "large" else (6.0e4 if dtype == torch.float16 else 1.0e4)

    def make(*shape: int) -> torch.Tensor:
        return torch.from_numpy(rng.uniform(-bound, bound, (n, *shape)))

    h = int(rng.integers(1, 5))
    inputs: list = []
    for arg in inputs_of(name):
        if arg.endswith("logits"):
            inputs.append(make(c))
        elif arg.endswith("emb"):  # each network's own width: relational losses compare within a network
            inputs.append(make(int(rng.integers(1, 9))))
        elif arg.endswith("feats"):
            inputs.append([make(int(rng.integers(1, 5)), h, h) for _ in range(int(rng.integers(1, 3)))])
        else:
            inputs.append(make(3, h, h))
    if inputs_of(name)[0].endswith("feats"):  # student and teacher maps pair up by stage: same count
        missing = len(inputs[0]) - len(inputs[1])
        inputs[1] = inputs[1][: len(inputs[0])] + [make(2, h, h) for _ in range(missing)]
    elif inputs_of(name)[0].endswith("feat"):
        inputs[1] = torch.from_numpy(rng.uniform(-bound, bound, tuple(inputs[0].shape)))
    y = torch.from_numpy(rng.integers(0, c, n))
    if category == "nonfinite":
        flat = [t for x in inputs for t in (x if isinstance(x, list) else [x])]
        for _ in range(int(rng.integers(1, 4))):
            x = flat[int(rng.integers(len(flat)))].view(n, -1)
            row = int(rng.integers(n))
            col = int(y[row]) % x.shape[1] if rng.random() < 0.4 else int(rng.integers(x.shape[1]))
            x[row, col] = rng.choice([math.nan, math.inf, -math.inf])
    target: torch.Tensor = y
    if kind == "soft" or category.startswith("bad-label"):
        y2 = torch.from_numpy(rng.integers(0, c, n))
        lam = float(rng.uniform(0.0, 1.0))
        eye = torch.eye(c, dtype=torch.float64)
        soft = lam * eye[y] + (1 - lam) * eye[y2]
        row = int(rng.integers(n))
        if category == "bad-label-sum2":
            soft[row] *= 2
        elif category == "bad-label-sum0":
            soft[row] = 0
        elif category == "bad-label-nonfinite":
            soft[row, int(rng.integers(c))] = rng.choice([math.nan, math.inf])
        elif category == "bad-label-negative":
            soft[row, int(rng.integers(c))] -= 1.5
        label_dtype = dtype if rng.random() < 0.5 else torch.float32
        target = soft.to(label_dtype)
    def leaf(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype).requires_grad_(True)

    return [[leaf(t) for t in x] if isinstance(x, list) else leaf(x) for x in inputs], target


def call(name: str, inputs: list, target: torch.Tensor) -> torch.Tensor:
    it = iter(inputs)
    args = [target if a == "target" else OTHER_ARGS[a]() if a in OTHER_ARGS else next(it)
            for a in positional(LOSS_FUNCTIONS[name])]
    return LOSS_FUNCTIONS[name](*args)


def check(name: str, category: str, inputs: list, target: torch.Tensor) -> str | None:
    """None when the case behaves as documented, else a description of what went wrong."""
    if category.startswith("bad-label"):
        try:
            call(name, inputs, target)
        except ValueError as exc:
            return None if "soft-label" in str(exc) else f"ValueError without 'soft-label': {exc}"
        return "no ValueError for a bad soft label"
    loss = call(name, inputs, target)
    loss.backward()
    if category == "nonfinite":
        return None if torch.isnan(loss) else f"loss {loss.item()} for non-finite inputs"
    if not torch.isfinite(loss):
        return f"non-finite loss {loss.item()} for finite inputs"
    flat = [t for x in inputs for t in (x if isinstance(x, list) else [x])]
    bad = [i for i, x in enumerate(flat) if x.grad is not None and not torch.isfinite(x.grad).all()]
    return f"non-finite gradient of input #{bad[0]}" if bad else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=12000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    names = sorted(LOSS_FUNCTIONS)
    counts: Counter[tuple[str, str, str, str, bool]] = Counter()
    failures: list[str] = []
    start = time.perf_counter()
    for i in range(args.cases):
        name = names[i % len(names)]
        dname = list(DTYPES)[int(rng.integers(len(DTYPES)))]
        uses_target = "target" in positional(LOSS_FUNCTIONS[name])
        category = CATEGORIES[int(rng.integers(len(CATEGORIES) if uses_target else 3))]
        kind = "soft" if category.startswith("bad-label") else ("soft" if rng.random() < 0.5 else "index")
        inputs, target = make_case(rng, name, DTYPES[dname], kind, category)
        try:
            problem = check(name, category, inputs, target)
        except Exception as exc:  # an internal error is a failure like any other
            problem = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
        counts[(name, dname, kind, category, problem is None)] += 1
        if problem is not None and len(failures) < 20:
            failures.append(f"case {i} ({name}, {dname}, {kind}, {category}): {problem}")
    seconds = time.perf_counter() - start

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, check=False).stdout.strip() or "?"
    except OSError:
        commit = "?"
    print(f"# fuzz_losses: {args.cases} cases, seed {args.seed}, {seconds:.1f} s")
    machine = platform.processor() or platform.machine()
    print(f"# {datetime.date.today()}  torch {torch.__version__}  {machine}  python "
          f"{platform.python_version()}  commit {commit}")
    cells = sorted({k[:4] for k in counts})
    print(f"{'loss':10s} {'dtype':5s} {'target':6s} {'category':20s} {'pass':>6s} {'fail':>5s}")
    for cell in cells:
        ok, bad = counts[(*cell, True)], counts[(*cell, False)]
        print(f"{cell[0]:10s} {cell[1]:5s} {cell[2]:6s} {cell[3]:20s} {ok:6d} {bad:5d}")
    by = Counter()
    for (name, _, _, category, passed), n in counts.items():
        by[("all", category, passed)] += n
        by[(name, "all", passed)] += n
    print("\nper category:")
    for category in CATEGORIES:
        ok, bad = by[("all", category, True)], by[("all", category, False)]
        print(f"  {category:20s} pass {ok:6d}  fail {bad:4d}")
    print("per loss:")
    for name in names:
        print(f"  {name:20s} pass {by[(name, 'all', True)]:6d}  fail {by[(name, 'all', False)]:4d}")
    total_fail = sum(n for k, n in counts.items() if not k[4])
    print(f"\ntotal: {args.cases - total_fail} passed, {total_fail} failed")
    for f in failures:
        print("FAIL", f)
    return 1 if total_fail else 0


if __name__ == "__main__":
    sys.exit(main())
