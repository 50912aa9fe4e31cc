"""Reading a published teacher file with ``weights_only`` loading: only tensors and the few harmless globals
such files hold (``entry`` is the registry's TeacherWeights entry, naming the state's key)."""

from __future__ import annotations

import io
from typing import Any

import torch


def _allowed_globals() -> list[Any]:
    """What published teacher pickles hold besides tensors: the training script's argparse options and
    numpy scalars (the accuracy); allowed for ``weights_only`` loading, nothing else is."""
    import argparse

    import numpy as np

    scalar = np.float64(0).__reduce__()[0]
    dtypes = [type(np.dtype(t)) for t in ("float64", "float32", "int64")]
    return [argparse.Namespace, scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype, *dtypes]


def read_state(raw: bytes, entry: Any) -> dict[str, torch.Tensor]:
    safe = getattr(torch.serialization, "safe_globals", None)
    if safe is None:
        raise RuntimeError(
            f"loading teacher {entry.name!r} needs torch >= 2.4 (torch.serialization.safe_globals)"
        )
    with safe(_allowed_globals()):
        obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    state = obj[entry.state_key] if entry.state_key is not None and isinstance(obj, dict) else obj
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"teacher {entry.name!r}: the file does not hold a state dict under {entry.state_key!r}"
        )
    return state
