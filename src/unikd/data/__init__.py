"""Datasets (``create_dataset``) and batch loaders with on-device, counter-hashed augmentation."""

from unikd.data.augment import AugmentConfig
from unikd.data.dataset import ArrayDataset
from unikd.data.drop import apply_drop, drop_classes, resolve_drop_classes
from unikd.data.factory import DATASETS, create_dataset, create_loader, list_datasets
from unikd.data.loader import Batch, InMemoryLoader
from unikd.data.torch_loader import FolderDataset, TorchLoader
from unikd.data.transfer import TransferSpec, build_transfer_set, parse_transfer

__all__ = [
    "DATASETS",
    "ArrayDataset",
    "AugmentConfig",
    "Batch",
    "FolderDataset",
    "InMemoryLoader",
    "TorchLoader",
    "TransferSpec",
    "apply_drop",
    "build_transfer_set",
    "create_dataset",
    "create_loader",
    "drop_classes",
    "list_datasets",
    "parse_transfer",
    "resolve_drop_classes",
]
