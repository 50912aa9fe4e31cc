"""``unikd demo``: the README's first command (see :mod:`unikd.demo`)."""

from __future__ import annotations

import argparse
import sys


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    from unikd.demo import DEFAULT_EPOCHS, STUDENT_MODEL, TEACHER_MODEL

    p = subparsers.add_parser(
        "demo",
        help="train a teacher and CE/KD/NKD/USKD students on bundled digits (no downloads, ~1 min on CPU)",
        description=(
            f"Train a small teacher ({TEACHER_MODEL}) on scikit-learn's bundled 8x8 digits, then a "
            f"{STUDENT_MODEL} student with each of CE, KD, NKD and USKD (same seed, data order and "
            "schedule). Prints a table of top-1, top-5, NLL, ECE and seconds, and writes demo.png, "
            "results.json and results.md plus one run folder per model into --out."
        ),
    )
    p.add_argument("--out", default="runs/demo", help="run folder (default: runs/demo)")
    p.add_argument("--epochs", type=_positive_int, default=None,
                   help=f"epochs for every model (default: {DEFAULT_EPOCHS}; 1 with --quick)")
    p.add_argument("--seed", type=int, default=0, help="random seed shared by all runs (default: 0)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 8 images per class and 1 epoch (seconds; numbers are meaningless)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--threads", type=_positive_int, default=1,
                   help="CPU threads for torch (default: 1; the batches are tiny, and on a busy 2-core "
                        "machine 1 thread ran 3x faster than 2)")
    p.add_argument("-v", "--verbose", action="store_true", help="show each run's preflight and epoch logs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unikd.demo import run_demo

    try:
        run_demo(args.out, epochs=args.epochs, seed=args.seed, quick=args.quick, device=args.device,
                 threads=args.threads, verbose=args.verbose)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"unikd demo: error: {exc}", file=sys.stderr)
        return 1
    return 0
