"""The token losses by name: which classification kernel each one calls, its defaults and its checks.

One table drives the plain token functions, the module and the fused, chunked path, so all three call the
same kernel with the same hyperparameters. Token defaults are the language-model settings (temperature 1),
which can differ from the classification defaults of :mod:`unikd.losses`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from unikd.losses._common import check_positive, check_weight
from unikd.losses.dkd import dkd_kernel
from unikd.losses.jsd import check_beta, jsd_kernel
from unikd.losses.kd import kd_kernel
from unikd.losses.nkd import nkd_kernel
from unikd.losses.reverse_kl import reverse_kl_kernel
from unikd.losses.taid import check_interpolation, taid_kernel
from unikd.losses.uskd import RANK_MODES, uskd_kernel, uskd_target_stats
from unikd.registry import Registry


def _check_rank(value: str) -> str:
    if value not in RANK_MODES:
        raise ValueError(
            f"unknown rank {value!r}; use 'paper' (the paper's formula), 'legacy' (published code) or "
            "'student' (ranks from the final logits only, an ablation)"
        )
    return value


@dataclass(frozen=True)
class TokenLossSpec:
    """How one token loss maps onto its classification kernel.

    ``kernel(zs, zo, idx, denom, hp, stats)`` returns the loss summed over the given rows divided by
    ``denom``: ``zs``/``zo`` are ``(n, C)`` float32/float64 student and teacher (or weak) logits, ``idx``
    ``(n, 1)`` int64 targets, ``hp`` the checked hyperparameters, ``stats`` batch statistics from
    ``batch_stats`` (USKD) or None. ``checks`` maps every hyperparameter to its validator; ``defaults``
    gives each one a value.
    """

    name: str
    kernel: Callable[..., Tensor]
    defaults: dict[str, Any]
    checks: dict[str, Callable[[Any], Any]]
    uses_target: bool = False  # needs the next-token labels as its target class (dkd, nkd, uskd)
    trains_other: bool = False  # the second input receives gradients (uskd's weak logits)
    other_name: str = "teacher"
    sparse_ok: bool = True  # accepts a SparseTeacher as its second input
    batch_stats: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = field(default=None)

    def hyperparameters(self, given: dict[str, Any]) -> dict[str, Any]:
        """Defaults overridden by ``given``, each validated; unknown names raise ``ValueError``."""
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"unknown hyperparameter(s) {', '.join(unknown)} for token loss {self.name!r}; valid: "
                f"{', '.join(self.defaults) or '(none)'}"
            )
        out = {**self.defaults, **given}
        return {k: self.checks[k](v) for k, v in out.items()}


def _temperature(v: Any) -> float:
    return check_positive(v, "temperature")


def _kd(zs, zo, idx, denom, hp, stats):
    return kd_kernel(zs, zo, temperature=hp["temperature"], denom=denom)


def _reverse_kl(zs, zo, idx, denom, hp, stats):
    return reverse_kl_kernel(zs, zo, temperature=hp["temperature"], denom=denom)


def _jsd(zs, zo, idx, denom, hp, stats):
    return jsd_kernel(zs, zo, beta=hp["beta"], temperature=hp["temperature"], denom=denom)


def _dkd(zs, zo, idx, denom, hp, stats):
    return dkd_kernel(
        zs, zo, idx, alpha=hp["alpha"], beta=hp["beta"], temperature=hp["temperature"], denom=denom
    )


def _nkd(zs, zo, idx, denom, hp, stats):
    return nkd_kernel(zs, zo, idx, temperature=hp["temperature"], gamma=hp["gamma"], denom=denom)


def _taid(zs, zo, idx, denom, hp, stats):
    return taid_kernel(zs, zo, t=hp["t"], temperature=hp["temperature"], denom=denom)


def _uskd(zs, zo, idx, denom, hp, stats):
    ones = torch.ones(idx.shape, dtype=zs.dtype, device=zs.device)
    mean = None if stats is None else stats[0] / stats[1].clamp_min(1)
    return uskd_kernel(
        zs,
        zo,
        idx,
        ones,
        None,
        alpha=hp["alpha"],
        beta=hp["beta"],
        mu=hp["mu"],
        rank=hp["rank"],
        denom=denom,
        s_t2_mean=mean,
    )


def _uskd_stats(zs: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    return uskd_target_stats(zs, idx, torch.ones(idx.shape, dtype=zs.dtype, device=zs.device))


TOKEN_LOSSES: Registry[TokenLossSpec] = Registry("token loss")
for _spec in (
    TokenLossSpec("kd", _kd, {"temperature": 1.0}, {"temperature": _temperature}),
    TokenLossSpec("reverse_kl", _reverse_kl, {"temperature": 1.0}, {"temperature": _temperature}),
    TokenLossSpec(
        "jsd", _jsd, {"beta": 0.5, "temperature": 1.0}, {"beta": check_beta, "temperature": _temperature}
    ),
    TokenLossSpec(
        "dkd",
        _dkd,
        {"alpha": 1.0, "beta": 0.5, "temperature": 1.0},
        {
            "alpha": lambda v: check_weight(v, "alpha"),
            "beta": lambda v: check_weight(v, "beta"),
            "temperature": _temperature,
        },
        uses_target=True,
    ),
    TokenLossSpec(
        "nkd",
        _nkd,
        {"temperature": 1.0, "gamma": 1.5},
        {"temperature": _temperature, "gamma": lambda v: check_weight(v, "gamma")},
        uses_target=True,
    ),
    TokenLossSpec(
        "uskd",
        _uskd,
        {"alpha": 1.0, "beta": 0.1, "mu": 0.005, "rank": "paper"},
        {
            "alpha": lambda v: check_weight(v, "alpha"),
            "beta": lambda v: check_weight(v, "beta"),
            "mu": lambda v: check_weight(v, "mu"),
            "rank": _check_rank,
        },
        uses_target=True,
        trains_other=True,
        other_name="weak",
        sparse_ok=False,
        batch_stats=_uskd_stats,
    ),
    TokenLossSpec(
        "taid", _taid, {"t": 0.4, "temperature": 1.0}, {"t": check_interpolation, "temperature": _temperature}
    ),
):
    TOKEN_LOSSES.register(_spec.name, _spec)


def get_spec(name: str) -> TokenLossSpec:
    """The spec registered as ``name`` (``ValueError`` with the closest name otherwise)."""
    if not isinstance(name, str):
        raise ValueError(f"the loss name must be a string, got {type(name).__name__}")
    return TOKEN_LOSSES.get(name)


def list_token_losses() -> list[str]:
    """The token loss names, sorted."""
    return TOKEN_LOSSES.names()


__all__ = ["TOKEN_LOSSES", "TokenLossSpec", "get_spec", "list_token_losses"]
