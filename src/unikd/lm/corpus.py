"""The example's corpus: the Python standard library's own source files, present wherever Python is.

Files are split into train and validation *by file* (a hash of each file's path relative to the library
root, so the split does not depend on the machine's directory or on file order), read as UTF-8 up to a byte
budget, and tokenized with a byte-level BPE trained on the training files only. The token stream is cut
into fixed-length blocks (no padding, so every position is a next-token target).
"""

from __future__ import annotations

import hashlib
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

from ._require import require

# Test suites and generated tables are large and repetitive; they would dominate a small byte budget.
SKIP_PARTS = {
    "test",
    "tests",
    "idlelib",
    "site-packages",
    "dist-packages",
    "__pycache__",
    "lib2to3",
    "turtledemo",
}
SPECIAL_TOKENS = ["<|endoftext|>"]


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def source_files(root: Path, *, suffix: str = ".py") -> list[Path]:
    """``*.py`` files under ``root`` outside tests and installed packages, sorted by relative path."""
    if not root.is_dir():
        raise FileNotFoundError(
            f"corpus folder {root} does not exist; set corpus_dir to a folder of text files"
        )
    files = [p for p in root.rglob(f"*{suffix}") if not SKIP_PARTS.intersection(p.relative_to(root).parts)]
    files.sort(key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise FileNotFoundError(f"no {suffix} files under {root}; set corpus_dir to a folder of text files")
    return files


def is_validation(relative: str, val_percent: int) -> bool:
    """Deterministic split by file: ``sha256(relative path) mod 100 < val_percent``."""
    h = int.from_bytes(hashlib.sha256(relative.encode()).digest()[:8], "big")
    return h % 100 < val_percent


def read_split(root: Path, *, val_percent: int, max_bytes: int) -> tuple[list[str], list[str], dict]:
    """Texts of the train and validation files (each capped at its share of ``max_bytes``) and a summary."""
    if not 0 < val_percent < 100:
        raise ValueError(f"val_percent must be between 1 and 99, got {val_percent}")
    budget = {"train": max_bytes * (100 - val_percent) // 100, "val": max_bytes * val_percent // 100}
    texts: dict[str, list[str]] = {"train": [], "val": []}
    used = {"train": 0, "val": 0}
    for path in source_files(root):
        rel = path.relative_to(root).as_posix()
        split = "val" if is_validation(rel, val_percent) else "train"
        if used[split] >= budget[split]:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        texts[split].append(text)
        used[split] += len(text.encode())
    for split in ("train", "val"):
        if not texts[split]:
            raise ValueError(f"the corpus under {root} gave no {split} files; raise max_bytes or val_percent")
    summary = {"root": str(root), "files": {k: len(v) for k, v in texts.items()}, "bytes": used}
    return texts["train"], texts["val"], summary


def train_tokenizer(texts: list[str], vocab_size: int, path: Path):
    """A byte-level BPE of ``vocab_size`` tokens trained on ``texts``, saved to ``path`` (tokenizer.json)."""
    tokenizers = require("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tmp = path.with_name(path.name + ".tmp")
    tok.save(str(tmp))
    tmp.replace(path)
    return tok


def load_tokenizer(path: Path):
    return require("tokenizers").Tokenizer.from_file(str(path))


def encode_blocks(tok, texts: list[str], block_size: int) -> Tensor:
    """All texts as one stream (files joined by ``<|endoftext|>``) cut into (n, block_size) int64 blocks."""
    eos = tok.token_to_id(SPECIAL_TOKENS[0])
    ids: list[int] = []
    for enc in tok.encode_batch(texts):
        ids.extend(enc.ids)
        ids.append(eos)
    n = len(ids) // block_size
    if n == 0:
        raise ValueError(f"the corpus has {len(ids)} tokens, fewer than one block of {block_size}")
    return torch.tensor(ids[: n * block_size], dtype=torch.int64).view(n, block_size)


class Blocks(torch.utils.data.Dataset):
    """``{"input_ids", "labels"}`` examples from a ``(n, T)`` tensor, in a seeded order fixed up front.

    The order is part of the dataset (``order``), and the trainer reads it sequentially, so one process and
    several processes (which take alternate batches of the same sequence) see the same global batches.
    ``index_key`` adds each example's block index under that key (its row in a sparse-teacher cache).
    """

    def __init__(
        self, blocks: Tensor, *, seed: int | None = None, epochs: int = 1, index_key: str | None = None
    ) -> None:
        n = blocks.shape[0]
        if seed is None:
            order = torch.arange(n).repeat(epochs)
        else:
            g = torch.Generator().manual_seed(seed)
            order = torch.cat([torch.randperm(n, generator=g) for _ in range(epochs)])
        self.blocks, self.order, self.index_key = blocks, order, index_key

    def __len__(self) -> int:
        return self.order.numel()

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        x = self.blocks[self.order[i]]
        if self.index_key is None:
            return {"input_ids": x, "labels": x}
        return {"input_ids": x, "labels": x, self.index_key: int(self.order[i])}  # its row in a cache


def batches(blocks: Tensor, batch_size: int) -> Iterator[Tensor]:
    for start in range(0, blocks.shape[0], batch_size):
        yield blocks[start : start + batch_size]


__all__ = [
    "Blocks",
    "batches",
    "encode_blocks",
    "load_tokenizer",
    "read_split",
    "source_files",
    "stdlib_root",
    "train_tokenizer",
]
