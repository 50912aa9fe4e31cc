"""``unikd lm-distill teacher_vocab_size=N``: the example with a teacher that has its own tokenizer.

The teacher gets a byte-level BPE of ``teacher_vocab_size`` tokens, the students one of ``vocab_size``,
both trained on the same training files. The teacher trains on blocks of its own tokens; the students on
text chunks (the training stream cut every ``block_size`` student tokens, so a chunk is about one block),
tokenized by both tokenizers per batch (:class:`~unikd.lm.cross_collator.CrossTokenizerCollator`): ``ce``
reads only the student's tokens, a cross-tokenizer method (``uld``, ``span_kl``) also runs the teacher on
its own. Every model is scored in bits per byte on the same validation chunks (:mod:`unikd.lm.bpb`, each
chunk after the end-of-text token), the measure that does not depend on the tokenizer.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from unikd._atomic import atomic_write_text

from ._require import require
from .bpb import evaluate_bpb
from .corpus import SPECIAL_TOKENS, encode_blocks, load_tokenizer, read_split, stdlib_root, train_tokenizer
from .cross_collator import CrossTokenizerCollator, encode_with_offsets
from .example_common import _save_tensor, _wait_for, _write_json, build_model, world
from .example_config import LMExampleConfig
from .example_trainers import OrderedDistillationTrainer, OrderedTrainer, curve, training_args
from .settings import DistillSettings
from .text_data import Ordered

transformers = require("transformers")

EOS = SPECIAL_TOKENS[0]


def eos_of(tok: Any) -> tuple[str, int | None]:
    """The end-of-text token's text and id: a ``tokenizers.Tokenizer``'s ``<|endoftext|>`` or a Hugging Face
    tokenizer's ``eos_token`` (``("", None)`` without one)."""
    if hasattr(tok, "token_to_id"):
        return EOS, tok.token_to_id(EOS)
    return (tok.eos_token or "", tok.eos_token_id) if tok.eos_token is not None else ("", None)


def vocab_of(tok: Any) -> int:
    return tok.get_vocab_size() if hasattr(tok, "get_vocab_size") else len(tok)


def text_chunks(tok: Any, texts: list[str], block_size: int) -> list[str]:
    """The texts joined by the end-of-text token, cut after every ``block_size`` tokens of ``tok``."""
    eos = eos_of(tok)[0] or "\n\n"
    joined = eos.join(texts) + eos
    offsets = encode_with_offsets(tok, [joined])[0][1]
    return [
        joined[offsets[k][0] : offsets[k + block_size - 1][1]]
        for k in range(0, len(offsets) - block_size + 1, block_size)
    ]


def prepare_cross_data(cfg: LMExampleConfig, out: Path, echo) -> dict[str, Any]:
    """Both tokenizers, the teacher's token blocks and the students' text chunks (``data/``, made once)."""
    folder = out / "data"
    done = folder / "corpus.json"
    if not done.exists() and world()[0] != 0:
        _wait_for(done, "the prepared data")
    elif not done.exists():
        t0 = time.perf_counter()
        root = Path(cfg.corpus_dir) if cfg.corpus_dir else stdlib_root()
        train, val, summary = read_split(root, val_percent=cfg.val_percent, max_bytes=cfg.max_bytes)
        folder.mkdir(parents=True, exist_ok=True)
        student = train_tokenizer(train, cfg.vocab_size, folder / "tokenizer.json")
        teacher = train_tokenizer(train, cfg.teacher_vocab_size, folder / "teacher_tokenizer.json")
        blocks = {"train": encode_blocks(teacher, train, cfg.block_size)}
        blocks["val"] = encode_blocks(teacher, val, cfg.block_size)
        _save_tensor(folder / "teacher_blocks.pt", blocks)
        chunks = {"train": text_chunks(student, train, cfg.block_size)}
        chunks["val"] = text_chunks(student, val, cfg.block_size)
        atomic_write_text(folder / "chunks.json", json.dumps(chunks))
        summary.update(
            vocab_size=student.get_vocab_size(),
            teacher_vocab_size=teacher.get_vocab_size(),
            block_size=cfg.block_size,
            blocks={k: int(v.shape[0]) for k, v in blocks.items()},
            chunks={k: len(v) for k, v in chunks.items()},
            seconds=round(time.perf_counter() - t0, 1),
        )
        _write_json(done, summary)
        echo(
            f"[lm] data: {summary['files']['train']} train / {summary['files']['val']} validation files; "
            f"teacher BPE {summary['teacher_vocab_size']}, {summary['blocks']['train']} blocks; student BPE "
            f"{summary['vocab_size']}, {summary['chunks']['train']} / {summary['chunks']['val']} text chunks"
        )
    summary = json.loads(done.read_text())
    blocks = torch.load(folder / "teacher_blocks.pt")
    chunks = json.loads((folder / "chunks.json").read_text())
    teacher_tok = load_tokenizer(folder / "teacher_tokenizer.json")
    return {
        "summary": summary,
        "tokenizer": load_tokenizer(folder / "tokenizer.json"),
        "teacher_tokenizer": teacher_tok,
        # what train_teacher reads: the teacher's own tokenizer and blocks
        "teacher_data": {"tokenizer": teacher_tok, "train": blocks["train"], "val": blocks["val"]},
        "train_texts": chunks["train"],
        "val_texts": chunks["val"][: cfg.val_blocks],
    }


