"""Distilling from a sparse-teacher cache: :class:`~unikd.lm.DistillationTrainer` with no teacher in memory.

``DistillationTrainer(student, None, args, sparse_teacher=<cache folder>, ...)`` reads each batch's teacher
rows (top-k + tail, or sampled) from a :class:`~unikd.token.SparseTeacherCache` by the examples' cache
indices (:mod:`unikd.lm.cached_data`) and hands them to the same token losses as a live teacher: the fused
path (student hidden states x head, chunk by chunk, the cross-entropy in the same pass) takes a
:class:`~unikd.token.SparseTeacher` directly; ``fused=False`` applies it to the student's logits.

Checks, before training and again on every batch: the cache's vocabulary fits the student's head, the
examples' token ids are the ones the cache was computed on (``input_ids.npy`` beside the cache), no example
is longer than the cache's sequences, and every kept label has a teacher row. Log-probabilities imported at
a temperature ``T`` need the loss at temperature ``T`` (:func:`unikd.token.teacher_for_loss`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from unikd.token import (
    FusedDistillLoss,
    SparseTeacher,
    SparseTeacherCache,
    TokenDistillLoss,
    cross_entropy,
    read_cache_token_ids,
    resolve_vocab,
    teacher_for_loss,
)
from unikd.token.cache_tokens import PAD, token_ids_tensor
from unikd.token.sparse import TAIL_FLOOR
from unikd.token.specs import get_spec

from .cached_data import route_index
from .capture import HiddenCapture, check_head_capture, hidden_states, output_head
from .checks import check_dataset, context_length


class CachedTeacher:
    """One cache folder (or an open :class:`~unikd.token.SparseTeacherCache`) read for one dataset."""

    def __init__(self, source: str | Path | SparseTeacherCache, *, loss: str, hyperparameters: dict) -> None:
        self.cache = source if isinstance(source, SparseTeacherCache) else SparseTeacherCache(source)
        folder = self.cache.folder
        self.ids = read_cache_token_ids(folder)
        if self.ids is None:
            raise ValueError(
                f"{folder} has no token ids beside it (input_ids.npy), so the examples cannot be checked "
                "against the tokens the teacher read: write them with unikd.token.write_cache_token_ids("
                "folder, input_ids) (import_logprobs and unikd lm-distill write them)"
            )
        want = (self.cache.num_sequences, self.cache.seq_len)
        if tuple(self.ids.shape) != want:
            raise ValueError(f"{folder}: input_ids.npy has shape {self.ids.shape}, the cache {want}")
        spec = get_spec(loss)
        self.loss_name = loss
        self.loss_temperature = float(
            hyperparameters.get("temperature", spec.defaults.get("temperature", 1.0))
        )
        if self.cache.temperature != 1.0 and "temperature" not in spec.defaults:
            raise ValueError(
                f"{folder} holds log-probabilities at temperature {self.cache.temperature:g} but {loss!r} "
                "has no temperature to match it; use a loss with a temperature (kd, reverse_kl, jsd, ...)"
            )
        empty = SparseTeacher(
            torch.zeros(0, self.cache.k), torch.zeros(0, self.cache.k, dtype=torch.long), torch.zeros(0)
        )
        self._tempered(empty)  # a temperature mismatch fails now, not at the first batch

    def _tempered(self, sp: SparseTeacher) -> SparseTeacher:
        return teacher_for_loss(
            sp, self.cache.temperature, self.loss_temperature, loss_name=repr(self.loss_name)
        )

    def _mismatch(self, index: int, length: int, seen: Tensor) -> str | None:
        if not 0 <= index < self.cache.num_sequences:
            return f"its cache index {index} is outside the cache's 0..{self.cache.num_sequences - 1}"
        if length > self.cache.seq_len:
            return f"it has {length} tokens, the cache's sequences {self.cache.seq_len}"
        row = token_ids_tensor(self.ids, np.array([index]))[0]
        cached_len = int((row != PAD).sum())
        if cached_len != length:
            return f"it has {length} tokens but cache row {index} was computed on {cached_len}"
        bad = (row[:length] != seen).nonzero()
        if len(bad):
            t = int(bad[0])
            return f"token {t} is {int(seen[t])} but cache row {index} was computed on {int(row[t])}"
        return None

    def check_examples(self, dataset: Any, key: str, *, name: str, max_examples: int = 10_000) -> None:
        """The first ``max_examples`` examples match their cache rows (ids, lengths, indices)."""
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            return
        for i in range(min(len(dataset), max_examples)):
            example = dataset[i]
            if key not in example:
                raise ValueError(f"{name}[{i}] has no column {key!r} (teacher_index=) holding its cache row")
            ids = torch.as_tensor(example["input_ids"]).reshape(-1).long()
            problem = self._mismatch(int(example[key]), ids.numel(), ids)
            if problem:
                raise ValueError(
                    f"{name}[{i}] does not match the sparse-teacher cache {self.cache.folder}: {problem}. "
                    "The "
                    "cache must be built from these examples, in this tokenization (for an evaluation set, "
                    "pass its own cache as eval_sparse_teacher=)"
                )

    def batch(
        self, index: Tensor, inputs: dict[str, Any], targets: Tensor, ignore_index: int
    ) -> SparseTeacher:
        """The teacher rows of a batch, checked against its tokens and labels, on the labels' device."""
        idx = index.detach().cpu().numpy().astype(np.int64)
        seen = inputs["input_ids"].detach().cpu()
        steps = seen.shape[1]
        if steps > self.cache.seq_len:
            raise ValueError(f"a batch has {steps} positions but the cache's sequences {self.cache.seq_len}")
        mask = inputs.get("attention_mask")
        mask = torch.ones_like(seen, dtype=torch.bool) if mask is None else mask.detach().cpu().bool()
        cached = token_ids_tensor(self.ids, idx)[:, :steps]
        bad = (mask & (cached != seen)).nonzero()
        if len(bad):
            b, t = (int(v) for v in bad[0])
            raise ValueError(
                f"the batch's example with cache index {idx[b]} has token {int(seen[b, t])} at position {t} "
                f"but the cache was computed on {int(cached[b, t])} (another tokenization, order or "
                "padding side? only right padding keeps positions aligned)"
            )
        full = self.cache.read(index)
        sp = SparseTeacher(full.logprobs[:, :steps], full.ids[:, :steps], full.tail[:, :steps])
        kept = targets.detach().cpu() != ignore_index
        missing = (kept & (sp.logprobs.amax(dim=-1) <= TAIL_FLOOR)).nonzero()
        if len(missing):
            b, t = (int(v) for v in missing[0])
            raise ValueError(
                f"the cache has no teacher row for the example with cache index {idx[b]} at position {t}, "
                "where "
                "its label is kept: import log-probabilities for every position the loss reads, or mask it "
                "(label -100)"
            )
        return self._tempered(sp).to(targets.device)


