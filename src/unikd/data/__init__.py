"""Datasets (``create_dataset``) and batch loaders with on-device, counter-hashed augmentation."""

from unikd.data.augment import AugmentConfig
from unikd.data.dataset import ArrayDataset
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
    "create_dataset",
    "create_loader",
    "list_datasets",
]
