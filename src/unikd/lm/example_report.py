"""The example's summary: a table of every method (mean ± std over seeds), paired differences against KD
with 95% t intervals, and a plot of perplexity, KL to the teacher and the training curves."""

from __future__ import annotations

import json
import platform
import statistics
from pathlib import Path
from typing import Any

import torch

from unikd._atomic import atomic_write_text
from unikd.stats import paired_difference, t_quantile

from .example_config import LMExampleConfig

METRICS = (("val_ppl", "validation perplexity"), ("val_kl", "KL(teacher || student), nats/token"))


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def collect(cfg: LMExampleConfig, out: Path, tag: str = "") -> dict[str, dict[int, dict[str, Any]]]:
    suffix = f"-{tag}" if tag else ""
    found: dict[str, dict[int, dict[str, Any]]] = {}
    for method in cfg.methods:
        for seed in cfg.seeds:
            path = out / "runs" / method / f"seed{seed}{suffix}" / "result.json"
            if path.exists():
                found.setdefault(method, {})[seed] = json.loads(path.read_text())
    return found


def table(cfg: LMExampleConfig, runs: dict[str, dict[int, dict[str, Any]]], teacher: dict[str, Any]) -> str:
    lines = [
        f"Teacher: validation perplexity {teacher['val_ppl']:.3f} ({teacher['parameters']:,} parameters, "
        f"{teacher['seconds']} s).",
        "",
        "| method | seeds | validation perplexity | KL to teacher (nats/token) | train s |",
        "|---|---|---|---|---|",
    ]
    for method in cfg.methods:
        rows = list(runs.get(method, {}).values())
        lines.append(
            f"| {method} | {len(rows)} | {_mean_sd([r['val_ppl'] for r in rows])} | "
            f"{_mean_sd([r['val_kl'] for r in rows])} | {_mean_sd([r['train_seconds'] for r in rows])} |"
        )
    if "kd" in runs:
        lines += [
            "",
            "Paired differences against KD (method − KD over the same seeds; 95% t interval; "
            "negative = lower than KD):",
            "",
            "| method | Δ perplexity [95% CI] | Δ KL [95% CI] | seeds lower than KD |",
            "|---|---|---|---|",
        ]
        for method in cfg.methods:
            if method == "kd" or method not in runs:
                continue
            cells, lower = [], []
            for key, _ in METRICS:
                d = paired_difference(
                    {s: r[key] for s, r in runs[method].items()}, {s: r[key] for s, r in runs["kd"].items()}
                )
                if d is None:
                    cells.append("–")
                    continue
                ci = "" if d.n < 2 else f" [{d.ci_low:+.3f}, {d.ci_high:+.3f}]{' *' if d.resolved else ''}"
                cells.append(f"{d.mean:+.3f}{ci}")
                lower.append(f"{sum(x < 0 for x in d.diffs)}/{d.n}")
            lines.append(
                f"| {method} | {cells[0]} | {cells[1]} | ppl {lower[0] if lower else '–'}, "
                f"KL {lower[1] if len(lower) > 1 else '–'} |"
            )
        n = len(runs["kd"])
        if n >= 2:
            lines += [
                "",
                f"`*`: the 95% interval excludes 0. With {n} seeds the interval is "
                f"±{t_quantile(0.975, n - 1):.2f} "
                "standard errors wide, so only large, consistent differences resolve.",
            ]
    return "\n".join(lines)


def plot(cfg: LMExampleConfig, runs: dict[str, dict[int, dict[str, Any]]], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    methods = [m for m in cfg.methods if m in runs]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, (key, label) in zip(axes[:2], METRICS):
        for i, m in enumerate(methods):
            vals = [r[key] for r in runs[m].values()]
            ax.scatter([i] * len(vals), vals, s=18, alpha=0.7)
            ax.hlines(statistics.fmean(vals), i - 0.3, i + 0.3, color="black")
        ax.set_xticks(range(len(methods)), methods)
        ax.set_title(label)
    ax = axes[2]
    for m in methods:
        first = runs[m][min(runs[m])]
        ax.plot(
            [p["step"] for p in first["curve"]], [p.get("ce", p["loss"]) for p in first["curve"]], label=m
        )
    ax.set_title(f"training CE (seed {min(cfg.seeds)})")
    ax.set_xlabel("step")
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def write_report(
    cfg: LMExampleConfig,
    out: Path,
    teacher: dict[str, Any],
    corpus: dict[str, Any],
    *,
    tag: str = "",
    echo=print,
) -> dict[str, Any]:
    runs = collect(cfg, out, tag)
    text = table(cfg, runs, teacher)
    summary = write_results(out, tag, "unikd lm-distill", text, teacher, corpus, runs)
    suffix = f"-{tag}" if tag else ""
    figure = plot(cfg, runs, out / f"lm{suffix}.png")
    echo(text)
    echo(
        f"[lm] wrote {out / f'results{suffix}.md'}"
        + (f" and {figure}" if figure else " (no plot: pip install matplotlib)")
    )
    return summary


def write_results(
    out: Path,
    tag: str,
    title: str,
    text: str,
    teacher: dict[str, Any],
    corpus: dict[str, Any],
    runs: dict[str, dict[int, dict[str, Any]]],
) -> dict[str, Any]:
    """``results[-tag].md`` (the table and the software it ran on) and ``results[-tag].json`` (every run);
    returns the JSON's content."""
    env = (
        f"torch {torch.__version__}, Python {platform.python_version()}, {platform.machine()}, "
        f"corpus {corpus['files']['train']}+{corpus['files']['val']} files of {corpus['root']}"
    )
    suffix = f"-{tag}" if tag else ""
    atomic_write_text(out / f"results{suffix}.md", f"# {title}\n\n{text}\n\n{env}\n")
    summary = {
        "teacher": teacher,
        "corpus": corpus,
        "runs": {m: {str(s): r for s, r in v.items()} for m, v in runs.items()},
    }
    atomic_write_text(out / f"results{suffix}.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def paired_rows(
    a: str, b: str, runs: dict[str, dict[int, dict[str, Any]]], keys: tuple[tuple[str, str], ...]
) -> list[str]:
    """Markdown rows ``| a − b | label | mean b | mean a | a − b [95 % CI] | seeds a below b |`` for each
    ``(key, label)``, paired by seed."""
    rows = []
    for key, label in keys:
        d = paired_difference(
            {s: r[key] for s, r in runs[a].items()}, {s: r[key] for s, r in runs[b].items()}
        )
        mean = {name: statistics.fmean(r[key] for r in runs[name].values()) for name in (a, b)}
        ci = f"[{d.ci_low:+.3f}, {d.ci_high:+.3f}]" if d.n > 1 else ""
        rows.append(
            f"| {a} − {b} | {label} | {mean[b]:.3f} | {mean[a]:.3f} | {d.mean:+.3f} {ci} | "
            f"{sum(x < 0 for x in d.diffs)}/{d.n} |"
        )
    return rows


__all__ = ["collect", "paired_rows", "plot", "table", "write_report", "write_results"]