def setup_cached_teacher(
    trainer: Any,
    distill: Any,
    sparse_teacher: Any,
    *,
    eval_sparse_teacher: Any,
    teacher_index: str | None,
    student_tokenizer: Any,
) -> None:
    """The part of ``setup_distillation`` for a cached teacher: checks, the data's cache indices, the loss."""
    if distill.generates:  # a cache holds rows for the data's tokens only, never for sampled ones
        raise ValueError(
            "on_policy / seq_kd sample completions that a sparse-teacher cache has no rows for: train on "
            "sampled completions with a live teacher, or set on_policy=0 and seq_kd=0 with sparse_teacher="
        )
    model = trainer.model
    hp = distill.hyperparameters
    trainer._cached = CachedTeacher(sparse_teacher, loss=distill.loss, hyperparameters=hp)
    trainer._eval_cached = (
        CachedTeacher(eval_sparse_teacher, loss=distill.loss, hyperparameters=hp)
        if eval_sparse_teacher is not None
        else trainer._cached
    )
    rows, _ = output_head(model, "student")
    trainer.vocab = resolve_vocab(rows.shape[0], trainer._cached.cache.vocab_size, distill.vocab_size)
    size = len(student_tokenizer.get_vocab()) if hasattr(student_tokenizer, "get_vocab") else None
    if size is not None and size > trainer.vocab:
        raise ValueError(f"the tokenizer has {size} tokens but the cache and head score only {trainer.vocab}")
    trainer.context = context_length(model)
    trainer.teacher = None
    if isinstance(trainer.eval_dataset, dict):
        raise ValueError("a cached teacher evaluates one eval_dataset, not a dict of them")
    key = route_index(trainer, teacher_index)
    trainer._cache_key = key
    for data, cached, name in (
        (trainer.train_dataset, trainer._cached, "train_dataset"),
        (trainer.eval_dataset, trainer._eval_cached, "eval_dataset"),
    ):
        if data is not None:
            check_dataset(data, trainer.context, ignore_index=distill.ignore_index, name=name)
            cached.check_examples(data, key, name=name)
    common = {"ignore_index": distill.ignore_index, "vocab_size": distill.vocab_size}
    if distill.fused:
        check_head_capture(model, "student")
        trainer.loss_fn = FusedDistillLoss(
            distill.loss,
            chunk_size=distill.chunk_size,
            ce_weight=distill.ce_weight,
            weight=distill.weight,
            **common,
            **hp,
        )
        trainer._student_capture = HiddenCapture(model)
    else:
        trainer.loss_fn = TokenDistillLoss(distill.loss, **common, **hp)


def cached_loss(
    trainer: Any,
    model: nn.Module,
    inputs: dict[str, Any],
    index: Tensor,
    targets: Tensor,
    progress: float | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(loss, ce, term)`` of one batch against its cached teacher rows."""
    d = trainer.distill
    cached = trainer._cached if model.training else trainer._eval_cached
    sparse = cached.batch(index, inputs, targets, d.ignore_index)
    if d.fused:
        hs = hidden_states(model, trainer._student_capture, inputs)
        ws, bs = output_head(trainer.accelerator.unwrap_model(model), "student")
        loss, parts = trainer.loss_fn(
            hs, ws, sparse, None, targets, student_bias=bs, progress=progress, return_parts=True
        )
        return loss, parts["ce"], parts["distill"]
    logits = model(**inputs, use_cache=False).logits
    ce = cross_entropy(logits[..., : trainer.vocab], targets, ignore_index=d.ignore_index)
    term = trainer.loss_fn(logits, sparse, targets, progress=progress)
    return d.ce_weight * ce + d.weight * term, ce, term


__all__ = ["CachedTeacher", "cached_loss", "setup_cached_teacher"]
