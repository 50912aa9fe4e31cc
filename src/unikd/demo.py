"""``unikd demo``: teacher, then CE / KD / NKD / USKD students on the bundled 8x8 digits, in minutes on a CPU.

Everything goes through the public harness (``load_config`` + ``train``), so the demo exercises exactly
what ``unikd train`` runs. All students share the seed, data, data order, augmentation and schedule; only
the method differs. Each method uses its loss function's published default hyperparameters (KD: the CIFAR
benchmark's T=4 with CE weight 0.1 / KD weight 0.9), nothing tuned on the test set.

The teacher trains on all 1442 training images, the students on 40 per class (400 images): on the full
set the 24k-parameter student already matches the teacher (both ~99% on the 355 test images), which would
leave nothing to distil. 40 per class keeps the whole test set, since no class has more than 36 test
images and ``samples_per_class`` also caps the evaluated split.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from unikd._atomic import atomic_write_text

TEACHER_MODEL = "resnet20"  # 0.27M parameters
STUDENT_MODEL = "tiny_cnn"  # 24k parameters
DEMO_METHODS = ("ce", "kd", "nkd", "uskd")
DEFAULT_EPOCHS = 30
STUDENT_SAMPLES_PER_CLASS = 40
QUICK_SAMPLES_PER_CLASS = 8
PLOT_NAME = "demo.png"

# method -> loss overrides. KD follows the CIFAR-100 protocol (mdistiller); NKD and USKD use the defaults
# of their loss functions (the paper's ImageNet settings).
METHOD_OVERRIDES: dict[str, list[str]] = {
    "ce": [],
    "kd": ["loss.ce_weight=0.1", "loss.weight=0.9", "loss.temperature=4.0"],
    "nkd": [],
    "uskd": [],
}


def base_overrides(*, epochs: int, seed: int, device: str, quick: bool) -> list[str]:
    """Settings shared by the teacher and every student."""
    out = [
        "data.name=digits",
        # 8x8 digits: a 1-pixel random shift; no flips (a mirrored 2 or 5 is not a digit).
        "data.crop_padding=1",
        "data.hflip=false",
        "data.batch_size=64",
        f"epochs={epochs}",
        f"seed={seed}",
        f"device={device}",
        "tensorboard=false",
        "optim.name=sgd",
        "optim.lr=0.1",
        "optim.momentum=0.9",
        "optim.nesterov=true",
        "optim.weight_decay=5e-4",
        "sched.name=cosine",
        "sched.warmup_epochs=0" if quick else "sched.warmup_epochs=1",
    ]
    if quick:
        # A smoke test: 8 images per class, 32 per batch -> 2 steps per epoch.
        out += [f"data.samples_per_class={QUICK_SAMPLES_PER_CLASS}", "data.batch_size=32"]
    return out


def _read_history(run_dir: Path, epochs: int) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows[-epochs:]


def _row(name: str, model: str, summary: dict[str, Any], seconds: float) -> dict[str, Any]:
    return {
        "method": name,
        "model": model,
        "top1": summary.get("last_top1"),
        "top5": summary.get("last_top5"),
        "nll": summary.get("last_nll"),
        "ece": summary.get("last_ece"),
        "seconds": seconds,
    }


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The comparison table as fixed-width text (top-1/top-5 in percent, ECE as a fraction)."""

    def num(v: Any, fmt: str) -> str:
        return format(v, fmt) if isinstance(v, (int, float)) else "-"

    lines = [f"{'method':<9} {'model':<10} {'top-1':>7} {'top-5':>7} {'NLL':>7} {'ECE':>7} {'seconds':>8}"]
    for r in rows:
        lines.append(
            f"{r['method']:<9} {r['model']:<10} {num(r['top1'], '7.2f')} {num(r['top5'], '7.2f')} "
            f"{num(r['nll'], '7.4f')} {num(r['ece'], '7.4f')} {num(r['seconds'], '8.1f')}"
        )
    return "\n".join(lines)


def format_markdown(rows: Sequence[dict[str, Any]]) -> str:
    out = [
        "| method | model | top-1 (%) | top-5 (%) | NLL | ECE | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(f"| {r['method']} | {r['model']} | {r['top1']:.2f} | {r['top5']:.2f} | {r['nll']:.4f} | "
                   f"{r['ece']:.4f} | {r['seconds']:.1f} |")
    return "\n".join(out)


