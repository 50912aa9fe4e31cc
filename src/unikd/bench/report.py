"""``report.md`` + ``results.csv`` + plots from run folders (used by ``unikd bench`` and ``unikd report``)."""

from __future__ import annotations

import datetime as _dt
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from unikd.bench.aggregate import METRICS, Group, Stat, aggregate
from unikd.bench.collect import collect
from unikd.bench.plots import matplotlib_missing, plot_accuracy, plot_curves, plot_paired
from unikd.bench.report_classes import class_table
from unikd.bench.report_compare import comparison_tables
from unikd.bench.report_online import online_table
from unikd.bench.report_stats import paired_tables, test_table
from unikd.bench.results import RunResult, results_csv, write_text_atomic
from unikd.bench.spec import Comparison


@dataclass
class ReportFiles:
    """What :func:`build_report` wrote, and why plots may be missing."""

    csv: Path
    markdown: Path
    plots: list[Path] = field(default_factory=list)
    plot_note: str | None = None
    n_runs: int = 0
    n_finished: int = 0
    corrupt: list[str] = field(default_factory=list)  # "<metrics.jsonl>: line 3, 7" per damaged file


# Metric -> (scale applied before printing, decimals).
_FORMAT = {
    "best_top1": (1.0, 2),
    "last_top1": (1.0, 2),
    "last_top5": (1.0, 2),
    "last_ece": (100.0, 2),
    "last_nll": (1.0, 3),
    "seconds_per_epoch": (1.0, 1),
}
_TITLES = {**METRICS, "last_ece": "ECE (%)"}


def _pm(stat: Stat, key: str) -> str:
    scale, dec = _FORMAT[key]
    if stat.n == 0:
        return "–"
    if math.isnan(stat.std):
        return f"{stat.mean * scale:.{dec}f}"
    return f"{stat.mean * scale:.{dec}f} ± {stat.std * scale:.{dec}f}"


def _signed(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:+.2f}"


def _rel(path: Path, start: Path) -> str:
    try:
        return os.path.relpath(path, start)
    except ValueError:  # another drive on Windows
        return str(path)


