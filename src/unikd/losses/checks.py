"""The switch for the input checks of the losses that need a host sync.

Two kinds of input checks guard every loss. Checks of metadata (type, dtype, shape, device, the
hyperparameters) are plain Python on values the host already has: they cost nothing and always run. Checks
of *values* (class indices in range, soft labels finite, non-negative and summing to 1, permutations,
non-negative weights, sparse-teacher ids) must read the tensor's contents on the host: on a GPU each one is a
host sync that stalls the launch queue and keeps a step from being captured in a CUDA graph.

The mode decides whether the value checks run:

- ``"full"`` (the default): every value check runs in eager mode; bad values raise a ``ValueError`` naming
  the problem and its fix.
- ``"off"``: value checks are skipped, so a loss's eager forward and backward issue no host sync. Metadata
  checks still run (that is why there is no mode between the two: nothing else costs a sync). Bad values
  then go unreported, but non-finite inputs still give a NaN loss (``nan_if_nonfinite``, which needs no
  sync), so a diverging run still stops.

Under ``torch.compile`` tracing the value checks are never traced, whatever the mode (a data-dependent
branch would break the graph); a caller that wants them for a compiled step runs its first steps eagerly
under ``"full"``. The mode is process-wide (one training run per process): set it with :func:`set_checks`
or for a block with :func:`checks`; :func:`checks_enabled` is what the losses ask.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

CHECK_MODES = ("full", "off")

_mode = "full"


def _valid(mode: object) -> str:
    if mode not in CHECK_MODES:
        raise ValueError(
            f"checks must be one of {', '.join(repr(m) for m in CHECK_MODES)}, got {mode!r}: 'full' runs the "
            "value checks of the losses (host syncs), 'off' skips them (sync-free steps)"
        )
    return str(mode)


def get_checks() -> str:
    """The current mode: ``"full"`` or ``"off"``."""
    return _mode


def set_checks(mode: str) -> str:
    """Set the mode for the whole process; returns the previous one (to restore it later)."""
    global _mode
    previous, _mode = _mode, _valid(mode)
    return previous


@contextmanager
def checks(mode: str) -> Iterator[None]:
    """Run a block under ``mode`` and restore the previous mode after it, also on an exception."""
    previous = set_checks(mode)
    try:
        yield
    finally:
        set_checks(previous)


def checks_enabled() -> bool:
    """Whether value checks (those that need a host sync) run now: mode ``"full"`` and not tracing."""
    # is_compiling first: dynamo then never reads the mode, so changing it recompiles nothing
    return not torch.compiler.is_compiling() and _mode == "full"


__all__ = ["CHECK_MODES", "checks", "checks_enabled", "get_checks", "set_checks"]
