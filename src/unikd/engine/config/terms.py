"""The ``loss.terms`` form of the config: several named loss terms, each with its method, weight, warm-up
and hyperparameters.

In YAML either a mapping keyed by term name (the canonical form, written back to ``config.yaml``)::

    loss:
      terms:
        nkd: {weight: 1.0, temperature: 1.0, gamma: 1.5}
        fitnet: {weight: 100}
        kd_t2: {method: kd, temperature: 2}     # a name other than the method needs `method`

or a list of entries with ``method`` (and an optional ``name``, default the method)::

    loss:
      terms: [{method: crd, weight: 0.8}, {method: kd, weight: 1.0, temperature: 4}]

Overrides reach into the mapping: ``loss.terms.kd.temperature=2``, ``loss.terms.fitnet={weight: 50}`` (adds
or replaces a term), ``loss.terms.fitnet=null`` (removes it).
"""

from __future__ import annotations

import copy
import re
from typing import Any

from unikd.engine.config.check import coerce, method_params
from unikd.engine.config.method import methods
from unikd.engine.config.sections import TermConfig  # noqa: F401  (re-exported)
from unikd.registry import closest

TERM_FIXED = ("method", "weight", "warmup_epochs")
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def normalise_terms(value: Any, source: str) -> dict[str, dict[str, Any]]:
    """List or mapping form -> ``{name: {key: value}}`` (a fresh copy; ``None`` entries dropped)."""
    if value is None:
        return {}
    out: dict[str, dict[str, Any]] = {}
    if isinstance(value, list):
        for i, item in enumerate(value):
            if not isinstance(item, dict) or "method" not in item:
                raise ValueError(
                    f"loss.terms[{i}] (from {source}) must be a mapping with a method, e.g. "
                    f"{{method: kd, weight: 1.0, temperature: 4}}; got {item!r}"
                )
            entry = {str(k): copy.deepcopy(v) for k, v in item.items() if k != "name"}
            name = str(item.get("name", item["method"]))
            if name in out:
                raise ValueError(
                    f"loss.terms (from {source}) has two terms named {name!r}; give one a name, e.g. "
                    f"{{method: {item['method']}, name: {name}_2, ...}}"
                )
            out[name] = entry
        return out
    if isinstance(value, dict):
        for name, entry in value.items():
            if entry is None:
                continue
            if not isinstance(entry, dict):
                raise ValueError(
                    f"loss.terms.{name} (from {source}) must be a mapping of its keys (e.g. {{weight: 1.0}}; "
                    f"{{}} for the defaults), got {entry!r}"
                )
            out[str(name)] = {str(k): copy.deepcopy(v) for k, v in entry.items()}
        return out
    raise ValueError(
        f"loss.terms (from {source}) must be a mapping {{name: {{method: ..., weight: ...}}}} or a list "
        f"[{{method: ..., weight: ...}}], got {value!r}"
    )


def set_term_key(loss: dict[str, Any], parts: list[str], value: Any, source: str) -> None:
    """Apply a dotted ``loss.terms[.<name>[.<key>]]`` assignment (``parts`` without ``loss``)."""
    if len(parts) == 1:
        loss["terms"] = normalise_terms(value, source)
        return
    terms = loss["terms"] = normalise_terms(loss.get("terms"), source)
    name = parts[1]
    if len(parts) == 2:
        if value is None:
            terms.pop(name, None)
        else:
            terms.update(normalise_terms({name: value}, source))
        return
    if len(parts) == 3:
        terms.setdefault(name, {})[parts[2]] = value
        return
    raise ValueError(
        f"unknown config key {'.'.join(['loss', *parts])!r} (from {source}); write loss.terms.<name>.<key>, "
        "e.g. loss.terms.kd.temperature=2"
    )


def parse_terms(raw: dict[str, dict[str, Any]]) -> list[TermConfig]:
    """Validate the normalised mapping and build the terms (hyperparameters checked against each method)."""
    out = []
    valid_methods = [m for m in methods() if m not in ("ce", "ls")]
    for name, entry in raw.items():
        where = f"loss.terms.{name}"
        if not _NAME_RE.match(name) or name in ("loss", "ce"):
            raise ValueError(
                f"term name {name!r} is not valid: use letters, digits and _ (starting with a letter), "
                "and not "
                "'loss' or 'ce' (those are logged already)"
            )
        method = entry.get("method", name)
        if not isinstance(method, str) or method not in valid_methods:
            hint = closest(str(method), valid_methods)
            did_you_mean = f" Did you mean {hint!r}?" if hint else ""
            key = f"{where}.method" if "method" in entry else where
            raise ValueError(
                f"{key}: {method!r} is not a loss method.{did_you_mean} Methods: {', '.join(valid_methods)} "
                f"(a term named other than its method needs `method`, e.g. {where}.method=kd; the "
                "cross-entropy is always on: set loss.ce_weight)"
            )
        extras = {k: v for k, v in entry.items() if k not in TERM_FIXED}
        params = method_params(method, extras, prefix=f"{where}.", fixed=TERM_FIXED)
        weight = coerce(entry.get("weight", 1.0), float, f"{where}.weight")
        warmup = coerce(entry.get("warmup_epochs", 0.0), float, f"{where}.warmup_epochs")
        if weight < 0 or warmup < 0:
            raise ValueError(
                f"{where}.weight and {where}.warmup_epochs must be >= 0, got {weight} and {warmup}"
            )
        out.append(TermConfig(name=name, method=method, weight=weight, warmup_epochs=warmup, params=params))
    return out


def label(terms: list[TermConfig]) -> str:
    """The run's ``method`` in the terms form: the term names joined by ``+`` (e.g. ``nkd+fitnet``)."""
    return "+".join(t.name for t in terms)


def check_label(method: str, terms: list[TermConfig], loss: dict[str, Any], fixed: tuple[str, ...]) -> str:
    """The terms form leaves ``method`` and the single-method loss keys unset: check, return the label."""
    name = label(terms)
    if method not in ("ce", name):
        raise ValueError(
            f"method={method!r} conflicts with loss.terms ({', '.join(t.name for t in terms)}): "
            "with loss.terms "
            f"leave method out (it becomes {name!r}), or use the single-method form without loss.terms"
        )
    flat = [k for k in loss if k not in fixed and k != "terms"]
    if flat:
        raise ValueError(
            f"loss.{flat[0]} belongs to the single-method form; with loss.terms set it per term, e.g. "
            f"loss.terms.{terms[0].name}.{flat[0]}"
        )
    for key, default in (("weight", 1.0), ("warmup_epochs", 0.0)):
        if loss.get(key, default) != default:
            raise ValueError(
                f"loss.{key} belongs to the single-method form; with loss.terms set it per term, e.g. "
                f"loss.terms.{terms[0].name}.{key}"
            )
    return name


def render_terms(terms: list[TermConfig]) -> dict[str, dict[str, Any]]:
    """The canonical mapping form (``method`` only where it differs from the name)."""
    out: dict[str, dict[str, Any]] = {}
    for t in terms:
        entry: dict[str, Any] = {} if t.method == t.name else {"method": t.method}
        entry.update(weight=t.weight, warmup_epochs=t.warmup_epochs, **t.params)
        out[t.name] = entry
    return out
