"""Reading weights from any file a run may be given (a unikd checkpoint, a plain ``state_dict``, a
``.safetensors`` file) and loading them into a model with errors that say what does not fit.

Evaluation, the final test, the teacher, pretrained weights and online training all read weights through
these two functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn

from unikd.engine.run.checkpoint import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    load_state_dict_any,
    safetensors_metadata,
)
from unikd.engine.run.identity import check_own_folder

__all__ = ["load_weights", "read_weights"]


def read_weights(path: str | Path, *, what: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Weights and, for unikd checkpoints, their metadata (``model_name``, ``num_classes``, ``data``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist; check the path")
    if path.suffix == ".safetensors":
        state = load_state_dict_any(path)
        check_own_folder(path, safetensors_metadata(path).get("run_id"), what)
        return state, {}
    obj = load_checkpoint(path)
    if isinstance(obj, dict):
        check_own_folder(path, obj.get("run_id"), what)
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        keys = ("model_name", "num_classes", "in_chans", "input_size", "data", "method", "epoch")
        meta = {k: obj.get(k) for k in keys}
        return dict(obj["model"]), meta
    return load_state_dict_any(path), {}


def load_weights(model: nn.Module, state: dict[str, Tensor], *, path: str | Path, what: str) -> None:
    """``load_state_dict(strict=True)`` that explains missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (e.g. {'; '.join(shapes[:2])})")
        raise ValueError(
            f"{what} {str(path)!r} does not fit model {type(model).__name__}: {'; '.join(parts)}. "
            "Is it a checkpoint of a different model or class count? Check the model name and num_classes."
        )
    model.load_state_dict(state, strict=True)
