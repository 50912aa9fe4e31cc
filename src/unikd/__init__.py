"""unikd: knowledge distillation and self-distillation for classifiers.

The public API: the losses (functions and modules), the model zoo, datasets and the in-memory loader, and
the training entry points. ``unikd.engine`` holds the rest of the harness (checkpoints, schedules, ...).
"""

__version__ = "0.1.0"

from unikd.data import ArrayDataset, Batch, InMemoryLoader, create_dataset, create_loader, list_datasets
from unikd.engine import evaluate, evaluate_checkpoint, load_config, train
from unikd.losses import (
    ABKDLoss,
    CTKDLoss,
    CTKDTemperature,
    DISTLoss,
    DKDLoss,
    KDLoss,
    NKDLoss,
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
    kd_loss,
    list_losses,
    nkd_loss,
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
]
