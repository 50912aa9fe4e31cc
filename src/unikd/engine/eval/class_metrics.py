"""Per-class-group top-1 of a run whose training split lost some classes (``data.drop_classes``).

Such a run is scored on every class as usual, and besides on the dropped classes and on the kept ones:
``val/top1_dropped`` / ``val/top1_kept`` in each epoch record, and in ``summary.json`` ``dropped_classes``,
``{best,last}_top1_{dropped,kept}`` (validation, at the best and the last evaluated epoch) and, with the final
test, ``test_{selected,last}_top1_{dropped,kept}``. Runs that drop nothing get none of these keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

GROUPS = ("dropped", "kept")


def class_groups(train_ds: Any, num_classes: int) -> dict[str, list[int]] | None:
    """``{"dropped": [...], "kept": [...]}`` when the training split lost classes, else None."""
    dropped = [int(c) for c in getattr(train_ds, "dropped_classes", ())]
    if not dropped:
        return None
    return {"dropped": dropped, "kept": [c for c in range(num_classes) if c not in dropped]}


def epoch_values(metrics: dict[str, Any], groups: dict[str, list[int]] | None) -> dict[str, Any]:
    """The epoch record's ``val/top1_<group>`` (None on epochs without evaluation)."""
    return {f"val/top1_{g}": metrics.get(f"top1_{g}") for g in groups or {}}


def summary_values(history: Sequence[dict[str, Any]], best_epoch: int | None,
                   groups: dict[str, list[int]] | None) -> dict[str, Any]:
    """``dropped_classes`` and ``{best,last}_top1_<group>`` from the epoch records."""
    if not groups:
        return {}
    evaluated = [r for r in history if r.get("val/top1") is not None]
    last = evaluated[-1] if evaluated else {}
    best = next((r for r in evaluated if r.get("epoch") == best_epoch), {})
    out: dict[str, Any] = {"dropped_classes": list(groups["dropped"])}
    for g in GROUPS:
        out[f"best_top1_{g}"] = best.get(f"val/top1_{g}")
        out[f"last_top1_{g}"] = last.get(f"val/top1_{g}")
    return out


def test_values(selected: dict[str, Any], last: dict[str, Any],
                groups: dict[str, list[int]] | None) -> dict[str, Any]:
    """``test_{selected,last}_top1_<group>`` from the two final-test evaluations."""
    out: dict[str, Any] = {}
    for g in groups or {}:
        out[f"test_selected_top1_{g}"] = selected.get(f"top1_{g}")
        out[f"test_last_top1_{g}"] = last.get(f"top1_{g}")
    return out


__all__ = ["GROUPS", "class_groups", "epoch_values", "summary_values", "test_values"]
