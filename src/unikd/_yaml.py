"""YAML reading for files people write by hand (recipes, bench specs): duplicate keys are errors.

``yaml.safe_load`` keeps the last of two equal keys in a mapping without a word, so a recipe that sets
``lr`` twice trains with whichever came last. :class:`UniqueKeyLoader` refuses such a mapping, naming the
key and both lines. Merge keys (``<<: *base``) still work: a key set next to a merge overrides the merged
value, as YAML intends; only keys written twice in the same mapping are refused.

:func:`read_yaml_file` adds the checks around it: a regular file (never block on a FIFO), UTF-8 text, and
every error naming the file.
"""

from __future__ import annotations

import os
from typing import Any

import yaml

from unikd._files import require_regular_file

_MERGE = "tag:yaml.org,2002:merge"


class DuplicateKeyError(yaml.YAMLError):
    """A mapping of a YAML document sets the same key twice (the message names it and both lines)."""


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that raises :class:`DuplicateKeyError` on a key repeated within one mapping."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            self._check_unique(node)
        return super().construct_mapping(node, deep=deep)

    def _check_unique(self, node: yaml.MappingNode) -> None:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable (complex) key: YAML itself will complain about it
                continue
            if first is not key_node:
                raise DuplicateKeyError(
                    f"duplicate key {key!r} on lines {first.start_mark.line + 1} and "
                    f"{key_node.start_mark.line + 1}: YAML would keep only the last value; remove one of them"
                )


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` with duplicate keys refused (see the module doc)."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml_file(path: str | os.PathLike[str], what: str, *, missing: str = "check the path") -> Any:
    """The YAML document in ``path``; ``ValueError``/``FileNotFoundError`` naming ``what`` and the file."""
    p = require_regular_file(path, what, missing=missing)
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{what} {str(p)!r} is not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start}); "
            "save it with UTF-8 encoding"
        ) from None
    try:
        return load_yaml(text)
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())  # PyYAML's message spans lines (a caret under the column)
        raise ValueError(f"{what} {str(p)!r} is not valid YAML: {detail}") from None