def chunk_bpb(cfg: LMExampleConfig, model, tok, texts: list[str]) -> dict[str, float]:
    return evaluate_bpb(
        model,
        tok,
        texts,
        max_length=cfg.block_size,
        prefix_id=eos_of(tok)[1],
        chunk_size=cfg.chunk_size,
    )


def teacher_bpb(cfg: LMExampleConfig, out: Path, teacher, data: dict[str, Any]) -> dict[str, float]:
    """The teacher's bits per byte on the students' validation chunks (``teacher/bpb.json``, once)."""
    path = out / "teacher" / "bpb.json"
    if not path.exists() and world()[0] == 0:
        m = chunk_bpb(cfg, teacher, data["teacher_tokenizer"], data["val_texts"])
        keep = {"val_bpb": m["val_bpb"], "val_bytes": m["val_bytes"], "val_chunk_ppl": m["val_ppl"]}
        _write_json(path, keep)
    elif not path.exists():
        _wait_for(path, "the teacher's bits per byte")
    return json.loads(path.read_text())


def train_cross_student(
    cfg: LMExampleConfig, method: str, seed: int, teacher, data: dict[str, Any], run_dir: Path
) -> dict[str, Any] | None:
    """One student on the text chunks in the seed's order; its result on rank 0 (None elsewhere)."""
    t0 = time.perf_counter()
    st, tt = data["tokenizer"], data["teacher_tokenizer"]
    if "make_student" in data:  # student= names a model (unikd.lm.example_cross_pretrained)
        student = data["make_student"](seed)
    else:
        student = build_model(cfg.student, vocab_of(st), cfg.block_size, eos_of(st)[1], seed=seed)
    rows = [{"text": t} for t in data["train_texts"]]
    epochs = max(1, -(-cfg.steps * cfg.batch_size // len(rows)))
    train_set = Ordered(rows, seed=seed, epochs=epochs)
    args = training_args(cfg, run_dir, steps=cfg.steps, lr=cfg.lr, seed=seed)
    args.remove_unused_columns = False  # the collator reads the rows' text
    collate = CrossTokenizerCollator(st, None if method == "ce" else tt, max_length=cfg.block_size)
    if method == "ce":
        trainer = OrderedTrainer(model=student, args=args, train_dataset=train_set, data_collator=collate)
    else:
        settings = DistillSettings(
            method,
            hyperparameters=dict(cfg.hyperparameters.get(method, {})),
            ce_weight=cfg.ce_weight,
            weight=cfg.weight,
            teacher_device=cfg.teacher_device or None,
            alignment=cfg.alignment,
        )
        trainer = OrderedDistillationTrainer(
            student,
            teacher,
            args,
            distill=settings,
            train_dataset=train_set,
            data_collator=collate,
            student_tokenizer=st,
            teacher_tokenizer=tt,
        )
    trainer.remove_callback(transformers.trainer_callback.PrinterCallback)
    trainer.train()
    seconds = time.perf_counter() - t0
    if not trainer.is_world_process_zero():
        return None
    metrics = chunk_bpb(cfg, student, st, data["val_texts"])
    if cfg.save_students:
        student.save_pretrained(run_dir / "model")
    return {
        **metrics,
        "method": method,
        "seed": seed,
        "train_seconds": round(seconds, 1),
        "processes": world()[1],
        "curve": curve(trainer),
    }


__all__ = ["eos_of", "prepare_cross_data", "teacher_bpb", "text_chunks", "train_cross_student", "vocab_of"]
