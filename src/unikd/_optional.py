"""Imports of optional dependencies with an error that says what needs them and how to install them."""

from __future__ import annotations

import importlib
from types import ModuleType


def import_optional(package: str, message: str) -> ModuleType:
    """``importlib.import_module(package)``, or ``ImportError(message (cause))`` when it is missing."""
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise ImportError(f"{message} ({exc})") from exc


__all__ = ["import_optional"]
