"""Sparse teachers whose log-probabilities are of ``softmax(z / T)``: what the losses need to train on them.

The token losses read a :class:`SparseTeacher` as temperature-1 log-probabilities and apply their own
temperature ``τ`` to the k + 1 bucket log-probabilities (``log_softmax(b / τ)``). Log-probabilities
imported at a sampling temperature ``T`` (vLLM returns those of the distribution it samples from) are
already softened; dividing them by ``τ`` again would soften them twice. :func:`teacher_for_loss` rewrites
them as ``log_softmax(T · b)`` over the buckets, so that the loss at ``τ = T`` sees exactly the stored
distribution: ``log_softmax(T · b / T) = b`` for normalised ``b``. The temperature-1 teacher itself cannot be
recovered from a merged tail bucket, so any other loss temperature is refused.
"""

from __future__ import annotations

import torch

from .sparse import TAIL_FLOOR, SparseTeacher


def teacher_for_loss(
    teacher: SparseTeacher, cache_temperature: float, loss_temperature: float, *, loss_name: str = "the loss"
) -> SparseTeacher:
    """``teacher`` (log-probabilities of ``softmax(z / cache_temperature)``) for a loss at
    ``loss_temperature``: unchanged at cache temperature 1; rescaled so the loss sees the stored distribution
    when both temperatures are equal; a ``ValueError`` naming both otherwise."""
    if cache_temperature == 1.0:
        return teacher
    if loss_temperature != cache_temperature:
        raise ValueError(
            f"the cached teacher log-probabilities are of softmax(z / {cache_temperature:g}) (the "
            f"temperature recorded when they were imported) but {loss_name} runs at temperature "
            f"{loss_temperature:g}: set the loss's temperature to {cache_temperature:g} (DistillSettings("
            f"hyperparameters={{'temperature': {cache_temperature:g}}})), or import log-probabilities "
            "taken at temperature 1"
        )
    buckets = torch.cat([teacher.logprobs.float(), teacher.tail.float().unsqueeze(-1)], dim=-1)
    scaled = (buckets * cache_temperature).log_softmax(dim=-1).clamp_min(TAIL_FLOOR)
    return SparseTeacher(scaled[..., :-1].contiguous(), teacher.ids, scaled[..., -1].contiguous())


__all__ = ["teacher_for_loss"]
