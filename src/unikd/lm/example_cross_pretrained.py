"""``unikd lm-distill teacher=<model> student=<model> methods=[ce,uld,...] data=...``: a pretrained pair whose
tokenizers differ, distilled with a cross-tokenizer loss.

Each model keeps its own tokenizer (loaded from its folder or name). The data must be text records (a folder
of text files, or ``{"text": ...}`` JSONL / datasets rows): they are joined by the student's end-of-text
token and cut every ``block_size`` student tokens into text chunks, which both tokenizers read per batch
(:mod:`unikd.lm.example_cross`). Every model is scored in bits per byte on the held-out chunks.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from .example_common import _wait_for, _write_json, record_corpus, world
from .example_config import LMExampleConfig
from .example_cross import chunk_bpb, text_chunks
from .example_pretrained import _records
from .pretrained import load_causal_lm, load_tokenizer
from .text_data import record_format


def _texts(records: list[dict], name: str) -> list[str]:
    fmt = record_format(records[0], name)
    if fmt != "text":
        raise ValueError(
            f"{name} holds {fmt} records; a cross-tokenizer run cuts plain text into chunks that both "
            "tokenizers read: give text records ({'text': ...} JSONL or a folder of text files)"
        )
    return [str(r["text"]) for r in records]


def prepare_pretrained_cross(cfg: LMExampleConfig, out: Path, echo) -> dict[str, Any]:
    """Both tokenizers, the text chunks of the data, and how to load the student of a seed."""
    assert isinstance(cfg.teacher, str) and isinstance(cfg.student, str)
    t0 = time.perf_counter()
    teacher_tok = load_tokenizer(cfg.teacher, "teacher")
    student_tok = load_tokenizer(cfg.student, "student")
    train, val, spec = _records(cfg)
    train_texts = text_chunks(student_tok, _texts(train, "data"), cfg.block_size)
    val_texts = text_chunks(student_tok, _texts(val, "eval data"), cfg.block_size)[: cfg.val_blocks]
    if not train_texts or not val_texts:
        raise ValueError(
            f"the data gives {len(train_texts)} training and {len(val_texts)} held-out chunks of "
            f"{cfg.block_size} student tokens; give more text or a smaller block_size"
        )
    summary = {
        "root": spec,
        "files": {"train": len(train), "val": len(val)},
        "format": "text",
        "chunks": {"train": len(train_texts), "val": len(val_texts)},
        "vocab_size": len(student_tok),
        "teacher_vocab_size": len(teacher_tok),
        "block_size": cfg.block_size,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    record_corpus(
        out,
        summary,
        f"[lm] data: text from {spec}, {len(train_texts)} / {len(val_texts)} chunks of {cfg.block_size} "
        f"student tokens; tokenizers: student {len(student_tok)}, teacher {len(teacher_tok)} tokens",
        echo,
    )

    def make_student(seed: int):
        torch.manual_seed(seed)
        return load_causal_lm(cfg.student, "student", dtype=cfg.student_dtype or None)

    return {
        "summary": summary,
        "tokenizer": student_tok,
        "teacher_tokenizer": teacher_tok,
        "train_texts": train_texts,
        "val_texts": val_texts,
        "make_student": make_student,
    }


def load_cross_teacher(cfg: LMExampleConfig, out: Path, data: dict[str, Any], echo):
    """The pretrained teacher and its bits per byte on the held-out chunks (``teacher/result.json``)."""
    t0 = time.perf_counter()
    teacher = load_causal_lm(cfg.teacher, "teacher", dtype=cfg.teacher_dtype or None)
    done = out / "teacher" / "result.json"
    if not done.exists() and world()[0] != 0:
        _wait_for(done, "the teacher's evaluation")
    elif not done.exists():
        metrics = chunk_bpb(cfg, teacher, data["teacher_tokenizer"], data["val_texts"])
        result = {
            **metrics,
            "model": cfg.teacher,
            "seconds": round(time.perf_counter() - t0, 1),
            "parameters": sum(p.numel() for p in teacher.parameters()),
            "curve": [],
            "processes": world()[1],
        }
        _write_json(done, result)
        echo(f"[lm] teacher {cfg.teacher}: held-out bits per byte {metrics['val_bpb']:.4f}")
    return teacher, json.loads(done.read_text())


__all__ = ["load_cross_teacher", "prepare_pretrained_cross"]
