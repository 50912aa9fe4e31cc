"""``sparse_teacher.*`` of ``unikd lm-distill``: train the distilled students from a sparse-teacher cache.

Kept free of ``transformers`` and of the cache code, so the example's config imports without the ``lm``
extra. The stage that writes and reads the cache is :mod:`unikd.lm.example_cache`.
"""

from __future__ import annotations

from dataclasses import dataclass

MODES = ("topk", "sample", "read")
DTYPES = ("fp16", "fp32")


@dataclass
class SparseTeacherSettings:
    """Where the distilled students' teacher comes from: the live teacher (``folder`` empty) or a cache.

    ``folder`` (relative: under ``out_dir``) holds a sparse-teacher cache of the training blocks. With
    ``mode`` ``topk`` (the k largest log-probabilities plus the tail bucket) or ``sample`` (k − 1 tokens
    drawn from the teacher plus a label slot, Sparse Logit Sampling; ``seed``, ``proposal_temperature``),
    the example writes it from its teacher when it is missing or unfinished (resuming a partial build) and
    refuses a folder written with other settings or another teacher or data. ``read`` uses a cache written
    elsewhere (e.g. :func:`unikd.token.import_logprobs` over ``data/blocks.pt``) as it is, never writing
    it. ``dtype`` stores the log-probabilities (fp16: ``4k + 2`` bytes per token with the example's
    vocabulary); ``batch_size`` sequences per teacher forward while writing.
    """

    folder: str = ""
    mode: str = "topk"
    k: int = 32
    dtype: str = "fp16"
    seed: int = 0
    proposal_temperature: float = 1.0
    batch_size: int = 64

    @property
    def enabled(self) -> bool:
        return bool(self.folder)


def check_sparse_teacher_settings(s: SparseTeacherSettings, *, on_policy: float, seq_kd: float) -> None:
    """Each setting in its range, and no sampled completions (a cache holds only the data's tokens)."""
    if s.mode not in MODES:
        raise ValueError(f"sparse_teacher.mode must be one of {list(MODES)}, got {s.mode!r}")
    if s.dtype not in DTYPES:
        raise ValueError(f"sparse_teacher.dtype must be one of {list(DTYPES)}, got {s.dtype!r}")
    if s.k < (2 if s.mode == "sample" else 1):
        raise ValueError(
            f"sparse_teacher.k must be >= {2 if s.mode == 'sample' else 1} in mode {s.mode!r}, got {s.k}"
            + (" (k - 1 draws plus a label slot)" if s.mode == "sample" else "")
        )
    if s.batch_size < 1:
        raise ValueError(f"sparse_teacher.batch_size must be >= 1, got {s.batch_size}")
    if not s.proposal_temperature > 0:
        raise ValueError(f"sparse_teacher.proposal_temperature must be > 0, got {s.proposal_temperature}")
    if s.enabled and (on_policy or seq_kd):
        raise ValueError(
            "sparse_teacher.folder trains on the cached teacher's rows of the data, but on_policy / seq_kd "
            "train on sampled completions, which no cache holds: set on_policy=0 and seq_kd=0, or "
            "sparse_teacher.folder=''"
        )


__all__ = ["DTYPES", "MODES", "SparseTeacherSettings", "check_sparse_teacher_settings"]
