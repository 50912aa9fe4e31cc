"""Training data for ``unikd lm-distill`` with a pretrained tokenizer: text folders, JSONL, ``datasets``.

``data=`` names one of

- a folder of text files (``*.txt``, ``*.md``, ``*.py``, ``*.rst``, ...): the texts are joined by the
  end-of-sequence token and cut into blocks of ``block_size`` tokens (every position a target);
- a ``.jsonl`` file, one object per line: ``{"text": ...}`` (packed into blocks like a folder),
  ``{"prompt": ..., "completion": ...}`` (one sequence each, prompt tokens masked from the loss) or chat
  ``{"messages": [{"role", "content"}, ...]}`` rendered with the tokenizer's chat template, every turn
  before the last assistant reply masked;
- a folder written by ``datasets``' ``save_to_disk``, or a ``datasets`` hub name (needs ``datasets``).

The held-out split is ``eval_data`` when given, else ``val_percent`` of the records, chosen by a hash of
each record (a file's relative path, a JSON record's content) so it does not depend on order.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from unikd._optional import import_optional

from .corpus import is_validation

TEXT_SUFFIXES = (".txt", ".md", ".py", ".rst", ".text", ".tex", ".html")
FORMATS = ("text", "prompt/completion", "messages")


def _folder_records(root: Path) -> list[tuple[str, dict[str, Any]]]:
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES and not p.name.startswith(".")
    )
    records = []
    for p in files:
        try:
            records.append((p.relative_to(root).as_posix(), {"text": p.read_text(encoding="utf-8")}))
        except UnicodeDecodeError:
            continue  # a binary file with a text suffix
    if not records:
        raise FileNotFoundError(f"no text files ({', '.join(TEXT_SUFFIXES)}) under {root}")
    return records


def _jsonl_records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} line {n} is not JSON ({exc.msg}); write one object per line") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{path} line {n} is a {type(obj).__name__}, not an object")
        records.append((line, obj))
    if not records:
        raise ValueError(f"{path} holds no records")
    return records


def _datasets_records(spec: str, split: str) -> list[tuple[str, dict[str, Any]]]:
    datasets = import_optional(
        "datasets",
        f"data={spec!r} is not a file or folder; reading a datasets name needs: pip install datasets",
    )
    path = Path(spec)
    if path.is_dir():
        loaded = datasets.load_from_disk(str(path))
        ds = loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
    else:
        try:
            ds = datasets.load_dataset(spec, split=split)
        except Exception as exc:  # the hub client's errors have many types; name the fix either way
            raise ValueError(
                f"could not load the dataset {spec!r} (split {split!r}): {exc}. Offline, fill the datasets "
                "cache (HF_DATASETS_CACHE) on a machine with internet, or pass a .jsonl file or a folder"
            ) from exc
    return [(json.dumps(r, sort_keys=True, default=str), dict(r)) for r in ds]


def read_records(spec: str, *, split: str = "train") -> list[tuple[str, dict[str, Any]]]:
    """``(key, record)`` pairs of ``spec`` (see the module docstring); ``key`` decides the split."""
    path = Path(spec).expanduser()
    if path.is_dir() and not ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        return _folder_records(path)
    if path.is_file():
        if path.suffix not in (".jsonl", ".json"):
            raise ValueError(f"data={spec!r}: give a .jsonl file, a folder of text files or a datasets name")
        return _jsonl_records(path)
    if not path.exists() and (spec.startswith((".", "/", "~")) or path.suffix in (".jsonl", ".json")):
        raise FileNotFoundError(f"data={spec!r} does not exist; check the path")
    return _datasets_records(spec, split)


def record_format(record: dict[str, Any], where: str) -> str:
    if "messages" in record:
        return "messages"
    if "prompt" in record and "completion" in record:
        return "prompt/completion"
    if "text" in record:
        return "text"
    raise ValueError(
        f"{where} has keys {sorted(record)}; each record needs 'text', 'prompt' and 'completion', "
        "or 'messages'"
    )


def split_records(records, val_percent: int) -> tuple[list[dict], list[dict]]:
    train, val = [], []
    for key, record in records:
        digest = hashlib.sha256(key.encode()).hexdigest()
        (val if is_validation(digest, val_percent) else train).append(record)
    if not train or not val:
        raise ValueError(
            f"val_percent={val_percent} of {len(records)} records left the "
            f"{'train' if not train else 'held-out'} split empty; change val_percent or pass eval_data"
        )
    return train, val


def _chat_parts(tok: Any, messages: list[dict[str, Any]], where: str) -> tuple[str, str]:
    if getattr(tok, "chat_template", None) is None:
        raise ValueError(
            f"{where} holds chat messages but the tokenizer has no chat template; use 'text' records"
        )
    if not messages or messages[-1].get("role") != "assistant":
        raise ValueError(f"{where}: the last message must be the assistant's reply (the text to learn)")
    prompt = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):
        raise ValueError(f"{where}: the chat template does not render the conversation as prompt + reply")
    return prompt, full[len(prompt) :]


def _ids(tok: Any, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


def tokenize(records: list[dict], tok: Any, block_size: int, name: str) -> list[dict[str, Tensor]]:
    """Examples ``{"input_ids", "labels"}``: packed blocks for text, one masked sequence per prompt record."""
    kinds = {record_format(r, f"{name} record {i}") for i, r in enumerate(records)}
    if len(kinds) > 1:
        raise ValueError(
            f"{name} mixes record formats {sorted(kinds)}; use one of {', '.join(FORMATS)} per file"
        )
    eos = tok.eos_token_id
    if eos is None:
        raise ValueError(
            "the tokenizer has no eos_token: set one (tokenizer.eos_token = ...) and save it again"
        )
    if kinds == {"text"}:
        stream: list[int] = []
        for r in records:
            stream += _ids(tok, str(r["text"])) + [eos]
        n = len(stream) // block_size
        if n == 0:
            raise ValueError(f"{name} has {len(stream)} tokens, fewer than one block of {block_size}")
        blocks = torch.tensor(stream[: n * block_size]).view(n, block_size)
        return [{"input_ids": b, "labels": b} for b in blocks]
    out = []
    for i, r in enumerate(records):
        if "messages" in r:
            prompt, completion = _chat_parts(tok, r["messages"], f"{name} record {i}")
        else:
            prompt, completion = str(r["prompt"]), str(r["completion"])
        p, c = _ids(tok, prompt), _ids(tok, completion)
        c += [] if c and c[-1] == eos else [eos]  # a chat template may end the reply with it already
        ids = (p + c)[:block_size]  # longer sequences are cut at the context
        labels = ([-100] * len(p) + c)[:block_size]
        if any(v != -100 for v in labels[1:]):
            out.append({"input_ids": torch.tensor(ids), "labels": torch.tensor(labels)})
    if not out:
        raise ValueError(f"{name}: every completion lies beyond block_size={block_size}; raise block_size")
    return out


class PadCollator:
    """Pads a batch to its longest sequence (right side): ``pad`` ids, ``labels`` -100, ``attention_mask``."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, examples: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        longest = max(int(e["input_ids"].shape[0]) for e in examples)
        ids = torch.full((len(examples), longest), self.pad_id, dtype=torch.long)
        labels = torch.full_like(ids, -100)
        mask = torch.zeros_like(ids)
        for i, e in enumerate(examples):
            n = int(e["input_ids"].shape[0])
            ids[i, :n], labels[i, :n], mask[i, :n] = e["input_ids"], e["labels"], 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


class Ordered(torch.utils.data.Dataset):
    """Examples in a seeded order fixed up front, read sequentially (as :class:`~unikd.lm.corpus.Blocks`)."""

    def __init__(self, examples: list[dict[str, Tensor]], *, seed: int, epochs: int = 1) -> None:
        g = torch.Generator().manual_seed(seed)
        self.examples = examples
        self.order = torch.cat([torch.randperm(len(examples), generator=g) for _ in range(epochs)])

    def __len__(self) -> int:
        return self.order.numel()

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return self.examples[int(self.order[i])]


__all__ = ["FORMATS", "Ordered", "PadCollator", "read_records", "record_format", "split_records", "tokenize"]
