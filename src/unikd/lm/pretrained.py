"""Models and tokenizers named on the command line: a local folder or a Hugging Face model name.

``from_pretrained`` reads a folder directly and a name through the Hugging Face cache. A name that is
neither a folder nor in the cache, on a machine without the hub, fails with the cache folder to fill and the
variable to set, instead of the hub client's connection error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ._require import require
from .settings import parse_dtype

transformers = require("transformers")


def _cache_dir() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return os.path.expanduser("~/.cache/huggingface/hub")


def _unavailable(role: str, spec: str, exc: Exception) -> Exception:
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:  # a path: hub names are "org/name"
        return FileNotFoundError(f"{role}={spec!r} is not a model folder; check the path")
    return FileNotFoundError(
        f"could not load {role}={spec!r}: it is not a local folder, and not in the Hugging Face cache "
        f"({_cache_dir()}) or the hub could not be reached ({type(exc).__name__}: {str(exc)[:200]}). "
        f"On a machine with internet run `hf download {spec}` and copy that cache folder here (or set "
        "HF_HOME to a copy of it), set HF_HUB_OFFLINE=1 to read the cache without trying the network, "
        "or pass a folder written by save_pretrained"
    )


def _offline() -> dict[str, bool]:
    """``local_files_only`` when ``HF_HUB_OFFLINE`` is set now (the hub client reads it only at import)."""
    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return {"local_files_only": True} if flag else {}


def load_causal_lm(spec: str, role: str, *, dtype: str | None = None) -> Any:
    """``AutoModelForCausalLM.from_pretrained(spec)`` in ``dtype`` (None: float32; "auto": the saved one)."""
    kwargs: dict[str, Any] = {}
    if dtype == "auto":
        kwargs["dtype"] = "auto"
    else:
        kwargs["dtype"] = parse_dtype(dtype, f"{role}_dtype") or "float32"
    path = Path(spec).expanduser()
    try:
        return transformers.AutoModelForCausalLM.from_pretrained(
            str(path) if path.is_dir() else spec, **kwargs
        )
    except OSError as exc:
        raise _unavailable(role, spec, exc) from exc


def load_tokenizer(spec: str, role: str) -> Any:
    path = Path(spec).expanduser()
    try:
        if path.is_dir():
            return transformers.AutoTokenizer.from_pretrained(str(path))
        return transformers.AutoTokenizer.from_pretrained(spec, **_offline())
    except OSError as exc:
        raise _unavailable(role, spec, exc) from exc


__all__ = ["load_causal_lm", "load_tokenizer"]
