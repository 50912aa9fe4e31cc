"""The summary of the example with two tokenizers: validation bits per byte (and the students' perplexity
in their own tokens) per method, and paired differences against CE-only training with 95 % t intervals."""

from __future__ import annotations

import json
import platform
import statistics
from pathlib import Path
from typing import Any

import torch

from unikd._atomic import atomic_write_text
from unikd.stats import paired_difference

from .example_config import LMExampleConfig
from .example_report import collect

METRICS = (("val_bpb", "bits per byte"), ("val_ppl", "perplexity (student tokens)"))


def _mean_sd(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.4f}" if values else "–"
    return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"


def _difference(runs: dict[str, dict[int, dict[str, Any]]], method: str, key: str) -> tuple[str, str]:
    d = paired_difference(
        {s: r[key] for s, r in runs[method].items()}, {s: r[key] for s, r in runs["ce"].items()}
    )
    if d is None:
        return "–", "–"
    ci = "" if d.n < 2 else f" [{d.ci_low:+.4f}, {d.ci_high:+.4f}]{' *' if d.resolved else ''}"
    return f"{d.mean:+.4f}{ci}", f"{sum(x < 0 for x in d.diffs)}/{d.n}"


def cross_table(
    cfg: LMExampleConfig, runs: dict[str, dict[int, dict[str, Any]]], teacher: dict[str, Any], corpus: dict
) -> str:
    lines = [
        f"Teacher ({corpus['teacher_vocab_size']} tokens): bits per byte {teacher['val_bpb']:.4f}, "
        f"perplexity {teacher['val_ppl']:.3f} in its own tokens. Students: {corpus['vocab_size']} tokens.",
        "",
        "| method | seeds | bits per byte | perplexity (student tokens) | train s |",
        "|---|---|---|---|---|",
    ]
    for method in cfg.methods:
        rows = list(runs.get(method, {}).values())
        cells = [_mean_sd([r[k] for r in rows]) for k, _ in METRICS]
        lines.append(
            f"| {method} | {len(rows)} | {cells[0]} | {cells[1]} | "
            f"{_mean_sd([r['train_seconds'] for r in rows])} |"
        )
    if "ce" in runs:
        lines += [
            "",
            "Paired differences against CE only (method − CE over the same seeds; 95% t interval; `*`: the "
            "interval excludes 0; negative = better):",
            "",
            "| method | Δ bits per byte | seeds lower | Δ perplexity | seeds lower |",
            "|---|---|---|---|---|",
        ]
        for method in cfg.methods:
            if method == "ce" or method not in runs:
                continue
            bpb, ppl = _difference(runs, method, "val_bpb"), _difference(runs, method, "val_ppl")
            lines.append(f"| {method} | {bpb[0]} | {bpb[1]} | {ppl[0]} | {ppl[1]} |")
    return "\n".join(lines)


def write_cross_report(
    cfg: LMExampleConfig,
    out: Path,
    teacher: dict[str, Any],
    corpus: dict[str, Any],
    *,
    tag: str = "",
    echo=print,
) -> dict[str, Any]:
    runs = collect(cfg, out, tag)
    text = cross_table(cfg, runs, teacher, corpus)
    env = (
        f"torch {torch.__version__}, Python {platform.python_version()}, {platform.machine()}, "
        f"corpus {corpus['files']['train']}+{corpus['files']['val']} files of {corpus['root']}"
    )
    suffix = f"-{tag}" if tag else ""
    atomic_write_text(
        out / f"results{suffix}.md", f"# unikd lm-distill (two tokenizers)\n\n{text}\n\n{env}\n"
    )
    summary = {
        "teacher": teacher,
        "corpus": corpus,
        "runs": {m: {str(s): r for s, r in v.items()} for m, v in runs.items()},
    }
    atomic_write_text(out / f"results{suffix}.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    echo(text)
    echo(f"[lm] wrote {out / f'results{suffix}.md'}")
    return summary


__all__ = ["cross_table", "write_cross_report"]
