"""Value checks of the training config: type coercion, choices and ranges, and the loss hyperparameters
(validated against the signature of the method's loss function in ``unikd.losses``)."""

from __future__ import annotations

import inspect
import re
import types
import typing
from typing import Any

from unikd.engine.config.bounds import check_bounds
from unikd.engine.config.method import check_method, method_to_loss
from unikd.registry import closest

LOSS_FIXED = ("ce_weight", "weight", "warmup_epochs", "smoothing", "target")


def _choices() -> dict[str, tuple[str, ...]]:
    """Allowed values of the string-valued keys ("method" is checked against methods()). Datasets,
    optimizers and schedules come from where they are registered, so a dataset registered from outside the
    package can be named in a config."""
    from unikd.data import list_datasets
    from unikd.engine.optim.optimizers import list_optimizers
    from unikd.engine.optim.schedules import list_schedules

    return {
        "precision": ("fp32", "bf16", "fp16"),
        "integrity": ("lenient", "strict"),
        "data.name": tuple(list_datasets()),
        "data.loader": ("memory", "torch"),
        "optim.name": tuple(list_optimizers()),
        "sched.name": tuple(list_schedules()),
    }


_DEVICE_RE = re.compile(r"^(auto|cpu|cuda|cuda:\d+|mps)$")


