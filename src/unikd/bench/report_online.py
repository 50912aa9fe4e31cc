"""The "Online networks" table of a track: every network of the online runs (student and peers), mean ± std
over seeds, from each run's ``summary.json`` (``online.networks``)."""

from __future__ import annotations

import math

from unikd.bench.aggregate import Group, mean_std

# summary key -> (column title, scale, decimals)
_COLUMNS = {
    "test_selected_top1": ("test top-1 (selected)", 1.0, 2),
    "test_last_top1": ("test top-1 (last)", 1.0, 2),
    "test_selected_nll": ("test NLL (selected)", 1.0, 3),
    "test_selected_ece": ("test ECE % (selected)", 100.0, 2),
    "best_top1": ("best val top-1", 1.0, 2),
    "last_top1": ("last val top-1", 1.0, 2),
}


def _num(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def online_table(groups: list[Group]) -> list[str]:
    """Markdown lines (empty when no run of the track trained several networks)."""
    rows = [g for g in groups if any(r.networks for r in g.runs)]
    if not rows:
        return []
    head = ["method", "network", "model", "seeds"] + [title for title, _, _ in _COLUMNS.values()]
    out = [
        "**Online networks** (every network trained in the online runs; `student` is the run's student, "
        "the one in the tables above; mean ± std over seeds; the selected epoch is the student's)",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for g in rows:
        names: dict[str, str] = {}
        for r in g.runs:
            for n in r.networks:
                names.setdefault(str(n.get("name")), str(n.get("model")))
        for name, model in names.items():
            nets = [n for r in g.runs for n in r.networks if str(n.get("name")) == name]
            cells = [f"`{g.label}`", name, model, str(len(nets))]
            for key, (_, scale, dec) in _COLUMNS.items():
                stat = mean_std([_num(n.get(key)) for n in nets])
                if stat.n == 0:
                    cells.append("–")
                elif math.isnan(stat.std):
                    cells.append(f"{stat.mean * scale:.{dec}f}")
                else:
                    cells.append(f"{stat.mean * scale:.{dec}f} ± {stat.std * scale:.{dec}f}")
            out.append("| " + " | ".join(cells) + " |")
    return out + [""]
