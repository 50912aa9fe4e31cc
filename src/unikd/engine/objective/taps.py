"""Where the objective's terms read features: tap kinds, their default module paths per model family, and
the :class:`TapSet` that captures them during the one forward pass of each network.

A loss module names a tap KIND (``taps = "hint"``); this file turns it into module paths of a given model:
the config's ``taps.student.<kind>`` / ``taps.teacher.<kind>`` when set, else the model family's default
below. A tap spec is a module path (its output is captured) or ``"<path>:input"`` (its first input).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType

from torch import Tensor, nn

from unikd.losses.contract import CONFIG_KINDS, TAP_KINDS  # noqa: F401  (re-exported)

# Stage outputs per zoo family (class name), as the CIFAR-100 benchmark code lists them after its stem
# feature: for VGG the first block plays the stem's role, so the stages start at block1.
ZOO_STAGES: dict[str, tuple[str, ...]] = {
    "CifarResNet": ("layer1", "layer2", "layer3"),  # resnet8..110, resnet8x4, resnet32x4
    "ResNet": ("layer1", "layer2", "layer3", "layer4"),  # resnet18/34/50 (CIFAR stem)
    "WideResNet": ("block1", "block2", "block3"),  # wrn_16_1 .. wrn_40_2
    "VGG": ("block1", "block2", "block3", "block4"),  # vgg8 .. vgg19
    "MobileNetV2": ("blocks.1", "blocks.2", "blocks.4", "blocks.6"),
    "ShuffleNetV1": ("layer1", "layer2", "layer3"),
    "ShuffleNetV2": ("layer1", "layer2", "layer3"),
    "TinyCNN": ("stage1", "stage2", "stage3"),
}


def parse_spec(spec: str) -> tuple[str, str]:
    """``"layer2"`` -> ``("layer2", "output")``; ``"fc:input"`` -> ``("fc", "input")``."""
    path, sep, what = spec.partition(":")
    if not path or (sep and what != "input"):
        raise ValueError(
            f"tap {spec!r} is not valid: write a module path (its output, e.g. 'layer2') or "
            "'<module path>:input' (its input, e.g. 'fc:input')"
        )
    return path, "input" if sep else "output"


def _last_linear(model: nn.Module) -> str | None:
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name:
            last = name
    return last


def _stages(model: nn.Module) -> tuple[str, ...] | None:
    from unikd.models._base import ZooModel

    if isinstance(model, ZooModel):
        return ZOO_STAGES.get(type(model).__name__) or tuple(model.stage_names) or None
    children = dict(model.named_children())
    if all(f"layer{i}" in children for i in range(1, 5)):  # torchvision / timm ResNets
        return tuple(f"layer{i}" for i in range(1, 5))
    return None


def default_taps(model: nn.Module, kind: str) -> list[str] | None:
    """The family default of ``kind`` for ``model`` (None when unknown)."""
    if kind == "embedding":
        linear = _last_linear(model)
        return [f"{linear}:input"] if linear else None
    if kind == "uskd":
        from unikd.models import default_feature

        try:
            return [default_feature(model)]
        except ValueError:
            return None
    stages = _stages(model)
    if not stages:
        return None
    if kind in ("stages", "segments"):  # a kind of its own, so AT and Extended-KD can read other stages
        return list(stages)
    if kind == "hint":
        return [stages[1]] if len(stages) > 1 else None
    if kind == "last":
        return [stages[-1]]
    if kind == "mixdist":  # MixStyle's advice: the early layers carry the style (the distribution)
        return [stages[0]]
    raise ValueError(unknown_kind(kind))


def unknown_kind(kind: str) -> str:
    from unikd.registry import closest

    hint = closest(kind, list(TAP_KINDS))
    did_you_mean = f" Did you mean {hint!r}?" if hint else ""
    return f"unknown tap kind {kind!r}.{did_you_mean} Tap kinds: {', '.join(TAP_KINDS)}."


def resolve_taps(
    model: nn.Module,
    kind: str,
    *,
    role: str,
    overrides: Mapping[str, Sequence[str]],
    feature: str | None = None,
) -> list[str]:
    """Tap specs of ``kind`` on ``model`` (``role`` is "student" or "teacher", for the config key)."""
    if kind not in TAP_KINDS:
        raise ValueError(unknown_kind(kind))
    if kind == "uskd" and role == "student" and feature:
        return [feature]
    if kind in overrides:
        return list(overrides[kind])
    found = default_taps(model, kind)
    if not found:
        children = ", ".join(name for name, _ in model.named_children()) or "(no submodules)"
        key = "feature" if kind == "uskd" else f"taps.{role}.{kind}"
        raise ValueError(
            f"no default '{kind}' tap ({TAP_KINDS[kind]}) is known for the {role} {type(model).__name__}; "
            f"set {key}=<module path> (a list for several). Top-level modules: {children}"
        )
    return found


class TapSet:
    """Forward hooks on one model, one per distinct tap spec; read after each forward with :meth:`outputs`."""

    def __init__(self, model: nn.Module | None = None, specs: Iterable[str] = ()) -> None:
        from unikd.models import FeatureTap

        self._taps: dict[str, FeatureTap] = {}
        for spec in specs:
            if spec not in self._taps:
                assert model is not None, "a TapSet with specs needs a model"
                path, capture = parse_spec(spec)
                self._taps[spec] = FeatureTap(model, path, capture=capture)

    @property
    def specs(self) -> list[str]:
        return list(self._taps)

    def __len__(self) -> int:
        return len(self._taps)

    def outputs(self) -> dict[str, Tensor]:
        """``{spec: tensor}`` from the latest forward of the model (empty for an empty set)."""
        out = {}
        for spec, tap in self._taps.items():
            value = tap.output
            if not isinstance(value, Tensor):
                raise ValueError(
                    f"tap {spec!r} captured a {type(value).__name__}, not a tensor; tap a module that "
                    "returns "
                    "one tensor (see taps.student / taps.teacher in the config)"
                )
            out[spec] = value
        return out

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-sample shapes (batch dimension dropped) of the latest outputs."""
        return {spec: tuple(int(d) for d in t.shape[1:]) for spec, t in self.outputs().items()}

    def remove(self) -> None:
        for tap in self._taps.values():
            tap.remove()

    def __enter__(self) -> TapSet:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()
