"""Sparse teachers: the top-k log-probabilities of every token plus one explicit tail bucket.

A teacher over a 150k vocabulary stored densely costs 300 kB per token in fp16; its top-k (k = 8...256)
costs a few hundred bytes. The tokens outside the top-k are not dropped: their total probability is kept as
one more class, the *tail bucket*, on the teacher side and on the student side (the student's probability
of the same tail tokens). Both sides are then proper distributions over k + 1 outcomes, so every loss of
:mod:`unikd.token` applies unchanged (it sees ``(n, k + 1)`` log-probabilities as its logits) and stays a
proper divergence. At temperature 1 the bucketed KL, reverse KL and JSD are lower bounds of the dense ones
that rise monotonically to them as k grows (merging outcomes never increases an f-divergence) and equal
them when the tail is empty. A loss temperature T != 1 is applied to the k + 1 bucket log-probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from unikd.losses._common import MASK_VALUE
from unikd.losses.checks import checks_enabled

# Floor of a tail log-probability: an empty tail (k covers the vocabulary) stays finite, so 0 * log 0 never
# turns into NaN; exp(-1e4) is 0 in float32 and float64 alike. The same floor as the teacher-output cache's
# MIN_LOG_RESIDUAL.
TAIL_FLOOR = -1.0e4
# How far the stored log-masses may sum from 1 (fp16 storage rounds each log-probability by up to ~0.01).
MASS_TOLERANCE = 0.1


@dataclass(frozen=True)
class SparseTeacher:
    """Top-k teacher log-probabilities per token with an explicit tail bucket.

    Attributes:
        logprobs: ``(..., k)`` float, ``log p`` of the kept tokens at temperature 1.
        ids: ``(..., k)`` integer token ids of those entries, distinct within a row.
        tail: ``(...)`` float, ``log(1 - sum p)``: the log-mass of every other token, floored at -1e4.

    The leading shape ``...`` is the token layout: ``(B, T)`` like the labels, or ``(N,)``. Build one from
    dense logits with :func:`sparse_topk`, or read one from a cache
    (:class:`~unikd.token.SparseTeacherCache`).
    """

    logprobs: Tensor
    ids: Tensor
    tail: Tensor

    @property
    def k(self) -> int:
        return int(self.ids.shape[-1])

    @property
    def shape(self) -> torch.Size:
        """The token layout (the leading shape)."""
        return self.tail.shape

    @property
    def device(self) -> torch.device:
        return self.logprobs.device

    def to(self, device: torch.device | str) -> SparseTeacher:
        return SparseTeacher(self.logprobs.to(device), self.ids.to(device), self.tail.to(device))

    def flat(self) -> SparseTeacher:
        """The same teacher with the token layout flattened to ``(N,)``."""
        k = self.k
        return SparseTeacher(self.logprobs.reshape(-1, k), self.ids.reshape(-1, k), self.tail.reshape(-1))

    def rows(self, index: Tensor) -> SparseTeacher:
        """Rows ``index`` of a flat teacher (int64 ``(n,)``), as float32 log-probabilities and int64 ids."""
        return SparseTeacher(
            self.logprobs.index_select(0, index).float(),
            self.ids.index_select(0, index).long(),
            self.tail.index_select(0, index).float(),
        )


def sparse_topk(
    logits: Tensor, k: int, *, labels: Tensor | None = None, ignore_index: int = -100
) -> SparseTeacher:
    """The :class:`SparseTeacher` of dense teacher logits ``(..., V)``: top-k log-probabilities and the tail.

    With ``labels`` (the layout ``...``), each kept token's label is always among the k ids (it replaces the
    k-th largest entry when it is not in the top-k), so target-aware losses (DKD, NKD) see the teacher's true
    target probability. Computed in float32; ids are int64; the tail is the exact log-sum-exp of the other
    log-probabilities (no ``log(1 - sum)`` cancellation). The k log-probabilities and the tail are floored at
    -1e4 (``TAIL_FLOOR``), as the cache stores them: a teacher that masks tokens with ``-inf`` logits gives
    them probability 0 and a finite log-probability, so the token losses, which return NaN for a non-finite
    sparse teacher, train on it. NaN or ``+inf`` teacher logits stay non-finite (a NaN loss).
    """
    if not isinstance(logits, Tensor) or not logits.is_floating_point() or logits.dim() < 2:
        raise ValueError(
            f"logits must be a floating tensor of shape (..., V), got {getattr(logits, 'shape', logits)!r}"
        )
    v = logits.shape[-1]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= v:
        raise ValueError(f"k must be an int in [1, V={v}], got {k!r}")
    logp = logits.detach().float().log_softmax(dim=-1)  # (..., V)
    ids = logp.topk(k, dim=-1).indices  # (..., k)
    if labels is not None:
        if not isinstance(labels, Tensor) or labels.shape != logits.shape[:-1]:
            raise ValueError(
                f"labels must have the token layout {tuple(logits.shape[:-1])} of the logits, got "
                f"{tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__}"
            )
        labels = labels.to(ids.device).long()
        kept = labels != ignore_index
        if checks_enabled() and bool(((labels < 0) | (labels >= v))[kept].any()):
            raise ValueError(f"labels hold ids outside [0, {v - 1}] (V={v}) at non-ignored positions")
        lab = torch.where(kept, labels, 0)
        missing = kept & ~(ids == lab.unsqueeze(-1)).any(dim=-1)
        ids[..., -1] = torch.where(missing, lab, ids[..., -1])
    values = logp.gather(-1, ids).clamp_min(TAIL_FLOOR)  # clamp keeps NaN
    tail = logp.scatter(-1, ids, MASK_VALUE).logsumexp(dim=-1).clamp_min(TAIL_FLOOR)
    return SparseTeacher(values, ids, tail)


def check_sparse_teacher(teacher: object, layout: tuple[int, ...], vocab_size: int) -> SparseTeacher:
    """Validate a :class:`SparseTeacher` for ``layout`` tokens over ``vocab_size`` ids; return it flat.

    Value checks (id range, distinct ids, total mass) need a host sync and run only when checks are enabled
    (:mod:`unikd.losses.checks`; never under torch.compile).
    """
    if not isinstance(teacher, SparseTeacher):
        raise ValueError(f"expected a SparseTeacher, got {type(teacher).__name__}")
    lp, ids, tail = teacher.logprobs, teacher.ids, teacher.tail
    if not (isinstance(lp, Tensor) and isinstance(ids, Tensor) and isinstance(tail, Tensor)):
        raise ValueError("SparseTeacher fields logprobs, ids and tail must be tensors")
    if not lp.is_floating_point() or not tail.is_floating_point() or ids.is_floating_point():
        raise ValueError(
            f"SparseTeacher needs float logprobs/tail and integer ids, got {lp.dtype}, {tail.dtype}, "
            f"{ids.dtype}"
        )
    if lp.shape != ids.shape or lp.shape[:-1] != tail.shape:
        raise ValueError(
            f"SparseTeacher shapes disagree: logprobs {tuple(lp.shape)}, ids {tuple(ids.shape)}, tail "
            f"{tuple(tail.shape)}; expected (..., k), (..., k) and (...)"
        )
    if tuple(tail.shape) != tuple(layout):
        raise ValueError(
            f"the sparse teacher covers tokens of shape {tuple(tail.shape)} but the student has "
            f"{tuple(layout)}"
        )
    if lp.shape[-1] < 1:
        raise ValueError("the sparse teacher has k=0 entries per token; keep at least one")
    flat = teacher.flat()
    if flat.tail.numel() and checks_enabled():
        lo, hi = int(flat.ids.min()), int(flat.ids.max())
        if lo < 0 or hi >= vocab_size:
            raise ValueError(
                f"the sparse teacher has token ids in [{lo}, {hi}] but the vocabulary has V={vocab_size} "
                "entries; the teacher and the student must share one tokenizer (cut with vocab_size only "
                "when the ids beyond it are padding)"
            )
        srt = flat.ids.sort(dim=1).values
        if bool((srt[:, 1:] == srt[:, :-1]).any()):
            raise ValueError("the sparse teacher repeats a token id within a row; ids must be distinct")
        mass = torch.cat([flat.logprobs.float(), flat.tail.float().unsqueeze(1)], dim=1).logsumexp(dim=1)
        worst = float(mass.abs().max())
        if worst > MASS_TOLERANCE:
            raise ValueError(
                f"the sparse teacher's probabilities (top-k plus tail) sum to "
                f"exp({float(mass[mass.abs().argmax()]):.3g}) "
                "instead of 1 for some token; logprobs and tail must be log-probabilities (log_softmax), "
                "not logits -- build it with sparse_topk"
            )
    return flat


def bucketize(
    zs: Tensor, teacher: SparseTeacher, target: Tensor | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Student and teacher as ``(n, k + 1)`` log-probabilities over the k teacher ids plus the tail bucket.

    ``zs``: ``(n, V)`` student logits (float32/float64, gradients flow); ``teacher``: flat rows of float
    log-probabilities; ``target``: ``(n, 1)`` label ids or None. Returns the student and teacher bucket
    log-probabilities and the target's bucket ``(n, 1)`` (its position among the ids). A target outside the
    ids is an error when checks are enabled (:mod:`unikd.losses.checks`); otherwise, and under torch.compile,
    it falls into the tail bucket.
    """
    ids = teacher.ids
    lse = zs.logsumexp(dim=1, keepdim=True)  # (n, 1)
    s_top = zs.gather(1, ids) - lse  # (n, k)
    # The tail from the masked logits themselves, not log(1 - sum): exact when the top-k hold almost all mass.
    s_tail = (zs.scatter(1, ids, MASK_VALUE).logsumexp(dim=1, keepdim=True) - lse).clamp_min(TAIL_FLOOR)
    student = torch.cat([s_top, s_tail], dim=1)  # (n, k + 1)
    t_dtype = zs.dtype
    teacher_b = torch.cat([teacher.logprobs.to(t_dtype), teacher.tail.to(t_dtype).unsqueeze(1)], dim=1)
    if target is None:
        return student, teacher_b, None
    match = ids == target  # (n, k)
    found = match.any(dim=1, keepdim=True)
    if checks_enabled() and not bool(found.all()):
        raise ValueError(
            f"{int((~found).sum())} kept token(s) have a label that is not among the sparse teacher's ids; "
            "target-aware losses (dkd, nkd) need it: build the teacher with sparse_topk(..., labels=labels)"
        )
    pos = torch.where(found, match.to(torch.int8).argmax(dim=1, keepdim=True), ids.shape[1])
    return student, teacher_b, pos


__all__ = ["SparseTeacher", "TAIL_FLOOR", "bucketize", "check_sparse_teacher", "sparse_topk"]
