"""Helpers shared by the stages of ``unikd lm-distill``: the process's rank, the Llama it builds, atomic
JSON and tensor writes, and waiting for rank 0's files."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from unikd._atomic import atomic_write, atomic_write_text

from ._require import require
from .example_config import ModelSize

transformers = require("transformers")


def world() -> tuple[int, int]:
    """``(rank, world size)`` from torchrun's environment (``(0, 1)`` outside it)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def build_model(size: ModelSize, vocab: int, context: int, eos: int, seed: int):
    transformers.set_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=size.hidden,
        intermediate_size=size.hidden * 8 // 3 // 8 * 8 or 8,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.heads,
        max_position_embeddings=context,
        bos_token_id=eos,
        eos_token_id=eos,
        tie_word_embeddings=False,
        use_cache=False,
    )
    return transformers.LlamaForCausalLM(cfg)


def _save_tensor(path: Path, obj: Any) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _wait_for(path: Path, what: str, timeout: float = 4 * 3600) -> None:
    start = time.monotonic()
    while not path.exists():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"rank {world()[0]} waited {timeout:.0f} s for {what} ({path}) from rank 0")
        time.sleep(2)


__all__ = ["build_model", "world"]
