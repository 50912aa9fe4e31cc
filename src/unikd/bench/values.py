"""Spec values: environment expansion, nested -> dotted override keys, and ``key=value`` formatting."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from typing import Any

import yaml

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of ``value`` (recursively)."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            var, default = m.group(1), m.group(2)
            if var in os.environ:
                return os.environ[var]
            if default is None:
                raise ValueError(
                    f"spec string {value!r} reads environment variable {var} which is not set; "
                    f"set it or write ${{{var}:-DEFAULT}}"
                )
            return default

        return _ENV.sub(sub, value)
    if isinstance(value, list):
        return [expand_env(v) for v in value]
    if isinstance(value, dict):
        return {k: expand_env(v) for k, v in value.items()}
    return value


def flatten(overrides: Any, where: str, prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> ``{"section.key": value}``; dotted keys pass through."""
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise ValueError(
            f"{where} must be a mapping of config keys to values, got {type(overrides).__name__}; "
            "write e.g. {optim.lr: 0.1} or {optim: {lr: 0.1}}"
        )
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"{where}: config key {key!r} must be a non-empty string")
        full = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, where, prefix=f"{full}."))
        else:
            flat[full] = value
    return flat


def format_value(value: Any) -> str:
    """A value as a ``key=value`` override string that YAML reads back as exactly ``value``."""
    if isinstance(value, float) and math.isfinite(value):
        text = repr(value)
        # PyYAML (YAML 1.1) reads "1e-05" as a string: its floats need a dot in the mantissa.
        if "e" in text and "." not in text.split("e")[0]:
            mant, exp = text.split("e")
            text = f"{mant}.0e{exp}"
    elif isinstance(value, (list, tuple)):
        text = "[" + ", ".join(format_value(v) for v in value) + "]"
    elif value is None or isinstance(value, (bool, int, float)):
        text = json.dumps(value)
    elif isinstance(value, str):
        # Plain when YAML reads it back unchanged, else a JSON string (a YAML double-quoted scalar);
        # non-ASCII kept literal first, since PyYAML does not join JSON's \ud800-style surrogate pairs.
        candidates = [value, json.dumps(value, ensure_ascii=False), json.dumps(value)]
        text = next((c for c in candidates if _yaml_reads(c, value)), candidates[-1])
    else:
        raise ValueError(
            f"override value {value!r} of type {type(value).__name__} cannot be passed on the "
            "command line; use a number, string, bool, null or a list of those"
        )
    if not _yaml_reads(text, list(value) if isinstance(value, tuple) else value):
        raise ValueError(
            f"override value {value!r} does not survive a YAML round trip ({text!r}); "
            "write it differently in the spec"
        )
    return text


def _yaml_reads(text: str, expected: Any) -> bool:
    try:
        got = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    if isinstance(expected, float) and isinstance(got, float):
        return got == expected or (math.isnan(got) and math.isnan(expected))
    return type(got) is type(expected) and got == expected
