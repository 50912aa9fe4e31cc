"""Guards of the training step: the non-finite loss check.

The objective itself (``ce_weight * CE + sum_i weight_i * ramp_i * term_i``) lives in
:mod:`unikd.engine.objective`; the step reuses its named values for this check instead of recomputing.
"""

from __future__ import annotations

import torch
from torch import Tensor


class NonFiniteLossError(RuntimeError):
    """Raised when a loss term is NaN or infinite; the message names the step and the term."""


def check_finite(values: Tensor, names: list[str], *, step: int, epoch: int, where: str) -> None:
    """Raise :class:`NonFiniteLossError` naming the first non-finite term (``values`` aligned with names)."""
    bad = [(n, float(v)) for n, v in zip(names, values.tolist()) if not torch.isfinite(torch.tensor(v))]
    if not bad:
        return
    # Prefer naming a component over the total: the total is non-finite because a component is.
    components = [b for b in bad if b[0] != "loss"] or bad
    name, value = components[0]
    raise NonFiniteLossError(
        f"non-finite loss at step {step} (epoch {epoch}): term {name!r} = {value}. "
        f"Training stopped; {where}. Lower optim.lr, enable optim.clip_grad_norm, use precision=fp32, "
        "or check the data and the teacher."
    )
