"""The typed training config: :class:`Config`, its key tree, merging and building (validated).

Every key and default is listed in ``docs/training.md`` (the config schema). Unknown keys fail with
the closest valid key, values are type-checked (and coerced where unambiguous, e.g. ``5e-4`` written as a
string in YAML 1.1), and the ``loss`` section accepts, besides its fixed keys, exactly the hyperparameters
of the chosen method's loss module -- or, in the terms form, ``loss.terms`` (see
:mod:`unikd.engine.config.terms`).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from unikd.engine.config.check import LOSS_FIXED, coerce, loss_params, validate
from unikd.engine.config.method import method_to_loss
from unikd.engine.config.sections import (
    DataConfig,
    DiagnosticsConfig,
    LossConfig,
    OnlineConfig,
    OptimConfig,
    SchedConfig,
    SelectionConfig,
    TapsConfig,
    TeacherConfig,
    TermConfig,
)
from unikd.engine.config.terms import check_label, parse_terms, render_terms, set_term_key
from unikd.losses.contract import CONFIG_KINDS
from unikd.registry import closest


@dataclass
class Config:
    method: str = "ce"
    model: str = "resnet20"
    pretrained: bool = False  # start from torchvision/timm weights (or a teacher-registry entry)
    model_args: dict[str, Any] = field(default_factory=dict)  # extra create_model arguments, e.g. img_size
    feature: str | None = None
    num_classes: int | None = None
    seed: int = 0
    epochs: int = 240
    out_dir: str | None = None
    resume: str = "no"
    overwrite: bool = False
    integrity: str = "lenient"  # lenient: foreign files without a checksum load with a warning | strict
    device: str = "auto"
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool | str = False  # false | model (true) | step (engine/config/step_options.py)
    checks: str = "auto"  # value checks of the losses: auto | full | off
    sync_bn: bool = False
    ema_decay: float | None = None
    eval_every: int = 1
    checkpoint_every: int = 0
    final_test: bool = True
    tensorboard: bool | str = "auto"
    trackers: list[str] = field(default_factory=list)  # wandb, mlflow (metrics.csv is always written)
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    taps: TapsConfig = field(default_factory=TapsConfig)
    online: OnlineConfig = field(default_factory=OnlineConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (YAML/JSON-ready); the single method's hyperparameters sit flat in ``loss``,
        the terms form writes ``loss.terms`` as a mapping by term name. The optional sections (``online``,
        ``diagnostics``, ``selection``), ``checks``, data keys (``drop_classes``, ``drop_seed``,
        ``transfer``) and loss keys (``target``) are left out while they hold their defaults, so other
        configs (and the hashes the bench takes of them) read as before they existed."""
        out = dataclasses.asdict(self)
        for name in OPTIONAL_SECTIONS:
            if out[name] == dataclasses.asdict(SECTIONS[name]()):
                del out[name]
        if out["checks"] == "auto":  # written only when set, like the optional sections
            del out["checks"]
        for key in OPTIONAL_DATA_KEYS:
            if out["data"][key] is None:
                del out["data"][key]
        loss = out["loss"]
        for key in OPTIONAL_LOSS_KEYS:
            if loss[key] is None:
                del loss[key]
        params, _ = loss.pop("params"), loss.pop("terms")
        if self.loss.terms:
            del loss["weight"], loss["warmup_epochs"]
            loss["terms"] = render_terms(self.loss.terms)
        else:
            loss.update(params)
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, source: str = "dict") -> Config:
        """Build and validate a config from a (possibly partial) nested dict."""
        merged = _default_tree()
        _merge(merged, raw, source)
        return _build(merged)

    def __post_init__(self) -> None:
        from unikd.engine.run.trackers import check_tracker_names

        check_tracker_names(self.trackers)
        if self.teacher.pretrained and self.teacher.checkpoint is not None:
            raise ValueError(
                "teacher.pretrained=true and teacher.checkpoint are both set; use the pretrained weights "
                "(teacher.checkpoint=null) or the checkpoint (teacher.pretrained=false)"
            )

    @property
    def terms(self) -> list[TermConfig]:
        """The objective's terms besides the cross-entropy, in both config forms (empty for ce and ls)."""
        if self.loss.terms:
            return list(self.loss.terms)
        if method_to_loss(self.method) is None:
            return []
        lc = self.loss
        return [TermConfig(self.method, self.method, lc.weight, lc.warmup_epochs, dict(lc.params))]


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "teacher": TeacherConfig,
    "loss": LossConfig,
    "optim": OptimConfig,
    "sched": SchedConfig,
    "taps": TapsConfig,
    "online": OnlineConfig,
    "diagnostics": DiagnosticsConfig,
    "selection": SelectionConfig,
}
# Sections and data keys written to config.yaml only when set (see Config.to_dict).
OPTIONAL_SECTIONS = ("online", "diagnostics", "selection")
OPTIONAL_DATA_KEYS = ("drop_classes", "drop_seed", "transfer")
OPTIONAL_LOSS_KEYS = ("target",)


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _default_tree() -> dict[str, Any]:
    tree = Config().to_dict()
    tree["checks"] = "auto"
    for name in OPTIONAL_SECTIONS:
        tree[name] = dataclasses.asdict(SECTIONS[name]())
    tree["data"].update(dict.fromkeys(OPTIONAL_DATA_KEYS))
    tree["loss"].update(dict.fromkeys(OPTIONAL_LOSS_KEYS))
    return tree


