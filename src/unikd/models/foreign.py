"""``torchvision:<name>`` and ``timm:<name>`` models (the optional ``vision`` extra)."""

from __future__ import annotations

import importlib
import os
from typing import Any

from torch import nn

_EXTRA_HINT = "pip install 'unikd[vision]'"
_SOURCES = ("torchvision", "timm")


def _import(package: str) -> Any:
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise ImportError(
            f"model names starting with '{package}:' need the {package} package, which is not installed "
            f"({exc}); install the vision extra: {_EXTRA_HINT}"
        ) from exc
    except RuntimeError as exc:  # e.g. "operator torchvision::nms does not exist": a mismatched pair
        import torch

        raise ImportError(
            f"{package} is installed but does not load beside torch {torch.__version__} ({exc}); torchvision "
            "is built for one torch release: install a matching pair, e.g. pip install torch==2.14.1 "
            "torchvision==0.29.1, then pip install 'unikd[vision]'"
        ) from exc


def _replace_last_linear(model: nn.Module, num_classes: int) -> None:
    """Swap the final ``nn.Linear`` (the classifier) for a fresh one with ``num_classes`` outputs."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = (name, module)
    if last is None:
        raise ValueError(
            f"cannot find a final nn.Linear in {type(model).__name__} to resize to {num_classes}"
        )
    name, old = last
    parent_path, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, attr, nn.Linear(old.in_features, num_classes, bias=old.bias is not None))


def _offline(spec: str, err: Exception, where: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"pretrained weights for {spec!r} are not cached and could not be downloaded "
        f"({type(err).__name__}: {err}). Offline: {where}"
    )


def _torchvision(name: str, num_classes: int | None, pretrained: bool, **kwargs: Any) -> nn.Module:
    tv_models = _import("torchvision.models")
    available = tv_models.list_models()
    if name not in available:
        from ..registry import unknown_name_message

        raise ValueError(unknown_name_message("torchvision model", name, available))
    if not pretrained:
        return tv_models.get_model(name, weights=None, num_classes=num_classes or 1000, **kwargs)
    weights = tv_models.get_model_weights(name).DEFAULT
    try:
        # torchvision's own mechanism: torch.hub.load_state_dict_from_url into the torch hub cache.
        model = tv_models.get_model(name, weights=weights, **kwargs)
    except OSError as err:  # URLError / socket errors: no network
        import torch

        folder = os.path.join(torch.hub.get_dir(), "checkpoints")
        raise _offline(
            f"torchvision:{name}", err,
            f"put {weights.url.rsplit('/', 1)[-1]} (from {weights.url}) into {folder} (TORCH_HOME moves it)",
        ) from err
    # Pretrained weights come with their own head size; swap the head when another one is asked for.
    if num_classes is not None and num_classes != len(weights.meta.get("categories") or ()):
        _replace_last_linear(model, num_classes)
    return model


def _timm(name: str, num_classes: int | None, pretrained: bool, **kwargs: Any) -> nn.Module:
    timm = _import("timm")
    if not timm.is_model(name):
        from ..registry import unknown_name_message

        raise ValueError(unknown_name_message("timm model", name, timm.list_models()))
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if not pretrained:
        return timm.create_model(name, pretrained=False, **kwargs)
    try:
        # timm's own mechanism: the Hugging Face hub cache (HF_HUB_OFFLINE=1 reads only the cache).
        return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as err:  # hub/network errors come in many types (OSError, httpx, hub-specific)
        cfg = timm.models.get_pretrained_cfg(name)
        repo = getattr(cfg, "hf_hub_id", None) or name
        try:
            from huggingface_hub.constants import HF_HUB_CACHE as cache
        except ImportError:
            cache = "~/.cache/huggingface/hub"
        raise _offline(
            f"timm:{name}", err,
            f"fill the Hugging Face cache {cache} with the repository {repo} (e.g. `hf download {repo}` on a "
            "machine with a network, then copy the cache folder; HF_HOME moves it)",
        ) from err


def output_classes(model: nn.Module) -> int:
    """Output width of the model's final ``nn.Linear`` (its classifier)."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not last:
        raise ValueError(f"cannot find a final nn.Linear in {type(model).__name__}")
    return last[-1].out_features


def foreign_normalisation(spec: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Input mean/std the library's pretrained weights expect (ImageNet statistics for most)."""
    source, _, name = spec.partition(":")
    if source == "timm":
        cfg = _import("timm").models.get_pretrained_cfg(name)
        if cfg is not None and getattr(cfg, "mean", None):
            return tuple(cfg.mean), tuple(cfg.std)
    else:
        tv_models = _import("torchvision.models")
        t = tv_models.get_model_weights(name).DEFAULT.transforms()
        return tuple(t.mean), tuple(t.std)
    return (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def create_foreign_model(
    spec: str, num_classes: int | None = 100, pretrained: bool = False, **kwargs: Any
) -> nn.Module:
    """Build ``"torchvision:<name>"`` or ``"timm:<name>"`` with ``num_classes`` outputs.

    Random initialisation unless ``pretrained=True``: the library's weights through its own download
    mechanism (torch hub cache for torchvision, Hugging Face hub cache for timm); offline with an empty cache
    this raises ``FileNotFoundError`` naming the folder and file to provide. With pretrained weights a
    ``num_classes`` different from theirs gets a fresh head; ``None`` keeps the library's head. Extra
    ``kwargs`` go to the library's factory.
    """
    source, _, name = spec.partition(":")
    if source not in _SOURCES or not name:
        raise ValueError(
            f"model {spec!r}: expected 'torchvision:<name>' or 'timm:<name>' (e.g. 'torchvision:resnet18', "
            f"'timm:deit_tiny_patch16_224'), or a zoo name from unikd.models.list_models()"
        )
    build = _torchvision if source == "torchvision" else _timm
    return build(name, num_classes, bool(pretrained), **kwargs)
