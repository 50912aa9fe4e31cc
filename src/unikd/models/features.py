"""Reaching intermediate features of any model: ``FeatureTap``, ``pool_feature``, ``default_feature``."""

from __future__ import annotations

import difflib
from types import TracebackType
from typing import Any

import torch
from torch import Tensor, nn


def _module_paths(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


def _candidates(model: nn.Module, limit: int = 12) -> list[str]:
    """Short, useful module paths to suggest: containers at depth <= 2 (stages, block lists, heads)."""
    paths = [
        n for n, m in model.named_modules() if n and n.count(".") <= 1 and any(True for _ in m.children())
    ]
    if not paths:
        paths = [n for n in _module_paths(model) if n.count(".") == 0]
    return paths[:limit]


def resolve_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at dotted ``path``; a clear ``ValueError`` listing close names when it does not exist."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"feature module path must be a non-empty string, got {path!r}")
    try:
        return model.get_submodule(path)
    except AttributeError:
        paths = _module_paths(model)
        close = difflib.get_close_matches(path, paths, n=5, cutoff=0.5) or _candidates(model)
        raise ValueError(
            f"{type(model).__name__} has no submodule {path!r}. Close module paths: {', '.join(close)} "
            f"(see model.named_modules() for all {len(paths)})."
        ) from None


class FeatureTap:
    """Capture the output of ``model``'s submodule ``path`` with a forward hook.

    ``tap.output`` is the submodule's output from the latest forward pass of ``model`` (gradients flow
    through it). Use as a context manager or call :meth:`remove` to detach the hooks::

        with FeatureTap(model, "layer2") as tap:
            logits = model(x)
            feat = pool_feature(tap.output)   # (N, C)

    ``capture="input"`` captures the submodule's (first positional) input instead, e.g. the pre-classifier
    embedding as the input of the final ``nn.Linear``.
    """

    def __init__(self, model: nn.Module, path: str, *, capture: str = "output") -> None:
        if capture not in ("output", "input"):
            raise ValueError(f"capture must be 'output' or 'input', got {capture!r}")
        self.model = model
        self.path = path
        self.capture = capture
        self.module = resolve_module(model, path)
        self._output: Any = None
        hook = (
            self.module.register_forward_hook(self._capture)
            if capture == "output"
            else self.module.register_forward_pre_hook(self._capture_input)
        )
        self._handles = [
            hook,
            # Clear at the start of every forward of the whole model so a stale tensor from an earlier pass
            # (or one where the submodule was skipped) is never returned.
            model.register_forward_pre_hook(self._clear),
        ]

    def _capture(self, module: nn.Module, args: Any, output: Any) -> None:
        self._output = output

    def _capture_input(self, module: nn.Module, args: Any) -> None:
        self._output = args[0] if args else None

    def _clear(self, module: nn.Module, args: Any) -> None:
        self._output = None

    @property
    def output(self) -> Any:
        """The captured output; ``RuntimeError`` when the submodule did not run in the latest forward."""
        if self._output is None:
            state = "was removed" if not self._handles else "has not seen a forward pass of the model yet"
            raise RuntimeError(
                f"FeatureTap({self.path!r}) {state}; "
                "run model(x) with the tap attached before reading .output"
            )
        return self._output

    @property
    def active(self) -> bool:
        """Whether the hooks are still attached."""
        return bool(self._handles)

    def remove(self) -> None:
        """Detach the hooks and drop the captured tensor (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._output = None

    def __enter__(self) -> FeatureTap:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()

    def __repr__(self) -> str:
        what = "" if self.capture == "output" else ", capture='input'"
        return f"FeatureTap({type(self.model).__name__}, {self.path!r}{what}, active={self.active})"


def pool_feature(t: Tensor) -> Tensor:
    """Reduce a feature to ``(N, D)``: ``(N, C, H, W)`` -> global average pool; ``(N, L, D)`` -> cls token
    ``t[:, 0]`` (ViT-style token sequences); ``(N, D)`` -> unchanged."""
    if not isinstance(t, Tensor):
        raise ValueError(
            f"pool_feature expects a tensor, got {type(t).__name__}; tap a submodule that returns one tensor"
        )
    if t.dim() == 4:
        return t.mean(dim=(2, 3))
    if t.dim() == 3:
        return t[:, 0]
    if t.dim() == 2:
        return t
    raise ValueError(f"pool_feature expects a 2-D, 3-D or 4-D tensor, got shape {tuple(t.shape)}")


def _is_timm_vit(model: nn.Module) -> bool:
    blocks = getattr(model, "blocks", None)
    return (
        isinstance(blocks, (nn.Sequential, nn.ModuleList))
        and len(blocks) >= 2
        and isinstance(getattr(model, "cls_token", None), Tensor)
    )


def default_feature(model: nn.Module) -> str:
    """Module path of the default USKD weak-head feature of ``model``.

    * zoo models: their ``default_feature`` attribute (the second-to-last stage);
    * ResNet-like models with ``layer1``..``layer4`` (torchvision and timm ResNets): ``"layer3"``;
    * timm ViTs with a cls token: ``"blocks.{L // 2 - 1}"`` (the cls token after the middle block,
      via :func:`pool_feature`).

    Anything else raises ``ValueError`` asking for an explicit ``feature=<module path>``.
    """
    declared = getattr(model, "default_feature", None)
    if isinstance(declared, str) and declared:
        resolve_module(model, declared)
        return declared
    children = dict(model.named_children())
    if all(f"layer{i}" in children for i in range(1, 5)):
        return "layer3"
    if _is_timm_vit(model):
        return f"blocks.{len(model.blocks) // 2 - 1}"
    raise ValueError(
        f"no default USKD feature is known for {type(model).__name__}; set feature=<module path> "
        f"(the config key `feature`) to a module whose output is (N, C, H, W), (N, L, D) or (N, D). "
        f"Candidates: {', '.join(_candidates(model)) or '(model has no submodules)'}"
    )


@torch.no_grad()
def feature_dim(model: nn.Module, path: str | None = None, input_size: tuple[int, ...] = (3, 32, 32)) -> int:
    """Width ``D`` of ``pool_feature`` of submodule ``path`` (default: :func:`default_feature`), measured with
    one forward pass of a zero batch of 2 (in eval mode, so BN statistics are untouched)."""
    path = default_feature(model) if path is None else path
    was_training = model.training
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    model.eval()
    try:
        with FeatureTap(model, path) as tap:
            model(torch.zeros((2, *input_size), device=device, dtype=dtype))
            return int(pool_feature(tap.output).shape[1])
    finally:
        model.train(was_training)
