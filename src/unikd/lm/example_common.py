"""Helpers shared by the stages of ``unikd lm-distill``: the process's rank, the Llama it builds, atomic
JSON and tensor writes, waiting for rank 0's files, and the settings check that guards resuming."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from unikd._atomic import atomic_write, atomic_write_text

from ._require import require
from .example_config import LMExampleConfig, ModelSize

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


def record_corpus(out: Path, summary: dict[str, Any], message: str, echo) -> None:
    """Write ``out/data/corpus.json`` once, from the first process, and say what the data is."""
    done = out / "data" / "corpus.json"
    if world()[0] == 0 and not done.exists():
        done.parent.mkdir(parents=True, exist_ok=True)
        _write_json(done, summary)
        echo(message)


def _wait_for(path: Path, what: str, timeout: float = 4 * 3600) -> None:
    start = time.monotonic()
    while not path.exists():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"rank {world()[0]} waited {timeout:.0f} s for {what} ({path}) from rank 0")
        time.sleep(2)


# Settings that do not change what a run computes: a rerun may differ in these and still resume.
FREE_KEYS = ("out_dir", "seeds", "methods", "threads", "log_steps")


def check_settings(cfg: LMExampleConfig, out: Path) -> None:
    """Refuse to mix runs of different settings in one folder (``settings.json`` records the first)."""
    mine = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in FREE_KEYS}
    path = out / "settings.json"
    if not path.exists():
        _write_json(path, mine)
        return
    theirs = json.loads(path.read_text())
    # a key added after the folder was made reads as its default there (folders of older versions resume)
    defaults = dataclasses.asdict(LMExampleConfig())
    theirs = {**{k: v for k, v in defaults.items() if k not in FREE_KEYS}, **theirs}
    differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    if differ:
        shown = ", ".join(f"{k}: {theirs.get(k)!r} there, {mine.get(k)!r} now" for k in differ)
        raise ValueError(
            f"{out} holds runs made with other settings ({shown}); use another --out, or the same settings "
            f"to resume (only {', '.join(FREE_KEYS)} may change between invocations)"
        )


__all__ = ["FREE_KEYS", "build_model", "check_settings", "world"]
