"""Datasets (``create_dataset``) and batch loaders with on-device, counter-hashed augmentation."""

from unikd.data.augment import AugmentConfig
from unikd.data.dataset import ArrayDataset
from unikd.data.drop import apply_drop, drop_classes, resolve_drop_classes
from unikd.data.factory import DATASETS, create_dataset, create_loader, list_datasets
from unikd.data.loader import Batch, InMemoryLoader
from unikd.data.torch_loader import FolderDataset, TorchLoader

__all__ = [
    "DATASETS",
    "ArrayDataset",
    "AugmentConfig",
    "Batch",
    "FolderDataset",
    "InMemoryLoader",
    "TorchLoader",
    "apply_drop",
    "create_dataset",
    "create_loader",
    "drop_classes",
    "list_datasets",
    "resolve_drop_classes",
]
