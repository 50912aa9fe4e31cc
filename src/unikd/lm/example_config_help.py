"""Every setting of ``unikd lm-distill`` with its default, for ``--help``."""

from __future__ import annotations

import dataclasses
from typing import Any

from .example_config import LMExampleConfig

__all__ = ["describe_defaults"]


def describe_defaults(width: int = 110) -> str:
    """``key=default`` for every setting (nested keys dotted), wrapped to ``width`` columns."""
    flat: list[str] = []

    def walk(obj: Any, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
            else:
                shown = "[" + ",".join(map(str, value)) + "]" if isinstance(value, list) else value
                flat.append(f"{prefix}{f.name}={shown!s}" if shown != "" else f"{prefix}{f.name}=''")

    walk(LMExampleConfig(), "")
    lines, line = [], " "
    for item in flat:
        if len(line) + len(item) + 1 > width:
            lines.append(line)
            line = " "
        line += " " + item
    return "\n".join([*lines, line])
