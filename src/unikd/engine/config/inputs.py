"""Arguments of the data and model factories derived from a config (a saved ``data`` section is a plain
dict, so evaluation of a checkpoint reads it the same way as a run)."""

from __future__ import annotations

from typing import Any


def dataset_kwargs(data_cfg: dict[str, Any], *, split: str, seed: int) -> dict[str, Any]:
    """``create_dataset`` keyword arguments from a ``data`` config section."""
    per_class = data_cfg.get("samples_per_class")
    if split == "test" and not data_cfg.get("subset_test", True):
        per_class = None
    return {
        "root": data_cfg.get("root"),
        "split": split,
        "samples_per_class": per_class,
        "val_split": data_cfg.get("val_split", 0),
        "seed": seed,
        "split_seed": data_cfg.get("split_seed"),
        "cache_dir": data_cfg.get("cache_dir"),
        "download": data_cfg.get("download", False),
        "resize": data_cfg.get("image_size"),
    }


def model_kwargs(in_chans: int) -> dict[str, Any]:
    """Extra ``create_model`` arguments: zoo models default to 3 input channels."""
    return {} if in_chans == 3 else {"in_chans": in_chans}
