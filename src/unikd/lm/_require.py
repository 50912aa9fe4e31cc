"""The optional dependencies of :mod:`unikd.lm`, imported with an error that says how to install them."""

from __future__ import annotations

from types import ModuleType

from unikd._optional import import_optional

EXTRA_HINT = "pip install 'unikd[lm]'  (transformers, tokenizers, accelerate)"


def require(module: str) -> ModuleType:
    """Import ``module`` or raise ``ImportError`` naming the ``unikd[lm]`` extra."""
    return import_optional(
        module, f"unikd.lm needs {module.split('.')[0]!r}, which is not installed: {EXTRA_HINT}"
    )


__all__ = ["EXTRA_HINT", "require"]
