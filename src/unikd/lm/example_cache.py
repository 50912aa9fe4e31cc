"""The ``sparse_teacher`` stage of ``unikd lm-distill``: the teacher's sparse cache of the training blocks.

Runs after the teacher stage when ``sparse_teacher.folder`` is set. The cache holds one
:class:`~unikd.token.SparseTeacher` row per (training block, position), written by
:class:`~unikd.token.SparseTeacherWriter` (top-k + tail, or sampled) from the teacher's logits, with the
blocks' token ids beside it, so the distilled students (:class:`~unikd.lm.DistillationTrainer` with
``sparse_teacher=``, each example carrying its block's index) train with no teacher forward.

Why a stage, not a separate command: the cache is only right for the blocks the students read, in the
example's tokenization, from the example's teacher, and the example is what owns all three. The stage
states them in the cache's identity (the teacher's weights and the blocks by sha256, the storage and
sampling settings), so a folder of another teacher, split or setting is refused by name instead of being
read; and it resumes like every stage: an interrupted build keeps its finished sequences (the writer's
partial array, flushed after every batch) and the next invocation writes only the missing ones.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch

from unikd import integrity
from unikd.token import (
    SparseTeacherCache,
    SparseTeacherWriter,
    next_token_labels,
    write_cache_token_ids,
)
from unikd.token.cache import MANIFEST

from .example_cache_settings import SparseTeacherSettings
from .example_common import _wait_for, world

INDEX = "block"  # the training examples' column holding their block's row in the cache


def cache_folder(settings: SparseTeacherSettings, out: Path) -> Path:
    folder = Path(settings.folder).expanduser()
    return folder if folder.is_absolute() else out / folder


def cache_record(cfg: Any, folder: Path) -> dict[str, Any]:
    """What a student's ``result.json`` says of the cache it trained from."""
    manifest = json.loads((folder / MANIFEST).read_text())  # checked when the trainer opened the cache
    return {
        "folder": str(folder),
        "mode": "sample" if "sampling" in manifest else "topk",
        "k": manifest["k"],
        "bytes_per_token": manifest["bytes_per_token"],
    }


def identity(teacher_dir: Path, blocks: torch.Tensor) -> dict[str, Any]:
    weights = sorted(teacher_dir.glob("*.safetensors")) or sorted(teacher_dir.glob("*.bin"))
    if not weights:
        raise FileNotFoundError(f"no teacher weights (*.safetensors) in {teacher_dir}")
    data = hashlib.sha256(blocks.contiguous().numpy().tobytes()).hexdigest()
    return {
        "source": "unikd lm-distill",
        "teacher_sha256": [integrity.sha256_file(p) for p in weights],
        "blocks_sha256": data,
        "blocks": list(blocks.shape),
    }


@torch.no_grad()
def _fill(writer: SparseTeacherWriter, teacher, blocks: torch.Tensor, batch: int, echo) -> int:
    """Write every pending sequence; return how many were written."""
    teacher.eval()
    written, n = 0, blocks.shape[0]
    for start in range(0, n, batch):
        index = torch.arange(start, min(start + batch, n))
        index = index[writer.pending(index)]
        if not len(index):
            continue
        ids = blocks[index]
        logits = teacher(input_ids=ids, use_cache=False).logits.float()
        writer.write(index, logits, labels=next_token_labels(ids))
        writer.array.flush()  # an interrupted build resumes after the last finished batch
        written += len(index)
        if written % (batch * 50) == 0:
            echo(f"[lm] sparse teacher: {written} sequences written ({start + len(index)}/{n})")
    return written


def prepare_sparse_teacher(cfg: Any, out: Path, data: dict[str, Any], teacher, echo) -> Path | None:
    """The cache folder the students train from (None: the live teacher), written first if needed."""
    s: SparseTeacherSettings = cfg.sparse_teacher
    if not s.enabled:
        return None
    folder = cache_folder(s, out)
    blocks = data["train"]
    if s.mode == "read":
        SparseTeacherCache(folder)  # not a complete cache: the error says so (and how to build one)
        return folder
    if world()[0] != 0:
        _wait_for(folder / MANIFEST, "the sparse-teacher cache")
        return folder
    t0 = time.perf_counter()
    writer = SparseTeacherWriter(
        folder,
        num_sequences=blocks.shape[0],
        seq_len=blocks.shape[1],
        vocab_size=teacher.get_output_embeddings().weight.shape[0],
        k=s.k,
        identity=identity(out / "teacher" / "model", blocks),
        dtype=s.dtype,
        mode=s.mode,
        seed=s.seed,
        proposal_temperature=s.proposal_temperature,
    )  # another teacher, split or setting in the folder: CacheMismatchError naming the field
    if writer.complete:
        return folder
    write_cache_token_ids(folder, blocks)  # atomic; the identity already pins these blocks
    with writer:  # finish() on success; on an error the partial array is kept for the next invocation
        written = _fill(writer, teacher, blocks, s.batch_size, echo)
    size = (folder / "tokens.npy").stat().st_size
    echo(
        f"[lm] sparse teacher ({s.mode}, k={s.k}): {written} of {blocks.shape[0]} sequences written in "
        f"{time.perf_counter() - t0:.1f} s, {writer.row.itemsize} bytes/token, {size / 2**20:.1f} MiB"
    )
    return folder


__all__ = ["INDEX", "cache_folder", "cache_record", "identity", "prepare_sparse_teacher"]
