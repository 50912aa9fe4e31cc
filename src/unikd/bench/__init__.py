"""Multi-seed benchmark protocol: a YAML grid of runs (``unikd bench``) and its report (``unikd report``)."""

from unikd.bench.aggregate import Group, Stat, aggregate, mean_std
from unikd.bench.collect import collect
from unikd.bench.report import ReportFiles, build_report
from unikd.bench.results import RunResult, load_run
from unikd.bench.runner import run_grid
from unikd.bench.spec import BenchSpec, RunPlan, expand, load_spec, parse_spec

__all__ = [
    "BenchSpec",
    "Group",
    "ReportFiles",
    "RunPlan",
    "RunResult",
    "Stat",
    "aggregate",
    "build_report",
    "collect",
    "expand",
    "load_run",
    "load_spec",
    "mean_std",
    "parse_spec",
    "run_grid",
]