# ---------------------------------------------------------------------------------------------- coercion


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; coerce unambiguous cases (int->float, "5e-4"->float)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, key)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(errors[0] if len(errors) == 1 else f"{key}: {value!r} is not a valid value ({tp})")
    if origin is dict:
        key_tp, item = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ValueError(f"{key} must be a mapping, e.g. {{name: value}}, got {value!r}")
        if item is Any:  # free-form arguments (model_args, e.g. {img_size: 32}) pass through as written
            return {coerce(k, key_tp, key): v for k, v in value.items()}
        return {coerce(k, key_tp, key): coerce(v, item, f"{key}.{k}") for k, v in value.items()}
    if origin is list:
        (item,) = typing.get_args(tp)
        items = value if isinstance(value, (list, tuple)) else [value]
        return [coerce(v, item, f"{key}[{i}]") for i, v in enumerate(items)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ValueError(f"{key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # PyYAML reads 5e-4 (no dot) as a string
            except ValueError:
                pass
        raise ValueError(f"{key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"{key} must be a string, got {value!r} ({type(value).__name__}); quote it")
    raise TypeError(f"unsupported config type {_type_name(tp)} for {key}")  # a bug in this file


def loss_hyperparameters(loss_name: str) -> dict[str, inspect.Parameter]:
    """The config-settable arguments of a ``unikd.losses`` module: its __init__ arguments that the engine does
    not supply itself (the context arguments such as ``num_classes`` or ``student_shapes``)."""
    from unikd.losses import LOSSES
    from unikd.losses.contract import hyperparameters

    return hyperparameters(LOSSES.get(loss_name))


def method_params(
    method: str, extras: dict[str, Any], *, prefix: str, fixed: tuple[str, ...]
) -> dict[str, Any]:
    """Validate and coerce the hyperparameters ``extras`` of ``method``; ``prefix`` names them in errors
    (``loss.`` or ``loss.terms.<name>.``) and ``fixed`` lists the other keys valid at that place."""
    loss_name = method_to_loss(method)
    if loss_name is None:
        if extras:
            key = next(iter(extras))
            hint = closest(key, list(fixed))
            did_you_mean = f" Did you mean '{prefix}{hint}'?" if hint else ""
            raise ValueError(
                f"{prefix}{key} is not used by method {method!r} (it only has the cross-entropy term; "
                f"valid keys: {', '.join(fixed)}).{did_you_mean}"
            )
        return {}
    from unikd.losses.contract import CONTEXT

    params = loss_hyperparameters(loss_name)
    out: dict[str, Any] = {}
    for key, value in extras.items():
        if key in CONTEXT:
            raise ValueError(
                f"{prefix}{key} is supplied by the training harness ({CONTEXT[key]}); "
                "remove it from the config"
            )
        if key not in params:
            valid = list(fixed) + list(params)
            hint = closest(key, valid)
            did_you_mean = f" Did you mean '{prefix}{hint}'?" if hint else ""
            raise ValueError(
                f"unknown config key '{prefix}{key}' for method {method!r} (loss {loss_name!r})."
                f"{did_you_mean} Valid keys: {', '.join(valid)}."
            )
        default = params[key].default
        if isinstance(default, bool):
            value = coerce(value, bool, f"{prefix}{key}")
        elif isinstance(default, (int, float)) and default is not None:
            value = coerce(value, float if isinstance(default, float) else int, f"{prefix}{key}")
        elif isinstance(default, str):
            value = coerce(value, str, f"{prefix}{key}")
        out[key] = value
    return out


def loss_params(method: str, raw: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameters of the single-method form: every ``loss.*`` key besides the fixed ones."""
    check_method(method)
    extras = {k: v for k, v in raw.items() if k not in LOSS_FIXED}
    return method_params(method, extras, prefix="loss.", fixed=(*LOSS_FIXED, "terms"))


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def validate(cfg: Any) -> None:
    """Value ranges and choices, each with the key and the fix in the message."""
    if not cfg.loss.terms:
        check_method(cfg.method)
    flat = {
        "precision": cfg.precision,
        "integrity": cfg.integrity,
        "data.name": cfg.data.name,
        "data.loader": cfg.data.loader,
        "optim.name": cfg.optim.name,
        "sched.name": cfg.sched.name,
    }
    choices = _choices()
    for key, value in flat.items():
        if value not in choices[key]:
            hint = closest(value, choices[key])
            did_you_mean = f" Did you mean {hint!r}?" if hint else ""
            raise ValueError(
                f"{key}={value!r} is not valid.{did_you_mean} Choose one of: {', '.join(choices[key])}."
            )
    _check(
        bool(_DEVICE_RE.match(cfg.device)),
        f"device={cfg.device!r} is not valid; use auto, cpu, cuda or cuda:N",
    )
    _check(
        cfg.tensorboard in (True, False, "auto"), f"tensorboard={cfg.tensorboard!r}: use auto, true or false"
    )
    check_bounds(cfg)  # non-finite numbers anywhere, epochs, seeds
    _check(
        not cfg.overwrite or cfg.resume == "no",
        f"overwrite=true starts the run over, but resume={cfg.resume!r} continues one; use one of them",
    )
    _check(cfg.eval_every >= 1, f"eval_every must be >= 1 (epochs), got {cfg.eval_every}")
    _check(
        cfg.checkpoint_every >= 0,
        f"checkpoint_every must be >= 0 steps (0 = per epoch), got {cfg.checkpoint_every}",
    )
    _check(
        cfg.num_classes is None or cfg.num_classes >= 2,
        f"num_classes must be >= 2 or null, got {cfg.num_classes}",
    )
    _check(
        cfg.ema_decay is None or 0.0 < cfg.ema_decay < 1.0,
        f"ema_decay must be in (0, 1) (e.g. 0.9998) or null for no EMA, got {cfg.ema_decay}",
    )
    _check(cfg.data.batch_size >= 1, f"data.batch_size must be >= 1, got {cfg.data.batch_size}")
    _check(
        cfg.data.eval_batch_size >= 1, f"data.eval_batch_size must be >= 1, got {cfg.data.eval_batch_size}"
    )
    _check(
        cfg.data.val_split >= 0, f"data.val_split must be >= 0 (per-class count), got {cfg.data.val_split}"
    )
    _check(0.0 <= cfg.data.mix_prob <= 1.0, f"data.mix_prob must be in [0, 1], got {cfg.data.mix_prob}")
    _check(cfg.optim.lr > 0, f"optim.lr must be > 0, got {cfg.optim.lr}")
    _check(cfg.optim.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {cfg.optim.weight_decay}")
    _check(len(cfg.optim.betas) == 2, f"optim.betas must be a list of two numbers, got {cfg.optim.betas}")
    _check(
        cfg.optim.clip_grad_norm is None or cfg.optim.clip_grad_norm > 0,
        f"optim.clip_grad_norm must be > 0 or null, got {cfg.optim.clip_grad_norm}",
    )
    _check(
        cfg.loss.ce_weight >= 0 and cfg.loss.weight >= 0,
        f"loss.ce_weight and loss.weight must be >= 0, got {cfg.loss.ce_weight} and {cfg.loss.weight}",
    )
    _check(cfg.loss.warmup_epochs >= 0, f"loss.warmup_epochs must be >= 0, got {cfg.loss.warmup_epochs}")
    _check(0.0 <= cfg.loss.smoothing < 1.0, f"loss.smoothing must be in [0, 1), got {cfg.loss.smoothing}")
    _check(cfg.sched.warmup_epochs >= 0, f"sched.warmup_epochs must be >= 0, got {cfg.sched.warmup_epochs}")
    _check(
        cfg.teacher.min_top1 is None or 0 <= cfg.teacher.min_top1 <= 100,
        f"teacher.min_top1 is a percentage in [0, 100], got {cfg.teacher.min_top1}",
    )
    _validate_online_and_diagnostics(cfg)
    from unikd.engine.config.transfer import check_transfer_config

    check_transfer_config(cfg)  # data.transfer, loss.target, selection
    from unikd.engine.config.step_options import check_step_options

    check_step_options(cfg)  # checks, compile


def _validate_online_and_diagnostics(cfg: Any) -> None:
    d = cfg.diagnostics
    _check(d.every >= 0, f"diagnostics.every must be >= 0 steps (0 = off), got {d.every}")
    _check(d.ratio > 1, f"diagnostics.ratio must be > 1 (e.g. 100), got {d.ratio}")
    _check(d.patience >= 1, f"diagnostics.patience must be >= 1 measurements, got {d.patience}")
    if not cfg.online.peers:
        return
    t = cfg.teacher
    set_keys = [k for k in ("model", "checkpoint", "cache") if getattr(t, k) is not None]
    first = set_keys[0] if set_keys else ""
    _check(
        not set_keys,
        f"online.peers={cfg.online.peers} trains its own teachers, but teacher.{first} is set: unset "
        "teacher.model / teacher.checkpoint / teacher.cache, or remove online.peers for offline distillation "
        "from a trained teacher",
    )
    bad = [p for p in cfg.online.peers if not isinstance(p, str) or not p]
    _check(not bad, f"online.peers must list model names (e.g. [resnet32x4]), got {cfg.online.peers}")
