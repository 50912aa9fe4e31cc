"""``unikd bench SPEC.yaml [key=value ...]``: run (or resume) a multi-seed benchmark grid."""

from __future__ import annotations

import argparse
import sys

_EPILOG = """\
The spec is YAML: out_dir, seeds, optional base config and overrides, and tracks (student model, optional
teacher, methods with per-method overrides); the format is in the docstring of unikd.bench.spec and in
docs/results.md. Runs go to OUT/runs/TRACK/METHOD/seedN (log: train.log), trained teachers to OUT/teachers.
Rerunning the same command resumes: finished runs are skipped and an interrupted run continues from its
last.pt. key=value overrides apply to every run (e.g. data.root=/data/cifar10-jpg.tar.gz).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="run a multi-seed benchmark grid (tracks x methods x seeds) and write its report",
        description="Run a grid of training runs (each in its own subprocess; one after another, or --jobs "
        "at a time), resumable, then write results.csv, report.md and plots into the spec's out_dir.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("spec", help="bench spec YAML file")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides applied to every run (after the spec's own overrides)",
    )
    p.add_argument("--out", default=None, help="output folder (default: the spec's out_dir)")
    p.add_argument("--dry-run", action="store_true", help="validate the spec and print the runs, run nothing")
    p.add_argument("--no-plots", action="store_true", help="write results.csv and report.md only")
    p.add_argument("--jobs", type=int, default=None,
                   help="runs trained at once, each in its own process (default: the spec's jobs, 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per run (default: the spec's threads; with jobs > 1, cores // jobs)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from unikd.bench.runner import run_grid
    from unikd.bench.spec import load_spec
    from unikd.engine.config import parse_override

    try:
        extra = dict(parse_override(text) for text in args.overrides)
        spec = load_spec(args.spec, extra_overrides=extra)
        if args.out:
            spec.out_dir = Path(args.out)
        for key in ("jobs", "threads"):
            value = getattr(args, key)
            if value is not None:
                if value < 1:
                    raise ValueError(f"--{key} must be >= 1, got {value}")
                setattr(spec, key, value)
        return run_grid(spec, dry_run=args.dry_run, plots=not args.no_plots)
    except ValueError as e:
        print(f"unikd bench: error: {e}", file=sys.stderr)
        return 2
