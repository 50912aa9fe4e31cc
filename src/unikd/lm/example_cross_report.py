"""The summary of the example with two tokenizers: validation bits per byte (and the students' perplexity
in their own tokens) per method, and paired differences against CE-only training with 95 % t intervals."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from unikd.stats import paired_difference

from .example_config import LMExampleConfig
from .example_report import collect, write_results

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
    summary = write_results(out, tag, "unikd lm-distill (two tokenizers)", text, teacher, corpus, runs)
    suffix = f"-{tag}" if tag else ""
    echo(text)
    echo(f"[lm] wrote {out / f'results{suffix}.md'}")
    return summary


__all__ = ["cross_table", "write_cross_report"]
