"""``unikd lm-distill``: distil a causal LM end to end on the Python standard library, no download needed.

Stages (each skipped when its output exists, so rerunning the command resumes):

1. ``data/``: the corpus split by file, a byte-level BPE trained on the training files, the token blocks;
2. ``teacher/``: a Llama decoder trained with cross-entropy (``transformers.Trainer``), saved with
   ``save_pretrained``, and its validation perplexity;
3. ``runs/<method>/seed<k>/``: one student per method and seed (half the teacher's depth and width), CE
   only or :class:`~unikd.lm.DistillationTrainer` with a token loss, then its validation perplexity and
   per-token KL to the teacher (``result.json``, with the training loss curve);
4. ``results.json``, ``results.md`` (mean ± std and paired differences against KD) and ``lm.png``.

Seeds fix the student's initialisation and the order of the training blocks; every method sees the same
blocks in the same order for a seed. Under ``torchrun --nproc_per_node N`` the students train with DDP
(gloo on CPU): the batch is split across processes and the global batches are the single-process ones.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from unikd._atomic import atomic_write_text

from ._require import require
from .corpus import batches, encode_blocks, load_tokenizer, read_split, stdlib_root, train_tokenizer
from .evaluate import evaluate_lm
from .example_cache import INDEX, cache_record, prepare_sparse_teacher
from .example_common import (
    _save_tensor,
    _wait_for,
    _write_json,
    build_model,
    check_settings,
    world,
)
from .example_config import LMExampleConfig, config_to_yaml, is_cross
from .example_report import write_report
from .example_samples import sample_metrics
from .example_trainers import OrderedDistillationTrainer, OrderedTrainer, curve, seeded_blocks, training_args
from .trainer import DistillSettings

transformers = require("transformers")


def prepare_data(cfg: LMExampleConfig, out: Path, echo) -> dict[str, Any]:
    folder = out / "data"
    done = folder / "corpus.json"
    if not done.exists():
        if world()[0] != 0:
            _wait_for(done, "the prepared data")
        else:
            t0 = time.perf_counter()
            root = Path(cfg.corpus_dir) if cfg.corpus_dir else stdlib_root()
            train_texts, val_texts, summary = read_split(
                root, val_percent=cfg.val_percent, max_bytes=cfg.max_bytes
            )
            folder.mkdir(parents=True, exist_ok=True)
            tok = train_tokenizer(train_texts, cfg.vocab_size, folder / "tokenizer.json")
            blocks = {
                "train": encode_blocks(tok, train_texts, cfg.block_size),
                "val": encode_blocks(tok, val_texts, cfg.block_size),
            }
            _save_tensor(folder / "blocks.pt", blocks)
            summary.update(
                vocab_size=tok.get_vocab_size(),
                block_size=cfg.block_size,
                blocks={k: int(v.shape[0]) for k, v in blocks.items()},
                seconds=round(time.perf_counter() - t0, 1),
            )
            _write_json(done, summary)
            echo(
                f"[lm] data: {summary['files']['train']} train / {summary['files']['val']} validation files, "
                f"{summary['blocks']['train']} / {summary['blocks']['val']} blocks of {cfg.block_size} "
                f"tokens, "
                f"BPE vocabulary {summary['vocab_size']} ({summary['seconds']} s)"
            )
    summary = json.loads(done.read_text())
    if summary["block_size"] != cfg.block_size:
        raise ValueError(
            f"{folder} holds blocks of {summary['block_size']} tokens but block_size="
            f"{cfg.block_size}; use another out_dir or delete {folder}"
        )
    blocks = torch.load(folder / "blocks.pt")
    tok = load_tokenizer(folder / "tokenizer.json")
    return {
        "summary": summary,
        "train": blocks["train"],
        "val": blocks["val"][: cfg.val_blocks],
        "tokenizer": tok,
    }


def train_teacher(cfg: LMExampleConfig, out: Path, data: dict[str, Any], echo):
    folder = out / "teacher"
    done = folder / "result.json"
    if not done.exists():
        # Every process trains (DDP under torchrun, the same global batches as one process); rank 0 saves.
        t0 = time.perf_counter()
        eos = data["tokenizer"].token_to_id("<|endoftext|>")
        vocab = data["tokenizer"].get_vocab_size()
        model = build_model(cfg.teacher, vocab, cfg.block_size, eos, seed=1234)
        args = training_args(cfg, folder, steps=cfg.teacher_steps, lr=cfg.teacher_lr, seed=1234)
        trainer = OrderedTrainer(
            model=model, args=args, train_dataset=seeded_blocks(cfg, data["train"], cfg.teacher_steps, 1234)
        )
        trainer.remove_callback(transformers.trainer_callback.PrinterCallback)
        trainer.train()
        if world()[0] != 0:
            _wait_for(done, "the saved teacher")
        else:
            tmp = folder / "model.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            model.save_pretrained(tmp)
            shutil.rmtree(folder / "model", ignore_errors=True)
            tmp.replace(folder / "model")
            metrics = evaluate_lm(model, batches(data["val"], 64), chunk_size=cfg.chunk_size)
            result = {
                **metrics,
                "seconds": round(time.perf_counter() - t0, 1),
                "curve": curve(trainer),
                "parameters": sum(p.numel() for p in model.parameters()),
                "processes": world()[1],
            }
            _write_json(done, result)
            shutil.rmtree(folder / "trainer", ignore_errors=True)
            echo(
                f"[lm] teacher: {cfg.teacher_steps} steps in {result['seconds']} s, validation perplexity "
                f"{metrics['val_ppl']:.2f}"
            )
    teacher = transformers.LlamaForCausalLM.from_pretrained(folder / "model")
    return teacher, json.loads(done.read_text())


def train_student(
    cfg: LMExampleConfig, method: str, seed: int, teacher, data: dict[str, Any], run_dir: Path
) -> dict[str, Any] | None:
    """Train one student; return its result on rank 0 (None on other ranks)."""
    t0 = time.perf_counter()
    pretrained = "train_examples" in data  # teacher= named a model (unikd.lm.example_pretrained)
    cached = data.get("sparse_teacher") is not None and method != "ce"  # CE reads no teacher
    if pretrained:
        from .example_pretrained import make_student
        from .example_pretrained import train_set as pretrained_set

        student = make_student(cfg, data, teacher, seed)
        train_set = pretrained_set(cfg, data, cfg.steps, seed)
    else:
        eos = data["tokenizer"].token_to_id("<|endoftext|>")
        student = build_model(cfg.student, data["tokenizer"].get_vocab_size(), cfg.block_size, eos, seed=seed)
        train_set = seeded_blocks(cfg, data["train"], cfg.steps, seed, index_key=INDEX if cached else None)
    args = training_args(cfg, run_dir, steps=cfg.steps, lr=cfg.lr, seed=seed)
    extra = {"data_collator": data["collator"]} if pretrained else {}
    if method == "ce":
        trainer = OrderedTrainer(model=student, args=args, train_dataset=train_set, **extra)
    else:
        settings = DistillSettings(
            method,
            hyperparameters=dict(cfg.hyperparameters.get(method, {})),
            ce_weight=cfg.ce_weight,
            weight=cfg.weight,
            fused=cfg.fused,
            chunk_size=cfg.chunk_size,
            teacher_device=cfg.teacher_device or None,
            teacher_dtype=None if cfg.teacher_dtype in ("", "auto") else cfg.teacher_dtype,
            on_policy=cfg.on_policy,
            seq_kd=cfg.seq_kd,
            generation=cfg.generation,
        )
        if data.get("student_tokenizer") is not None:  # two named models: their tokenizers must agree
            extra.update(student_tokenizer=data["student_tokenizer"], teacher_tokenizer=data["tokenizer"])
        if cached:  # no teacher forward: the cached rows of each block
            extra.update(sparse_teacher=data["sparse_teacher"], teacher_index=INDEX)
        trainer = OrderedDistillationTrainer(
            student, None if "sparse_teacher" in extra else teacher, args, distill=settings,
            train_dataset=train_set, **extra
        )
    trainer.remove_callback(transformers.trainer_callback.PrinterCallback)
    trainer.train()
    seconds = time.perf_counter() - t0
    if not trainer.is_world_process_zero():
        return None
    val = data["val_batches"]() if pretrained else batches(data["val"], 64)
    metrics = evaluate_lm(student, val, teacher, chunk_size=cfg.chunk_size)
    metrics.update(sample_metrics(cfg, student, teacher, data, trainer))
    shutil.rmtree(run_dir / "trainer", ignore_errors=True)
    if cfg.save_students:
        student.save_pretrained(run_dir / "model")
        if pretrained:
            data["tokenizer"].save_pretrained(run_dir / "model")
    return {
        **metrics,
        "method": method,
        "seed": seed,
        "train_seconds": round(seconds, 1),
        "processes": world()[1],
        "curve": curve(trainer),
        **({"sparse_teacher": cache_record(cfg, data["sparse_teacher"])} if cached else {}),
    }


def run_example(cfg: LMExampleConfig, *, tag: str = "", echo=print) -> dict[str, Any] | None:
    """Run every stage that has not run yet; return the summary (rank 0) or None (other ranks).

    ``cfg.threads`` sets torch's CPU threads for the call (restored afterwards).
    """
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _run_stages(cfg, tag, echo)
    finally:
        torch.set_num_threads(threads)


def _run_stages(cfg: LMExampleConfig, tag: str, echo) -> dict[str, Any] | None:
    out = Path(cfg.out_dir)
    rank, size = world()
    pretrained = isinstance(cfg.teacher, str)
    cross = is_cross(cfg)  # a teacher with its own tokenizer (unikd.lm.example_cross)
    if pretrained and cross:
        from .example_cross_pretrained import load_cross_teacher, prepare_pretrained_cross

        data = prepare_pretrained_cross(cfg, out, echo)
    elif pretrained:  # load the tokenizers and read data= first: a wrong name or path pins no settings
        from .example_pretrained import load_teacher, prepare_pretrained

        data = prepare_pretrained(cfg, out, echo)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        check_settings(cfg, out)
        atomic_write_text(out / ("config.yaml" if not tag else f"config-{tag}.yaml"), config_to_yaml(cfg))
    if cross:
        from .example_cross import prepare_cross_data, teacher_bpb, train_cross_student
    if cross and pretrained:
        teacher, teacher_result = load_cross_teacher(cfg, out, data, echo)
    elif cross:
        data = prepare_cross_data(cfg, out, echo)
        teacher, teacher_result = train_teacher(cfg, out, data["teacher_data"], echo)
        teacher_result = {**teacher_result, **teacher_bpb(cfg, out, teacher, data)}  # val_bpb, val_bytes
    elif pretrained:
        teacher, teacher_result = load_teacher(cfg, out, data, echo)
    else:
        data = prepare_data(cfg, out, echo)
        teacher, teacher_result = train_teacher(cfg, out, data, echo)
        data["sparse_teacher"] = prepare_sparse_teacher(cfg, out, data, teacher, echo)
    suffix = f"-{tag}" if tag else ""
    todo = [
        (m, s)
        for s in cfg.seeds
        for m in cfg.methods
        if not (out / "runs" / m / f"seed{s}{suffix}" / "result.json").exists()
    ]
    total = len(cfg.seeds) * len(cfg.methods)
    t0 = time.perf_counter()
    for i, (method, seed) in enumerate(todo):
        run_dir = out / "runs" / method / f"seed{seed}{suffix}"
        result = (train_cross_student if cross else train_student)(cfg, method, seed, teacher, data, run_dir)
        if result is None:
            continue
        _write_json(run_dir / "result.json", result)
        left = (time.perf_counter() - t0) / (i + 1) * (len(todo) - i - 1)
        kl = f", KL to teacher {result['val_kl']:.4f}" if "val_kl" in result else ""
        kl += f", bits per byte {result['val_bpb']:.4f}" if "val_bpb" in result else ""
        echo(
            f"[lm] {method} seed {seed}{' (' + tag + ')' if tag else ''}: {result['train_seconds']} s, "
            f"validation perplexity {result['val_ppl']:.3f}{kl} "
            f"[{total - len(todo) + i + 1}/{total}, ~{left / 60:.0f} min left]"
        )
    if rank != 0:
        return None
    if cross:
        from .example_cross_report import write_cross_report

        return write_cross_report(cfg, out, teacher_result, data["summary"], tag=tag, echo=echo)
    return write_report(cfg, out, teacher_result, data["summary"], tag=tag, echo=echo)


__all__ = ["build_model", "run_example", "train_student", "train_teacher", "prepare_data", "world"]