def write_plot(histories: dict[str, list[dict[str, Any]]], rows: Sequence[dict[str, Any]],
               path: Path) -> Path | None:
    """Test top-1 per epoch, and last-epoch top-1 and ECE per run. None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed; must precede pyplot
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (ax_curve, ax_top1, ax_ece) = plt.subplots(1, 3, figsize=(15, 4.2))
    colors = {name: f"C{i}" for i, name in enumerate(r["method"] for r in rows if r["method"] != "teacher")}
    colors["teacher"] = "black"
    for name, hist in histories.items():
        hist = [r for r in hist if r.get("val/top1") is not None]  # epochs without evaluation
        style = {"linestyle": "--"} if name == "teacher" else {}
        ax_curve.plot([r["epoch"] for r in hist], [r["val/top1"] for r in hist], label=name,
                      color=colors.get(name), **style)
    # Accuracy axes start at 0: a zoomed axis makes differences of a point look like a gap of half the plot
    # (the bar labels and the table carry the exact numbers).
    ax_curve.set_ylim(0.0, 100.5)
    ax_curve.set(xlabel="epoch", ylabel="test top-1 (%)", title="Test accuracy per epoch")
    ax_curve.grid(alpha=0.3)
    ax_curve.legend(loc="lower right")
    names = [r["method"] for r in rows]
    bar_colors = [colors.get(n, "gray") for n in names]
    for ax, key, title, fmt in ((ax_top1, "top1", "Last-epoch test top-1 (%)", "{:.2f}"),
                                (ax_ece, "ece", "Last-epoch ECE (lower is better)", "{:.3f}")):
        values = [r[key] if r[key] is not None else 0.0 for r in rows]
        bars = ax.bar(names, values, color=bar_colors, alpha=0.85)
        ax.bar_label(bars, labels=[fmt.format(v) for v in values], fontsize=8)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        if key == "top1":
            ax.set_ylim(0.0, 105.0)
    fig.suptitle(f"unikd demo: digits 8x8, teacher {TEACHER_MODEL}, students {STUDENT_MODEL}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_demo(
    out: str | Path = "runs/demo",
    *,
    epochs: int | None = None,
    seed: int = 0,
    quick: bool = False,
    device: str = "auto",
    methods: Sequence[str] = DEMO_METHODS,
    threads: int | None = 1,
    verbose: bool = False,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the teacher and one student per method; print and save the comparison.

    Writes ``out/teacher``, ``out/<method>`` (ordinary run folders), ``out/results.json``,
    ``out/results.md`` and ``out/demo.png`` (skipped with a message when matplotlib is missing).
    ``threads`` sets torch's intra-op CPU threads for the demo (restored afterwards; None keeps torch's
    choice): batches of 64 8x8 images are too small to gain much from more threads, and on a busy
    2-core machine 1 thread ran the teacher 6x faster than 2 (3 epochs: 8.6 s vs 26.2 s).
    Returns ``{"rows": [...], "plot": path or None, ...}``.
    """
    if epochs is None:
        epochs = 1 if quick else DEFAULT_EPOCHS
    if int(epochs) < 1:
        raise ValueError(f"--epochs must be >= 1, got {epochs}")
    unknown = [m for m in methods if m not in METHOD_OVERRIDES]
    if unknown:
        raise ValueError(f"demo methods must be among {list(METHOD_OVERRIDES)}, got {unknown}")
    out = Path(out)
    base = base_overrides(epochs=int(epochs), seed=seed, device=device, quick=quick)
    if threads is not None and int(threads) < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    log = logging.getLogger("unikd")
    old_level = log.level
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    if not verbose:
        log.setLevel(logging.WARNING)  # also hides the per-epoch progress bars
    t_all = time.perf_counter()
    try:
        rows, histories = _train_runs(out, base, methods, int(epochs), quick, echo)
    finally:
        log.setLevel(old_level)
        torch.set_num_threads(old_threads)
    wall = time.perf_counter() - t_all

    table = format_table(rows)
    echo("")
    if quick:
        data_note = f"quick: {QUICK_SAMPLES_PER_CLASS} images per class for every model"
    else:
        data_note = f"teacher on all training images, students on {STUDENT_SAMPLES_PER_CLASS} per class"
    echo(f"digits 8x8 ({data_note}), {epochs} epoch{'s' * (epochs != 1)}, seed {seed}; "
         "last-epoch metrics on the test set:")
    echo(table)
    plot = write_plot(histories, rows, out / PLOT_NAME)
    if plot is None:
        echo("matplotlib is not installed: skipped the plot (pip install 'unikd[plot]').")
    result = {
        "rows": rows,
        "epochs": int(epochs),
        "seed": seed,
        "quick": quick,
        "student_samples_per_class": QUICK_SAMPLES_PER_CLASS if quick else STUDENT_SAMPLES_PER_CLASS,
        "teacher_model": TEACHER_MODEL,
        "student_model": STUDENT_MODEL,
        "wall_seconds": wall,
        "threads": int(threads) if threads is not None else old_threads,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "plot": str(plot) if plot else None,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / "results.md", format_markdown(rows) + "\n")
    echo(f"\ntotal {wall:.1f} s; run folders, results.json and results.md in {out}"
         + (f"; plot: {plot}" if plot else ""))
    return result


def _train_runs(
    out: Path, base: list[str], methods: Sequence[str], epochs: int, quick: bool, echo: Callable[[str], None]
) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Train the teacher, then one student per method; their table rows and per-epoch histories."""
    from unikd.engine import load_config, train

    rows: list[dict[str, Any]] = []
    histories: dict[str, list[dict[str, Any]]] = {}
    runs = [("teacher", "ce", TEACHER_MODEL, [])]
    runs += [(m, m, STUDENT_MODEL, METHOD_OVERRIDES[m]) for m in methods]
    # The final weights: best.pt is chosen on the test set, which the students are scored on.
    teacher_ckpt = out / "teacher" / "last.pt"
    for i, (name, method, model, extra) in enumerate(runs, 1):
        # The demo always trains afresh: it replaces the run folders of a previous demo in ``out``.
        overrides = [f"method={method}", f"model={model}", f"out_dir={out / name}", "resume=no",
                     "overwrite=true"]
        overrides += [*base, *extra]
        if name != "teacher" and not quick:
            overrides.append(f"data.samples_per_class={STUDENT_SAMPLES_PER_CLASS}")
        if method in ("kd", "dkd", "nkd"):
            overrides += [f"teacher.model={TEACHER_MODEL}", f"teacher.checkpoint={teacher_ckpt}"]
        what = "teacher" if name == "teacher" else f"{name} student"
        echo(f"[{i}/{len(runs)}] training {what} ({model}, {epochs} epoch{'s' * (epochs != 1)}) ...")
        t0 = time.perf_counter()
        summary = train(load_config(None, overrides))
        seconds = time.perf_counter() - t0
        rows.append(_row(name, model, summary, seconds))
        histories[name] = _read_history(out / name, epochs)
        echo(f"      top-1 {summary['last_top1']:.2f}%  ({seconds:.1f} s)")
    return rows, histories
