"""Distillation losses: pure functions plus thin ``nn.Module`` wrappers, built by name with ``create_loss``.

Every function returns the batch mean as a 0-dim float32 tensor and leaves out the ordinary cross-entropy,
which the caller adds. ``target`` is int64 ``(N,)`` class indices or float ``(N, C)`` soft labels.

Every module declares ``requires``: the names of its forward() arguments after ``student_logits`` (the
vocabulary of the training harness, docs/architecture.md), and feature methods also ``taps`` (which stage
outputs they read). A new method is one file here plus one ``LOSSES.register`` line.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..registry import Registry
from .abkd import ABKDLoss, abkd_loss
from .at import ATLoss, at_loss
from .bdkd import BDKDLoss, bdkd_loss, bdkd_peer_loss
from .crd import CRDLoss, crd_loss
from .ctkd import CTKDLoss, CTKDTemperature, ctkd_loss
from .dist import DISTLoss, dist_loss
from .dkd import DKDLoss, dkd_loss
from .dml import DMLLoss, dml_loss
from .extended_kd import ExtendedKDLoss, SegmentConnector, extended_kd_loss
from .fitnet import FitNetLoss, HintRegressor, fitnet_loss
from .jsd import JSDLoss, jsd_loss
from .kd import KDLoss, kd_loss
from .kd3_align import KD3AlignLoss, kd3_align_loss
from .kd3_mixdist import KD3MixDistLoss, kd3_mixdist_loss, mix_distribution
from .kd3_select import kd3_select_weights, kd3_teacher_share
from .nd import NDLoss, nd_loss
from .nkd import NKDLoss, nkd_loss, nkd_nontarget_kl
from .pkt import PKTLoss, pkt_loss
from .reverse_kl import ReverseKLLoss, reverse_kl_loss
from .reviewkd import ReviewKDLoss, hcl_loss
from .rkd import RKDLoss, rkd_loss
from .sp import SPLoss, sp_loss
from .standardize import standardize_logits
from .taid import TAIDLoss, TAIDSchedule, taid_loss
from .tfkd import TfKDLoss, tfkd_loss
from .ttm import TTMLoss, ttm_loss
from .uskd import USKDLoss, uskd_loss
from .uskd_ranks import uskd_nontarget_kl
from .wttm import WTTMLoss, wttm_loss
from .zipf_ls import ZipfLSLoss, zipf_ls_loss

LOSSES: Registry[nn.Module] = Registry("loss")
LOSSES.register("kd", KDLoss)
LOSSES.register("dkd", DKDLoss)
LOSSES.register("nkd", NKDLoss)
LOSSES.register("uskd", USKDLoss)
LOSSES.register("tfkd", TfKDLoss)
LOSSES.register("zipf_ls", ZipfLSLoss)
LOSSES.register("dist", DISTLoss)
LOSSES.register("ttm", TTMLoss)
LOSSES.register("wttm", WTTMLoss)
LOSSES.register("abkd", ABKDLoss)
LOSSES.register("ctkd", CTKDLoss)
LOSSES.register("fitnet", FitNetLoss)
LOSSES.register("at", ATLoss)
LOSSES.register("dml", DMLLoss)
LOSSES.register("bdkd", BDKDLoss)
LOSSES.register("rkd", RKDLoss)
LOSSES.register("pkt", PKTLoss)
LOSSES.register("sp", SPLoss)
LOSSES.register("crd", CRDLoss)
LOSSES.register("reviewkd", ReviewKDLoss)
LOSSES.register("nd", NDLoss)
LOSSES.register("reverse_kl", ReverseKLLoss)
LOSSES.register("jsd", JSDLoss)
LOSSES.register("taid", TAIDLoss)
LOSSES.register("extended_kd", ExtendedKDLoss)
LOSSES.register("kd3_align", KD3AlignLoss)
LOSSES.register("kd3_mixdist", KD3MixDistLoss)

# The functional form of the losses whose function is the whole method (its keyword-only arguments are the
# module's hyperparameters). CRD, ReviewKD and ND are not listed: their functions (crd_loss, hcl_loss,
# nd_loss) compute the loss from state the module holds (banks, fusion modules, class means); nor are KD³'s
# (kd3_align_loss, kd3_mixdist_loss), which take the module's projector, heads and second student pass.
LOSS_FUNCTIONS = {
    "kd": kd_loss,
    "dkd": dkd_loss,
    "nkd": nkd_loss,
    "uskd": uskd_loss,
    "tfkd": tfkd_loss,
    "zipf_ls": zipf_ls_loss,
    "dist": dist_loss,
    "ttm": ttm_loss,
    "wttm": wttm_loss,
    "abkd": abkd_loss,
    "ctkd": ctkd_loss,
    "fitnet": fitnet_loss,
    "at": at_loss,
    "dml": dml_loss,
    "bdkd": bdkd_loss,
    "rkd": rkd_loss,
    "pkt": pkt_loss,
    "sp": sp_loss,
    "reverse_kl": reverse_kl_loss,
    "jsd": jsd_loss,
    "taid": taid_loss,
    "extended_kd": extended_kd_loss,
}


def create_loss(name: str, **kwargs: Any) -> nn.Module:
    """Build the loss module registered as ``name`` with its hyper-parameters and context arguments
    (``uskd`` needs ``in_features`` and ``num_classes``; ``crd``, ``reviewkd`` and ``nd`` need the shapes and
    sizes listed in their docstrings).

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
    "ABKDLoss",
    "CTKDLoss",
    "CTKDTemperature",
    "DISTLoss",
    "TTMLoss",
    "WTTMLoss",
    "abkd_loss",
    "ctkd_loss",
    "dist_loss",
    "standardize_logits",
    "ttm_loss",
    "wttm_loss",
    "ATLoss",
    "BDKDLoss",
    "CRDLoss",
    "DKDLoss",
    "DMLLoss",
    "ExtendedKDLoss",
    "FitNetLoss",
    "HintRegressor",
    "JSDLoss",
    "KD3AlignLoss",
    "KD3MixDistLoss",
    "KDLoss",
    "NDLoss",
    "NKDLoss",
    "PKTLoss",
    "RKDLoss",
    "ReviewKDLoss",
    "SPLoss",
    "SegmentConnector",
    "ReverseKLLoss",
    "TAIDLoss",
    "TAIDSchedule",
    "TfKDLoss",
    "USKDLoss",
    "ZipfLSLoss",
    "at_loss",
    "bdkd_loss",
    "bdkd_peer_loss",
    "create_loss",
    "crd_loss",
    "dkd_loss",
    "dml_loss",
    "extended_kd_loss",
    "fitnet_loss",
    "hcl_loss",
    "jsd_loss",
    "kd3_align_loss",
    "kd3_mixdist_loss",
    "kd3_select_weights",
    "kd3_teacher_share",
    "kd_loss",
    "list_losses",
    "mix_distribution",
    "nd_loss",
    "nkd_loss",
    "nkd_nontarget_kl",
    "pkt_loss",
    "rkd_loss",
    "sp_loss",
    "reverse_kl_loss",
    "taid_loss",
    "tfkd_loss",
    "uskd_loss",
    "uskd_nontarget_kl",
    "zipf_ls_loss",
]
