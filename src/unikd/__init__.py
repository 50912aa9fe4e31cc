"""unikd: knowledge distillation and self-distillation for classifiers.

The public API: the losses (functions and modules), the model zoo, datasets and the in-memory loader, and
the training entry points. ``unikd.engine`` holds the rest of the harness (checkpoints, schedules, ...);
``unikd.token`` the token-level losses for language models (its own namespace: ``unikd.token.kd_loss`` is
the per-token form of ``unikd.kd_loss``).
"""

__version__ = "0.1.0"

from unikd import token
from unikd.data import ArrayDataset, Batch, InMemoryLoader, create_dataset, create_loader, list_datasets
from unikd.engine import evaluate, evaluate_checkpoint, load_config, train
from unikd.losses import (
    ABKDLoss,
    CTKDLoss,
    CTKDTemperature,
    DISTLoss,
    DKDLoss,
    JSDLoss,
    KDLoss,
    NKDLoss,
    ReverseKLLoss,
    TAIDLoss,
    TfKDLoss,
    TTMLoss,
    USKDLoss,
    WTTMLoss,
    ZipfLSLoss,
    abkd_loss,
    create_loss,
    ctkd_loss,
    dist_loss,
    dkd_loss,
    jsd_loss,
    kd_loss,
    list_losses,
    nkd_loss,
    reverse_kl_loss,
    taid_loss,
    tfkd_loss,
    ttm_loss,
    uskd_loss,
    wttm_loss,
    zipf_ls_loss,
)
from unikd.models import FeatureTap, create_model, default_feature, list_models, pool_feature

__all__ = [
    "__version__",
    # losses
    "kd_loss",
    "dkd_loss",
    "nkd_loss",
    "uskd_loss",
    "tfkd_loss",
    "zipf_ls_loss",
    "dist_loss",
    "ttm_loss",
    "wttm_loss",
    "abkd_loss",
    "ctkd_loss",
    "reverse_kl_loss",
    "jsd_loss",
    "taid_loss",
    "KDLoss",
    "DKDLoss",
    "NKDLoss",
    "USKDLoss",
    "TfKDLoss",
    "ZipfLSLoss",
    "DISTLoss",
    "TTMLoss",
    "WTTMLoss",
    "ABKDLoss",
    "CTKDLoss",
    "CTKDTemperature",
    "ReverseKLLoss",
    "JSDLoss",
    "TAIDLoss",
    "create_loss",
    "list_losses",
    # models
    "create_model",
    "list_models",
    "FeatureTap",
    "default_feature",
    "pool_feature",
    # data
    "create_dataset",
    "create_loader",
    "list_datasets",
    "ArrayDataset",
    "Batch",
    "InMemoryLoader",
    # training
    "load_config",
    "train",
    "evaluate",
    "evaluate_checkpoint",
    # token-level losses for language models (a namespace)
    "token",
]
