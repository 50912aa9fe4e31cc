"""Input checks shared by the feature losses (embeddings, feature maps, shape lists, dataset indices).

Like the logit losses, feature losses compute in float32 for half inputs and keep float64 (for gradcheck).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ._common import as_float32
from .checks import checks_enabled


def check_embedding(x: object, name: str, *, min_rows: int = 1) -> Tensor:
    """A floating ``(N, D)`` tensor with N >= ``min_rows`` and D >= 1; returned upcast to float32 if half."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (N, D), got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got {x.dtype}; cast it with .float()")
    if x.dim() != 2:
        raise ValueError(
            f"{name} must have shape (N, D), got {tuple(x.shape)}; pool feature maps to vectors first "
            "(e.g. unikd.models.pool_feature) or flatten them with x.flatten(1)"
        )
    if x.shape[0] < min_rows:
        raise ValueError(
            f"{name} has N={x.shape[0]} rows; this loss compares samples with each other and needs a batch "
            f"of at least {min_rows}"
        )
    if x.shape[1] == 0:
        raise ValueError(f"{name} has D=0 features")
    return as_float32(x)


def check_feature(x: object, name: str, *, min_rows: int = 1, dims: tuple[int, ...] = (2, 3, 4)) -> Tensor:
    """A floating tensor ``(N, ...)`` whose number of dimensions is in ``dims``; upcast to float32 if half."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got {x.dtype}; cast it with .float()")
    if x.dim() not in dims:
        want = " or ".join(f"{d}-D" for d in dims)
        raise ValueError(f"{name} must be {want} (N first), got shape {tuple(x.shape)}")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} has N={x.shape[0]} rows; this loss needs a batch of at least {min_rows}")
    return as_float32(x)


def check_map(x: object, name: str) -> Tensor:
    """A floating tensor ``(N, ...)`` with N >= 1 and at least 2 dimensions (a feature map or a flattened
    one), returned as given: callers decide the compute dtype."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got {x.dtype}; cast it with .float()")
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, ...) with N >= 1, got {tuple(x.shape)}")
    return x


def check_same_batch(a: Tensor, b: Tensor, a_name: str, b_name: str) -> None:
    """Student and teacher tensors must hold the same batch on one device."""
    if a.device != b.device:
        raise ValueError(f"{a_name} is on {a.device} but {b_name} on {b.device}; move both to one device")
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"batch mismatch: {a_name} has N={a.shape[0]} rows but {b_name} has N={b.shape[0]}; pass the "
            "outputs for the same batch"
        )


def common_dtype(*xs: Tensor) -> torch.dtype:
    """float64 when any input is float64 (gradcheck), else float32."""
    return torch.float64 if any(x.dtype == torch.float64 for x in xs) else torch.float32


def check_feature_list(xs: object, name: str) -> list[Tensor]:
    """A non-empty list/tuple of tensors (the outputs at a module's taps)."""
    if isinstance(xs, Tensor) or not isinstance(xs, Sequence) or len(xs) == 0:
        got = type(xs).__name__ if not isinstance(xs, Sequence) else f"{len(xs)} entries"
        raise ValueError(f"{name} must be a non-empty list of tensors (one per tap), got {got}")
    return list(xs)


def check_shapes(shapes: object, name: str, *, rank: int | None = None) -> list[tuple[int, ...]]:
    """A non-empty list of per-sample shapes (tuples of positive ints), e.g. ``[(64, 32, 32), ...]``."""
    if not isinstance(shapes, Sequence) or isinstance(shapes, (str, bytes)) or len(shapes) == 0:
        raise ValueError(
            f"{name} must be a non-empty list of per-sample shapes such as [(64, 32, 32), (128, 16, 16)], "
            f"got {shapes!r}"
        )
    out = []
    for i, s in enumerate(shapes):
        dims = (
            tuple(s.tolist() if isinstance(s, Tensor) else s) if isinstance(s, (Sequence, Tensor)) else None
        )
        if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
            raise ValueError(f"{name}[{i}] must be a tuple of positive ints (C, H, W), got {s!r}")
        if rank is not None and len(dims) != rank:
            raise ValueError(f"{name}[{i}] must have {rank} entries (C, H, W), got {dims}")
        out.append(dims)
    return out


def check_count(value: object, name: str, *, minimum: int = 1) -> int:
    """A plain int >= ``minimum`` (dimensions, sample counts)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def check_unit_interval(value: object, name: str) -> float:
    """A finite number in [0, 1) (momenta)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must lie in [0, 1), got {value!r}")
    return float(value)


def check_indices(indices: object, n: int, num_samples: int, device: torch.device) -> Tensor:
    """int64 ``(N,)`` dataset indices in ``[0, num_samples)`` on ``device``."""
    if not isinstance(indices, Tensor) or indices.is_floating_point() or indices.dtype == torch.bool:
        got = indices.dtype if isinstance(indices, Tensor) else type(indices).__name__
        raise ValueError(f"indices must be an int64 tensor of dataset indices, got {got}")
    if indices.shape != (n,):
        raise ValueError(f"indices must have shape (N,) = ({n},), got {tuple(indices.shape)}")
    if indices.device != device:
        raise ValueError(f"indices are on {indices.device} but the embeddings on {device}; move them")
    if checks_enabled() and n and bool(((indices < 0) | (indices >= num_samples)).any()):
        raise ValueError(
            f"indices out of range: dataset indices must lie in [0, {num_samples - 1}] (num_samples="
            f"{num_samples}), got min {int(indices.min())} and max {int(indices.max())}; num_samples must be "
            "the training-set size"
        )
    return indices.long()