def _track_table(groups: list[Group]) -> list[str]:
    head = (
        ["method", "loss", "seeds"]
        + [_TITLES[k] for k in METRICS]
        + ["Δ best vs CE", "Δ last vs CE", "> CE (seeds)"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in groups:
        delta = g.delta or {}
        wins = f"{g.wins[0]}/{g.wins[1]}" if g.wins else "–"
        cells = [f"`{g.label}`", g.method, ",".join(map(str, g.seeds))]
        cells += [_pm(g.stats[k], k) for k in METRICS]
        cells += [_signed(delta.get("best_top1")), _signed(delta.get("last_top1")), wins]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _lines(numbers: list[int]) -> str:
    shown = ", ".join(map(str, numbers[:10]))
    return shown + (f", ... ({len(numbers)} in all)" if len(numbers) > 10 else "")


def skipped_lines(results: list[RunResult], out_dir: Path) -> list[str]:
    """The report section listing every ``metrics.jsonl`` line that was left out (none: no section)."""
    notes = []
    for r in results:
        where = f"`{_rel(r.run_dir / 'metrics.jsonl', out_dir)}`"
        if r.metrics_corrupt_lines:
            notes.append(f"- {where}: {len(r.metrics_corrupt_lines)} corrupt line(s) skipped (line "
                         f"{_lines(r.metrics_corrupt_lines)}); those epochs are missing from its curves")
        if r.metrics_torn_line is not None:
            notes.append(f"- {where}: torn last line {r.metrics_torn_line} skipped (the run has not "
                         "finished: normal while it runs or after it was killed; resume=auto rewrites it)")
    return ["## Skipped metrics lines", "", *notes, ""] if notes else []


def environment() -> str:
    """One line naming the machine and software the report was built on (runs record their own config)."""
    import platform

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:  # pragma: no cover - torch is a dependency
        torch_version = "not installed"
    return f"{cpu}, {os.cpu_count()} cores, torch {torch_version}, Python {platform.python_version()}"


def render_markdown(
    results: list[RunResult],
    tracks: dict[str, list[Group]],
    *,
    title: str,
    plots: list[Path],
    plot_note: str | None,
    out_dir: Path,
    comparisons: list[Comparison] | None = None,
) -> str:
    """The report text (pure; :func:`build_report` writes it)."""
    students = [r for r in results if r.role == "student"]
    n_fin = sum(r.finished for r in students)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        f"# {title}",
        "",
        f"Generated {now} from {len(students)} student run folders ({n_fin} finished). "
        "Each cell is the mean ± sample standard deviation over seeds of the finished runs "
        "(best = best epoch's val top-1, last = final epoch's). Δ vs CE is the difference of the means to "
        "the `ce` run of the same track; '> CE (seeds)' counts the seeds on which the method's best top-1 "
        "beat CE with the same seed. ECE is in percent (15 bins).",
        "",
        f"Report built on: {environment()}.",
        "",
    ]
    for track, groups in tracks.items():
        out += _track_section(track, groups)
    if not tracks:
        out += ["No finished student runs yet.", ""]
    out += comparison_tables(tracks, comparisons or [])
    out += _teacher_section([r for r in results if r.role == "teacher"], out_dir)
    out += _unfinished_section([r for r in students if not r.finished], out_dir)
    out += skipped_lines(results, out_dir)
    out += ["## Plots", ""]
    out += [f"![{p.stem}]({_rel(p, out_dir)})" for p in plots]
    if plot_note:
        out.append(plot_note)
    out += ["", "Per-run numbers: `results.csv`.", ""]
    return "\n".join(out)


def _track_section(track: str, groups: list[Group]) -> list[str]:
    """One track's heading, its test and validation tables, paired, per-class and online tables."""
    models = sorted({r.model for g in groups for r in g.runs})
    tmodels = sorted({r.teacher_model for g in groups for r in g.runs if r.teacher_model})
    desc = f"student {', '.join(models)}" + (f", teacher {', '.join(tmodels)}" if tmodels else "")
    out = [f"## Track `{track}` ({desc})", ""]
    tested = test_table(groups)
    if tested:
        out += [
            "Test split (every image of it), at the epoch selected on the held-out validation split "
            "and at the last epoch; mean ± std over seeds. 'train top-1' is the running accuracy on the "
            "augmented training batches of the last epoch.",
            "",
            *tested,
            "",
            "Validation split (used to select the epoch):",
            "",
        ]
    out += _track_table(groups) + [""]
    out += paired_tables(groups)
    out += class_table(groups)
    out += online_table(groups)
    for g in groups:
        sources = sorted(
            {
                Path(r.copied_from).parent.parent.name + "/" + Path(r.copied_from).parent.name
                for r in g.runs
                if r.copied_from
            }
        )
        if sources:
            out += [
                f"`{g.label}`: the same runs as `{', '.join(sources)}` (identical settings, trained once).",
                "",
            ]
    if not any(g.method == "ce" for g in groups):
        out += ["(no `ce` run in this track, so no Δ vs CE.)", ""]
    return out


def _teacher_section(teachers: list[RunResult], out_dir: Path) -> list[str]:
    if not teachers:
        return []
    out = [
        "## Teachers",
        "",
        "| teacher | finished | last top-1 | best top-1 | epochs | s/epoch | folder |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in teachers:
        out.append(
            f"| {t.model} (seed {t.seed}) | {'yes' if t.finished else 'no'} | {t.last_top1:.2f} | "
            f"{t.best_top1:.2f} | {t.epochs} | {t.seconds_per_epoch:.1f} | "
            f"`{_rel(t.run_dir, out_dir)}` |"
        )
    return out + [
        "",
        "Students are distilled from the teacher's final weights (`last.pt`), not its best epoch, so "
        "the test split is not used to pick the teacher.",
        "",
    ]


def _unfinished_section(unfinished: list[RunResult], out_dir: Path) -> list[str]:
    if not unfinished:
        return []
    return [
        "## Unfinished runs (not in the tables)",
        "",
        *(
            f"- `{r.track}/{r.label}/seed{r.seed}`: {r.epochs} epochs so far, last top-1 {r.last_top1:.2f} "
            f"(`{_rel(r.run_dir, out_dir)}`)"
            for r in unfinished
        ),
        "",
    ]


def build_report(
    paths: list[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    title: str = "unikd benchmark report",
    plots: bool = True,
    comparisons: list[Comparison] | None = None,
) -> ReportFiles:
    """Collect the run folders under ``paths`` and write ``results.csv``, ``report.md`` and (with matplotlib)
    ``accuracy.png`` and ``curves.png`` into ``out_dir``. ``comparisons`` (a bench spec's pre-registered
    families) adds their tables: p-values, Holm adjustment, verdicts."""
    results = collect(list(paths))  # first: a bad path must not leave a new empty output folder behind
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tracks = aggregate(results)
    files = ReportFiles(csv=out_dir / "results.csv", markdown=out_dir / "report.md")
    students = [r for r in results if r.role == "student"]
    files.n_runs, files.n_finished = len(students), sum(r.finished for r in students)
    files.corrupt = [f"{r.run_dir / 'metrics.jsonl'}: line {_lines(r.metrics_corrupt_lines)}"
                     for r in results if r.metrics_corrupt_lines]
    if plots and tracks:
        files.plot_note = matplotlib_missing()
        if files.plot_note is None:
            files.plots = [
                plot_accuracy(tracks, out_dir / "accuracy.png"),
                plot_curves(tracks, out_dir / "curves.png"),
            ]
            if any(g.paired for groups in tracks.values() for g in groups):
                files.plots.append(plot_paired(tracks, out_dir / "paired.png"))
    elif plots:
        files.plot_note = "No finished runs yet, so no plots."
    else:
        files.plot_note = "Plots were not requested."
    write_text_atomic(files.csv, results_csv(results, relative_to=out_dir))
    write_text_atomic(
        files.markdown,
        render_markdown(
            results,
            tracks,
            title=title,
            plots=files.plots,
            plot_note=files.plot_note,
            out_dir=out_dir,
            comparisons=comparisons,
        ),
    )
    return files
