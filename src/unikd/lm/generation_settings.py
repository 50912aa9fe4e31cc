"""``GenerationSettings``: how on-policy and sequence-level batches sample their completions.

Kept free of ``transformers`` so that :mod:`unikd.lm.settings` and the example's config import without
the ``lm`` extra.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass
class GenerationSettings:
    """Sampling of the completions that on-policy (student) and sequence-level (teacher) batches train on.

    ``max_new_tokens`` per prompt (fewer where the models' context ends first); ``temperature`` (0: greedy),
    ``top_k`` (0: off) and ``top_p`` (1: off) shape the sampling distribution. The prompt of a row is the
    ``prompt`` / ``messages`` of a text dataset or a tokenized row's masked prefix (labels ``ignore_index``
    before the first kept label); ``prompt_length`` makes the first ``prompt_length`` tokens the prompt of
    rows whose labels mask no prefix (packed text). ``eos_token_id`` (one id or a list) ends a completion,
    the end token kept as the last target; unset, the tokenizer's or the model's. ``pad_token_id`` only
    fills finished rows during generation (unset: the tokenizer's pad, else the end token, else 0).
    """

    max_new_tokens: int = 32
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    prompt_length: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int):
            raise ValueError(
                f"generation max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}"
            )
        if self.max_new_tokens < 1:
            raise ValueError(f"generation max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not isinstance(self.temperature, (int, float)) or self.temperature < 0:
            raise ValueError(f"generation temperature must be >= 0 (0: greedy), got {self.temperature!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"generation top_k must be an integer >= 0 (0: off), got {self.top_k!r}")
        if not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise ValueError(f"generation top_p must be in (0, 1] (1: off), got {self.top_p!r}")
        if self.prompt_length is not None and (
            not isinstance(self.prompt_length, int) or self.prompt_length < 1
        ):
            raise ValueError(f"generation prompt_length must be >= 1 or unset, got {self.prompt_length!r}")
        self.temperature, self.top_p = float(self.temperature), float(self.top_p)

    @classmethod
    def coerce(cls, value: GenerationSettings | dict[str, Any] | None) -> GenerationSettings:
        """A :class:`GenerationSettings` from itself, a mapping of its fields, or None (the defaults)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise ValueError(
                f"generation must be a GenerationSettings or a mapping, got {type(value).__name__}"
            )
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ValueError(f"unknown generation settings {unknown}; valid: {', '.join(names)}")
        return cls(**value)


def check_fractions(on_policy: float, seq_kd: float) -> tuple[float, float]:
    """``(on_policy, seq_kd)`` as floats in [0, 1] summing to at most 1 (the rest: the dataset's)."""
    out = []
    for name, value in (("on_policy", on_policy), ("seq_kd", seq_kd)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"{name} is a fraction of the batches, in [0, 1]; got {value!r}")
        out.append(float(value))
    if out[0] + out[1] > 1 + 1e-12:
        raise ValueError(
            f"on_policy + seq_kd = {out[0] + out[1]:g} > 1: they are fractions of the same batches "
            "(student samples, teacher samples, the rest from the dataset); lower one of them"
        )
    return out[0], out[1]


__all__ = ["GenerationSettings", "check_fractions"]
