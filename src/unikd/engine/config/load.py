"""Reading and writing the training config: defaults <- YAML file <- ``key=value`` overrides, validated;
the resolved config back as YAML."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from unikd._atomic import atomic_write_text
from unikd._yaml import load_yaml, read_yaml_file
from unikd.engine.config.schema import Config, _build, _default_tree, _merge, _set


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=0.1"`` -> ``("optim.lr", 0.1)``; the value is parsed as a YAML scalar or list."""
    if "=" not in text:
        raise ValueError(
            f"override {text!r} must look like key=value, e.g. optim.lr=0.1 or teacher.model=resnet56"
        )
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key:
        raise ValueError(f"override {text!r} has an empty key; write key=value, e.g. epochs=10")
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ValueError(f"override {text!r}: cannot parse the value as YAML ({exc}); quote it") from None
    return key, value


# ---------------------------------------------------------------------------------------------- loading


def load_config(
    path: str | os.PathLike[str] | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """Defaults <- YAML file (optional) <- ``key=value`` overrides, validated.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for unknown keys (with the closest
    valid key), wrong types and out-of-range values.
    """
    tree = _default_tree()
    if path is not None:
        # regular UTF-8 file, duplicate keys refused; every error names the file
        raw = read_yaml_file(path, "config file", missing="pass a YAML recipe (see configs/)") or {}
        _merge(tree, raw, f"config file {Path(path)}")
    for text in overrides:
        key, value = parse_override(text)
        _set(tree, key, value, f"override {text!r}")
    return _build(tree)


class _Dumper(yaml.SafeDumper):
    """Block-style sections with flow-style lists (``milestones: [150, 180, 210]``)."""


_Dumper.add_representer(
    list, lambda dumper, value: dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=True)
)


def config_to_yaml(cfg: Config) -> str:
    """The resolved config as YAML (loadable with :func:`load_config`)."""
    return yaml.dump(cfg.to_dict(), Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def save_config(cfg: Config, path: str | os.PathLike[str]) -> None:
    """Write the resolved config as YAML, atomically (temp file in the same folder, then rename)."""
    atomic_write_text(path, config_to_yaml(cfg))
