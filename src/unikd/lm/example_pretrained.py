"""``unikd lm-distill teacher=<model> ...``: the example's stages for pretrained models and your own data.

With ``teacher=`` a Hugging Face model name or folder, the teacher is loaded (not trained) and its tokenizer
is the one every model shares; ``student=`` is another model name or folder (its tokenizer is compared
with the teacher's id by id) or a size to build from scratch with the teacher's vocabulary. The data is
``data=`` (:mod:`unikd.lm.text_data`: a text folder, JSONL with ``text`` / ``prompt`` + ``completion`` /
chat ``messages``, or a ``datasets`` name), the held-out split ``eval_data=`` or ``val_percent`` of it.
"""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

from unikd.token import check_same_tokenizer

from .corpus import SKIP_PARTS, stdlib_root
from .evaluate import evaluate_lm
from .example_common import _wait_for, _write_json, build_model, record_corpus, world
from .example_config import CROSS_METHODS, LMExampleConfig
from .pretrained import load_causal_lm, load_tokenizer
from .text_data import Ordered, PadCollator, read_records, record_format, split_records, tokenize


def _budget(records: list[tuple[str, dict]], max_bytes: int, folder: bool) -> list[tuple[str, dict]]:
    """Text records up to ``max_bytes`` (the default corpus, the standard library, is far larger); in a
    folder, files under test suites and installed packages are skipped as in the built-in example."""
    kept, used = [], 0
    for key, record in records:
        if folder and SKIP_PARTS.intersection(key.split("/")[:-1]):
            continue
        if used >= max_bytes:
            print(f"[lm] data: read {len(kept)} of {len(records)} text records (max_bytes={max_bytes})")
            break
        kept.append((key, record))
        used += len(str(record.get("text", "")).encode())
    return kept


def _records(cfg: LMExampleConfig) -> tuple[list[dict], list[dict], str]:
    spec = cfg.data or cfg.corpus_dir or str(stdlib_root())
    records = read_records(spec, split=cfg.data_split)
    if "text" == record_format(records[0][1], f"{spec} record 0"):
        records = _budget(records, cfg.max_bytes, Path(spec).expanduser().is_dir())
    if cfg.eval_data:
        val = [r for _, r in read_records(cfg.eval_data, split="validation")]
        return [r for _, r in records], val, spec
    train, val = split_records(records, cfg.val_percent)
    return train, val, spec


def _val_batches(examples: list[dict], collate: PadCollator, size: int = 64):
    for start in range(0, len(examples), size):
        yield collate(examples[start : start + size])


def prepare_pretrained(cfg: LMExampleConfig, out: Path, echo) -> dict[str, Any]:
    """The shared tokenizer, the tokenized train / held-out examples, and how to make a student."""
    assert isinstance(cfg.teacher, str)
    t0 = time.perf_counter()
    tok = load_tokenizer(cfg.teacher, "teacher")
    student_tok = load_tokenizer(cfg.student, "student") if isinstance(cfg.student, str) else None
    if student_tok is not None:  # the trainer checks again; failing here costs no model load
        try:
            check_same_tokenizer(student_tok, tok)
        except ValueError as exc:
            raise ValueError(f"{exc}. For two tokenizers run methods from {list(CROSS_METHODS)}") from None
    train, val, spec = _records(cfg)
    train_ex = tokenize(train, tok, cfg.block_size, "data")
    val_ex = tokenize(val, tok, cfg.block_size, "eval data")[: cfg.val_blocks]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    collate = PadCollator(pad)
    summary = {
        "root": spec,
        "files": {"train": len(train), "val": len(val)},
        "format": record_format(train[0], "data"),
        "examples": {"train": len(train_ex), "val": len(val_ex)},
        "vocab_size": len(tok),
        "block_size": cfg.block_size,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    record_corpus(
        out,
        summary,
        f"[lm] data: {summary['format']} records from {spec}, {len(train)} train / {len(val)} held out, "
        f"{len(train_ex)} / {len(val_ex)} sequences of <= {cfg.block_size} tokens",
        echo,
    )
    return {
        "summary": summary,
        "train_examples": train_ex,
        "val_batches": partial(_val_batches, val_ex, collate),
        "collator": collate,
        "tokenizer": tok,
        "student_tokenizer": student_tok,
    }


def load_teacher(cfg: LMExampleConfig, out: Path, data: dict[str, Any], echo):
    """The pretrained teacher and its held-out perplexity (``teacher/result.json``, written once)."""
    t0 = time.perf_counter()
    teacher = load_causal_lm(cfg.teacher, "teacher", dtype=cfg.teacher_dtype or None)
    done = out / "teacher" / "result.json"
    if not done.exists():
        if world()[0] != 0:
            _wait_for(done, "the teacher's evaluation")
        else:
            metrics = evaluate_lm(teacher, data["val_batches"](), chunk_size=cfg.chunk_size)
            result = {
                **metrics,
                "model": cfg.teacher,
                "seconds": round(time.perf_counter() - t0, 1),
                "parameters": sum(p.numel() for p in teacher.parameters()),
                "curve": [],
                "processes": world()[1],
            }
            _write_json(done, result)
            echo(f"[lm] teacher {cfg.teacher}: held-out perplexity {metrics['val_ppl']:.2f}")
    return teacher, json.loads(done.read_text())


def make_student(cfg: LMExampleConfig, data: dict[str, Any], teacher, seed: int):
    """The student of one seed: the named model loaded afresh, or a Llama of ``cfg.student``'s size."""
    if isinstance(cfg.student, str):
        torch.manual_seed(seed)
        return load_causal_lm(cfg.student, "student", dtype=cfg.student_dtype or None)
    vocab = teacher.get_output_embeddings().weight.shape[0]  # the teacher's head rows, padding included
    return build_model(cfg.student, vocab, cfg.block_size, data["tokenizer"].eos_token_id, seed=seed)


def train_set(cfg: LMExampleConfig, data: dict[str, Any], steps: int, seed: int) -> Ordered:
    examples = data["train_examples"]
    epochs = max(1, -(-steps * cfg.batch_size // len(examples)))
    return Ordered(examples, seed=seed, epochs=epochs)


__all__ = ["load_teacher", "make_student", "prepare_pretrained", "train_set"]