def valid_keys() -> list[str]:
    """All dotted config keys (the loss section's fixed keys only)."""
    keys = [k for k in _field_types(Config) if k not in SECTIONS]
    for section, cls in SECTIONS.items():
        keys += [f"{section}.{k}" for k in _field_types(cls) if k != "params"]
    return keys + [f"taps.{role}.{kind}" for role in ("student", "teacher") for kind in _tap_kinds()]


def _tap_kinds() -> tuple[str, ...]:
    return CONFIG_KINDS


def _unknown_key(key: str, source: str) -> ValueError:
    hint = closest(key, valid_keys())
    did_you_mean = f" Did you mean {hint!r}?" if hint else ""
    return ValueError(
        f"unknown config key {key!r} (from {source}).{did_you_mean} "
        f"See docs/training.md (config schema) for every key."
    )


def _merge(tree: dict[str, Any], raw: dict[str, Any], source: str) -> None:
    """Merge a nested user dict into the default tree, rejecting unknown keys (loss extras deferred)."""
    if not isinstance(raw, dict):
        raise ValueError(
            f"config from {source} must be a mapping of keys to values, got {type(raw).__name__}"
        )
    for key, value in raw.items():
        key = str(key)
        if key in SECTIONS:
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ValueError(
                    f"config section {key!r} (from {source}) must be a mapping, got {value!r}; "
                    f"write e.g. '{key}.<name>=value' to set one key"
                )
            for sub, sub_value in value.items():
                _set(tree, f"{key}.{sub}", sub_value, source)
        else:
            _set(tree, key, value, source)


def _set(tree: dict[str, Any], dotted: str, value: Any, source: str) -> None:
    parts = dotted.split(".")
    if len(parts) == 1:
        if parts[0] not in tree or parts[0] in SECTIONS:
            raise _unknown_key(dotted, source)
        tree[parts[0]] = value
        return
    if parts[:2] == ["loss", "terms"]:
        set_term_key(tree["loss"], parts[1:], value, source)
        return
    if len(parts) == 3 and parts[:2] == ["data", "transfer"]:  # one key of the transfer mapping
        tree["data"]["transfer"] = {**(tree["data"]["transfer"] or {}), parts[2]: value}
        return
    if len(parts) == 3 and parts[0] == "taps" and parts[1] in ("student", "teacher"):
        _set_tap(tree["taps"][parts[1]], dotted, parts[2], value, source)
        return
    if len(parts) != 2 or parts[0] not in SECTIONS:
        raise _unknown_key(dotted, source)
    section, key = parts
    if section != "loss" and key not in tree[section]:
        raise _unknown_key(dotted, source)
    if section == "taps":
        if value is not None and not isinstance(value, dict):
            raise ValueError(
                f"{dotted} (from {source}) maps tap kinds to module paths, e.g. {{hint: layer2}}"
            )
        tree["taps"][key] = {}
        for kind, paths in (value or {}).items():
            _set_tap(tree["taps"][key], f"{dotted}.{kind}", str(kind), paths, source)
        return
    tree[section][key] = value  # unknown loss keys are checked once the method is known


def _set_tap(role: dict[str, Any], dotted: str, kind: str, value: Any, source: str) -> None:
    if kind == "uskd":
        raise ValueError(
            f"{dotted} (from {source}): the USKD feature is set with the top-level key `feature`"
        )
    if kind not in _tap_kinds():
        raise _unknown_key(dotted, source)
    if value is None:
        role.pop(kind, None)
    else:
        role[kind] = value


def _build_section(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    kwargs = {}
    for name, tp in _field_types(cls).items():
        if name in ("params", "terms"):
            continue
        kwargs[name] = coerce(raw[name], tp, f"{prefix}{name}")
    return cls(**kwargs)


def _special_cases(tree: dict[str, Any]) -> None:
    # YAML 1.1 reads `resume: no` as False and `tensorboard: true` as a bool; map them to the schema.
    resume = tree.get("resume")
    if resume is False or resume is None:
        tree["resume"] = "no"
    elif resume is True:
        tree["resume"] = "auto"
    if tree["data"].get("drop_classes") == []:  # `data.drop_classes=[]` switches dropping off
        tree["data"]["drop_classes"] = None
    if isinstance(tree.get("checks"), bool):  # YAML 1.1 reads `checks: off` as false (and `on` as true)
        tree["checks"] = "full" if tree["checks"] else "off"
    tb = tree.get("tensorboard")
    if isinstance(tb, str) and tb.lower() in ("true", "false"):
        tree["tensorboard"] = tb.lower() == "true"


def _build(tree: dict[str, Any]) -> Config:
    _special_cases(tree)
    top = {k: v for k, v in tree.items() if k not in SECTIONS}
    sections = {name: _build_section(cls, tree[name], f"{name}.") for name, cls in SECTIONS.items()}
    kwargs = {}
    for name, tp in _field_types(Config).items():
        if name not in SECTIONS:
            kwargs[name] = coerce(top[name], tp, name)
    cfg = Config(**kwargs, **sections)
    raw_terms = tree["loss"].get("terms")
    if raw_terms:
        cfg.loss.terms = parse_terms(raw_terms)
        cfg.method = check_label(cfg.method, cfg.loss.terms, tree["loss"], LOSS_FIXED)
    else:
        cfg.loss.params = loss_params(cfg.method, {k: v for k, v in tree["loss"].items() if k != "terms"})
    validate(cfg)
    return cfg
