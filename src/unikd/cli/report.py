"""``unikd report RUN_DIR... [--out DIR]``: rebuild results.csv, report.md and plots from run folders."""

from __future__ import annotations

import argparse
import sys

DEFAULT_TITLE = "unikd benchmark report"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report",
        help="rebuild a benchmark report (results.csv, report.md, plots) from existing run folders",
        description="Collect run folders (config.yaml, metrics.jsonl, summary.json), group them by "
        "track/method/seed and write mean ± std over seeds, the difference to the CE baseline, and plots. "
        "A bench output folder can be given directly; folders are searched recursively for runs.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders or folders containing them")
    p.add_argument(
        "--out",
        default=None,
        help="where to write the report (default: the single folder given, else ./report)",
    )
    p.add_argument("--title", default=DEFAULT_TITLE, help="report title")
    p.add_argument("--no-plots", action="store_true", help="write results.csv and report.md only")
    p.add_argument(
        "--spec",
        default=None,
        metavar="SPEC",
        help="the bench spec (YAML) the runs came from: adds its pre-registered comparisons (p-values, "
        "Holm-adjusted p-values, verdicts against its thresholds) and titles the report after it",
    )
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from unikd.bench.report import build_report

    out = args.out or (args.runs[0] if len(args.runs) == 1 else "report")
    comparisons, title = None, args.title
    try:
        if args.spec is not None:
            from unikd.bench.spec import load_spec

            spec = load_spec(args.spec)
            comparisons = spec.comparisons
            if title == DEFAULT_TITLE:
                title = f"Benchmark {spec.name}"
        files = build_report(args.runs, out, title=title, plots=not args.no_plots, comparisons=comparisons)
    except (ValueError, FileNotFoundError) as e:
        print(f"unikd report: error: {e}", file=sys.stderr)
        return 2
    print(
        f"{files.n_finished}/{files.n_runs} student runs finished; wrote {files.csv}, {files.markdown}"
        + "".join(f", {p}" for p in files.plots)
    )
    for where in files.corrupt:  # also listed under 'Skipped metrics lines' in report.md
        print(f"unikd report: warning: skipped corrupt lines of {where}", file=sys.stderr)
    if files.plot_note and not args.no_plots:
        print(files.plot_note)
    return 0
