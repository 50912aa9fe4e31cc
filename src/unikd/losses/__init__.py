"""Distillation losses: pure functions plus thin ``nn.Module`` wrappers, built by name with ``create_loss``.

Every function returns the batch mean as a 0-dim float32 tensor and leaves out the ordinary cross-entropy,
which the caller adds. ``target`` is int64 ``(N,)`` class indices or float ``(N, C)`` soft labels.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..registry import Registry
from .dkd import DKDLoss, dkd_loss
from .jsd import JSDLoss, jsd_loss
from .kd import KDLoss, kd_loss
from .nkd import NKDLoss, nkd_loss
from .reverse_kl import ReverseKLLoss, reverse_kl_loss
from .taid import TAIDLoss, TAIDSchedule, taid_loss
from .tfkd import TfKDLoss, tfkd_loss
from .uskd import USKDLoss, uskd_loss
from .zipf_ls import ZipfLSLoss, zipf_ls_loss

LOSSES: Registry[nn.Module] = Registry("loss")
LOSSES.register("kd", KDLoss)
LOSSES.register("dkd", DKDLoss)
LOSSES.register("nkd", NKDLoss)
LOSSES.register("uskd", USKDLoss)
LOSSES.register("tfkd", TfKDLoss)
LOSSES.register("zipf_ls", ZipfLSLoss)
LOSSES.register("reverse_kl", ReverseKLLoss)
LOSSES.register("jsd", JSDLoss)
LOSSES.register("taid", TAIDLoss)

# The functional form of each registered loss (its keyword-only arguments are the hyperparameters).
LOSS_FUNCTIONS = {
    "kd": kd_loss,
    "dkd": dkd_loss,
    "nkd": nkd_loss,
    "uskd": uskd_loss,
    "tfkd": tfkd_loss,
    "zipf_ls": zipf_ls_loss,
    "reverse_kl": reverse_kl_loss,
    "jsd": jsd_loss,
    "taid": taid_loss,
}


def create_loss(name: str, **kwargs: Any) -> nn.Module:
    """Build the loss module registered as ``name`` (``uskd`` also needs ``in_features`` and ``num_classes``).

    Unknown names raise ``ValueError`` with the closest valid name; unknown keyword arguments raise
    ``ValueError`` listing the valid ones.
    """
    factory = LOSSES.get(name)
    try:
        return factory(**kwargs)
    except TypeError as err:
        import inspect

        valid = [p for p in inspect.signature(factory).parameters if p != "self"]
        raise ValueError(
            f"bad arguments for loss {name!r}: {err}. Valid arguments: {', '.join(valid)}"
        ) from None


def list_losses() -> list[str]:
    """The registered loss names, sorted."""
    return LOSSES.names()


__all__ = [
    "LOSSES",
    "LOSS_FUNCTIONS",
    "DKDLoss",
    "JSDLoss",
    "KDLoss",
    "NKDLoss",
    "ReverseKLLoss",
    "TAIDLoss",
    "TAIDSchedule",
    "TfKDLoss",
    "USKDLoss",
    "ZipfLSLoss",
    "create_loss",
    "dkd_loss",
    "jsd_loss",
    "kd_loss",
    "list_losses",
    "nkd_loss",
    "reverse_kl_loss",
    "taid_loss",
    "tfkd_loss",
    "uskd_loss",
    "zipf_ls_loss",
]
