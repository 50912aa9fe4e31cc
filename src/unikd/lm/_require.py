"""The optional dependencies of :mod:`unikd.lm`, imported with an error that says how to install them."""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRA_HINT = "pip install 'unikd[lm]'  (transformers, tokenizers, accelerate)"


def require(module: str) -> ModuleType:
    """Import ``module`` or raise ``ImportError`` naming the ``unikd[lm]`` extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"unikd.lm needs {module.split('.')[0]!r}, which is not installed: {EXTRA_HINT}"
        ) from exc


__all__ = ["EXTRA_HINT", "require"]
