"""PNG plots of a benchmark: accuracy per method with error bars, and validation top-1 curves.

matplotlib is optional (``pip install unikd[plot]``); :func:`matplotlib_missing` says why plots are skipped.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from unikd.bench.aggregate import REFERENCES, Group, paired_metrics


def matplotlib_missing() -> str | None:
    """None when matplotlib imports, else a message saying the plots are skipped and how to get them."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return (
            "matplotlib is not installed, so no plots were drawn; `pip install matplotlib` and rerun "
            "`unikd report` to draw them"
        )
    return None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _std0(std: float) -> float:
    return 0.0 if math.isnan(std) else std


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 2)
    return math.ceil(n / cols), cols


def plot_accuracy(tracks: dict[str, list[Group]], path: str | os.PathLike[str]) -> Path:
    """Bars of mean best and last top-1 per method, error bars = std over seeds; one panel per track."""
    plt = _pyplot()
    rows, cols = _grid(len(tracks))
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 3.8 * rows), squeeze=False)
    for ax, (track, groups) in zip(axes.flat, tracks.items()):
        x = list(range(len(groups)))
        for offset, key, name in ((-0.2, "best_top1", "best"), (0.2, "last_top1", "last")):
            means = [g.stats[key].mean for g in groups]
            stds = [_std0(g.stats[key].std) for g in groups]
            ax.bar([i + offset for i in x], means, width=0.4, yerr=stds, capsize=3, label=f"{name} top-1")
        # Zoom on the spread of the methods, not on 0..100, so differences of a point stay visible.
        lows = [g.stats["last_top1"].mean - 2 * _std0(g.stats["last_top1"].std) for g in groups]
        highs = [g.stats["best_top1"].mean + 2 * _std0(g.stats["best_top1"].std) for g in groups]
        lows = [v for v in lows if math.isfinite(v)]
        highs = [v for v in highs if math.isfinite(v)]
        if lows and highs:
            pad = max(1.0, 0.1 * (max(highs) - min(lows)))
            ax.set_ylim(max(0.0, min(lows) - pad), min(100.0, max(highs) + pad))
        ax.set_xticks(x)
        ax.set_xticklabels([f"{g.label}\n(n={len(g.runs)})" for g in groups], fontsize=8)
        ax.set_ylabel("val top-1 (%)")
        ax.set_title(track)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(tracks) :]:
        ax.set_visible(False)
    fig.suptitle("mean ± std over seeds")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_curves(tracks: dict[str, list[Group]], path: str | os.PathLike[str]) -> Path:
    """Validation top-1 per epoch, mean over seeds (band = ± std), one line per method; a panel per track."""
    plt = _pyplot()
    rows, cols = _grid(len(tracks))
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 3.8 * rows), squeeze=False)
    for ax, (track, groups) in zip(axes.flat, tracks.items()):
        for g in groups:
            by_epoch: dict[int, list[float]] = {}
            for r in g.runs:
                for epoch, top1 in r.curve:
                    if math.isfinite(top1):
                        by_epoch.setdefault(epoch, []).append(top1)
            if not by_epoch:
                continue
            epochs = sorted(by_epoch)
            means = [sum(by_epoch[e]) / len(by_epoch[e]) for e in epochs]
            (line,) = ax.plot(epochs, means, marker=".", label=g.label)
            spread = [(min(by_epoch[e]), max(by_epoch[e])) for e in epochs]
            if any(lo != hi for lo, hi in spread):
                stds = []
                for e, m in zip(epochs, means):
                    vals = by_epoch[e]
                    var = sum((v - m) ** 2 for v in vals) / (len(vals) - 1) if len(vals) > 1 else 0.0
                    stds.append(var**0.5)
                ax.fill_between(
                    epochs,
                    [m - s for m, s in zip(means, stds)],
                    [m + s for m, s in zip(means, stds)],
                    color=line.get_color(),
                    alpha=0.15,
                )
        ax.set_xlabel("epoch")
        ax.set_ylabel("val top-1 (%)")
        ax.set_title(track)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(tracks) :]:
        ax.set_visible(False)
    fig.suptitle("validation top-1, mean over seeds (band: ± std)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_paired(tracks: dict[str, list[Group]], path: str | os.PathLike[str]) -> Path:
    """Per track, two panels: every seed's paired difference (dots) with the mean and its 95% interval
    against each reference method; and the training curves (validation top-1 solid, running train top-1
    dashed, mean over seeds) that show whether the students fit their training set."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(tracks), 2, figsize=(12, 3.2 + 0.35 * max(len(g) for g in tracks.values())
                                                      * len(tracks)), squeeze=False)
    for (ax, ax_curve), (track, groups) in zip(axes, tracks.items()):
        key = paired_metrics(groups)[0]
        y, labels = 0, []
        for ref, marker in zip(REFERENCES, ("o", "s", "^")):
            rows = [g for g in groups if ref in g.paired and key in g.paired[ref]]
            for g in rows:
                d = g.paired[ref][key]
                ax.scatter(d.diffs, [y] * len(d.diffs), s=14, alpha=0.6, marker=marker)
                if d.n >= 2:
                    ax.errorbar([d.mean], [y], xerr=[[d.mean - d.ci_low], [d.ci_high - d.mean]], fmt="k|",
                                capsize=4, markersize=12)
                labels.append(f"{g.label} − {ref}")
                y += 1
        ax.axvline(0.0, color="grey", lw=1)
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
        what = "test top-1 at the selected epoch" if key.startswith("test_") else "best val top-1"
        ax.set_xlabel(f"paired difference in {what} (points); bar: mean, 95% CI")
        ax.set_title(f"{track}: seeds (dots) and 95% intervals")
        ax.grid(axis="x", alpha=0.3)
        for g in groups:
            for attr, style in (("curve", "-"), ("train_curve", "--")):
                by_epoch: dict[int, list[float]] = {}
                for r in g.runs:
                    for epoch, v in getattr(r, attr):
                        if math.isfinite(v):
                            by_epoch.setdefault(epoch, []).append(v)
                if by_epoch:
                    epochs = sorted(by_epoch)
                    ax_curve.plot(epochs, [sum(by_epoch[e]) / len(by_epoch[e]) for e in epochs], style,
                                  label=g.label if style == "-" else None, lw=1)
        ax_curve.set_xlabel("epoch")
        ax_curve.set_ylabel("top-1 (%)")
        ax_curve.set_title(f"{track}: val top-1 (solid), train top-1 (dashed)")
        ax_curve.grid(alpha=0.3)
        ax_curve.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
