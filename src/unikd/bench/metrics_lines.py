"""Read a run's ``metrics.jsonl`` and say which lines were skipped, so a report never drops data silently.

Each line unikd writes is one JSON object with an integer ``epoch``, ending with a newline. Two kinds of
unusable line are told apart:

- a **torn last line**: the file does not end with a newline and its last line is not a record -- what a
  run killed (or still running) in the middle of appending leaves. Normal for an unfinished run: noted.
- a **corrupt line**: any other line that is not a record (garbled bytes, invalid UTF-8, a JSON value
  without ``epoch``), or a torn last line of a run that says it finished. Reported as skipped lines.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unikd._files import require_regular_file


@dataclass
class MetricsFile:
    """The epoch records of one ``metrics.jsonl`` and the line numbers (1-based) that were skipped."""

    path: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    corrupt_lines: list[int] = field(default_factory=list)
    torn_line: int | None = None  # the last line, cut off mid-write (no newline at the end of the file)

    def skipped(self, *, finished: bool) -> tuple[list[int], int | None]:
        """(corrupt lines, torn last line) for a run that did or did not finish: a finished run completed
        every append, so a torn last line in its file is damage and counts as corrupt."""
        if finished and self.torn_line is not None:
            return sorted([*self.corrupt_lines, self.torn_line]), None
        return list(self.corrupt_lines), self.torn_line


def _record(raw: bytes) -> dict[str, Any] | None:
    try:
        rec = json.loads(raw.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError and JSONDecodeError both
        return None
    return rec if isinstance(rec, dict) and isinstance(rec.get("epoch"), int) else None


def read_metrics_file(path: str | os.PathLike[str]) -> MetricsFile:
    """Records one per epoch (the last one written wins, so a resumed run that repeats an epoch is counted
    once); absent file: no records. ``ValueError`` when the path is not a regular file (e.g. a FIFO)."""
    out = MetricsFile(Path(path))
    if not out.path.exists():
        return out
    try:
        raw = require_regular_file(out.path, "metrics.jsonl").read_bytes()
    except OSError:
        return out
    lines = raw.split(b"\n")
    by_epoch: dict[int, dict[str, Any]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        rec = _record(line)
        if rec is not None:
            by_epoch[rec["epoch"]] = rec
        elif number == len(lines):  # no newline after it: the append was cut off
            out.torn_line = number
        else:
            out.corrupt_lines.append(number)
    out.records = [by_epoch[e] for e in sorted(by_epoch)]
    return out
