"""The "Dropped classes" table of a track: top-1 on the classes the students never trained on
(``data.drop_classes``), on the kept ones, and overall, mean ± std over seeds (from each ``summary.json``);
with the bias-shift fix (``unikd.engine.eval.bias_shift``) also the selected epoch's test top-1 with the
constant
chosen on validation, and that constant."""

from __future__ import annotations

import math

from unikd.bench.aggregate import Group, mean_std
from unikd.bench.results import RunResult

# (column title, overall RunResult attribute, class-key prefix)
_TEST = [("test top-1 (selected)", "test_selected_top1", "test_selected_top1"),
         ("test top-1 (last)", "test_last_top1", "test_last_top1")]
_VAL = [("best val top-1", "best_top1", "best_top1"), ("last val top-1", "last_top1", "last_top1")]
_BIASFIX = ("test top-1 (selected, bias-fixed)", "test_selected_biasfix_top1", "test_selected_biasfix_top1")


def _cell(values: list[float]) -> str:
    stat = mean_std(values)
    if stat.n == 0:
        return "–"
    return f"{stat.mean:.2f}" if math.isnan(stat.std) else f"{stat.mean:.2f} ± {stat.std:.2f}"


def _dropped(runs: list[RunResult]) -> str:
    sets = sorted({tuple(r.dropped_classes) for r in runs})
    return "; ".join(" ".join(map(str, s)) for s in sets) if sets else "none"


def class_table(groups: list[Group]) -> list[str]:
    """Markdown lines (empty when no run of the track dropped classes)."""
    if not any(r.dropped_classes for g in groups for r in g.runs):
        return []
    runs = [r for g in groups for r in g.runs]
    tested = any(math.isfinite(r.test_selected_top1) for r in runs)
    fixed = any(math.isfinite(r.value("test_selected_biasfix_top1")) for r in runs)
    columns = (_TEST[:1] + ([_BIASFIX] if fixed else []) + _TEST[1:] if tested else []) + _VAL
    head = ["method", "seeds", "dropped classes"]
    for title, _, prefix in columns:
        head += [f"{title}: all", "dropped", "kept"]
        if prefix == _BIASFIX[2]:
            head.append("b")
    note = (" 'bias-fixed': one constant b added to the dropped classes' logits, chosen per run on the "
            "validation split (grid 0..20 step 0.25, maximising overall validation top-1; Hinton et al. "
            "2015, §3); b is its mean ± std over seeds." if fixed else "")
    out = [
        "**Dropped classes** (classes removed from the students' training split by `data.drop_classes`; "
        "validation and test keep every class, so 'dropped' is the top-1 on classes the student never "
        f"trained on; mean ± std over seeds.{note})",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for g in groups:
        cells = [f"`{g.label}`", ",".join(map(str, g.seeds)), _dropped(g.runs)]
        for _, overall, prefix in columns:
            cells.append(_cell([r.value(overall) for r in g.runs]))
            for part in ("dropped", "kept"):
                cells.append(_cell([r.class_top1.get(f"{prefix}_{part}", math.nan) for r in g.runs]))
            if prefix == _BIASFIX[2]:
                cells.append(_cell([r.value("bias_shift") for r in g.runs]))
        out.append("| " + " | ".join(cells) + " |")
    return out + [""]


__all__ = ["class_table"]
