"""Fuzz every loss: random shapes, dtypes, target kinds and input categories; count the outcomes.

Subjects (one per name, drawn round-robin):

- ``unikd.losses.LOSS_FUNCTIONS`` plus the functional forms that the modules feed from their state
  (``nd_loss``, ``hcl_loss`` of ReviewKD, ``crd_loss``, KD3's ``kd3_align_loss`` and
  ``kd3_mixdist_loss``) and the KL monitors of NKD and USKD
  (``nkd_nontarget_kl``, ``uskd_nontarget_kl``, run without gradient). They are called by parameter name
  (``*logits``, ``*emb``, ``*vec``, ``*feat``, ``*feats``, ``target``; ``OTHER_ARGS`` builds the rest), so a
  new loss with such inputs is fuzzed without editing this script.
- every ``unikd.token`` loss in three forms: ``dense`` (``token_loss`` on ``(B, T, V)`` or ``(N, V)``
  logits), ``sparse`` (a ``SparseTeacher`` from ``sparse_topk``; not USKD) and ``fused``
  (``fused_distill_loss`` on hidden states and heads, chunked), with ignored positions and padded heads cut
  by ``vocab_size``.

Each case draws a dtype (float32, float64, bfloat16, float16), a target kind and a category, runs the
forward and backward pass and checks the documented contract (docs/losses.md, "Non-finite inputs, soft
labels and weights"):

- ``finite``: inputs in [-30, 30] -> a finite loss and finite gradients;
- ``large``: inputs up to +-1e4 (+-6e4 for float16; fused float16: logits up to +-5e3, so that the head's
  float16 gradient mostly fits) -> a finite loss and finite gradients;
- ``nonfinite``: 1-3 entries of any input set to NaN/+inf/-inf (target columns included) -> a NaN loss, and
  backward runs;
- ``neginf-student`` / ``neginf-teacher``: 1-2 entries of the student's input / of the other inputs (teacher,
  peer or weak head) set to -inf, the value a softmax turns into probability 0 -> a NaN loss;
- ``masked`` (token losses): NaN/+inf/-inf only where the loss never looks (positions whose label is
  ignore_index, head entries beyond ``vocab_size``) -> the finite loss and gradients of the clean inputs;
- ``bad-label-*``: soft labels that sum to 2, sum to 0, hold NaN/inf or a negative entry -> ``ValueError``.

A sparse teacher whose poisoned log-probabilities no longer sum to 1 may instead fail its eager mass check
with a ``ValueError``; that counts as a pass (the loss never returns a number for it). A fused float16 case
whose gradient is non-finite passes only where the true gradient leaves the float16 range: every non-finite
entry must be one whose gradient by the plain materialised computation in float32 on the same inputs
(``fused_distill_loss_reference``) exceeds the float16 maximum in magnitude. Such cases are counted apart
("float16 range exceeded (reference overflows too)") and listed. Every (subject, dtype, target kind,
category) cell is printed with its pass/fail count; the exit status is 1 when any case fails.
:func:`run` is the core, also called by ``tests/test_fuzz_losses.py`` at a small size.

Usage::

    python benchmarks/fuzz_losses.py                 # 12,000 cases (seed 0)
    python benchmarks/fuzz_losses.py --cases 50000 --seed 3
    python benchmarks/fuzz_losses.py --only token    # subjects whose name contains "token"
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import math
import platform
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import unikd.token as T
from unikd.losses import LOSS_FUNCTIONS, crd_loss, hcl_loss, nd_loss, nkd_nontarget_kl, uskd_nontarget_kl
from unikd.losses.kd3_align import kd3_align_loss
from unikd.losses.kd3_mixdist import kd3_mixdist_loss
from unikd.token.fused_reference import fused_distill_loss_reference
from unikd.token.specs import get_spec

DTYPES = {"fp32": torch.float32, "fp64": torch.float64, "bf16": torch.bfloat16, "fp16": torch.float16}
LABEL_CATEGORIES = ("bad-label-sum2", "bad-label-sum0", "bad-label-nonfinite", "bad-label-negative")
NAN_CATEGORIES = ("nonfinite", "neginf-student", "neginf-teacher")
CATEGORIES = ("finite", "large", *NAN_CATEGORIES, "masked", *LABEL_CATEGORIES)
NONFINITE = (math.nan, math.inf, -math.inf)
IGNORE = -100
FP16_MAX = torch.finfo(torch.float16).max  # 65504
FP16_RANGE = "float16 range exceeded (reference overflows too)"


@dataclass(frozen=True)
class Subject:
    """One fuzzed callable. ``family="loss"``: ``fn`` is called by its parameter names; ``family="token"``:
    ``fn(student, other, labels, **kw)`` for the dense and sparse forms, the fused loss for ``form="fused"``
    (``token`` names the loss). ``grad=False`` for monitors (no backward, no gradient check)."""

    name: str
    family: str
    fn: Callable | None = None
    grad: bool = True
    token: str = ""
    form: str = ""


def default_subjects() -> dict[str, Subject]:
    """Every loss function, the state-fed feature losses, the KL monitors and each token loss in each form."""
    out = {name: Subject(name, "loss", fn) for name, fn in LOSS_FUNCTIONS.items()}
    out["nd"] = Subject("nd", "loss", nd_loss)
    out["hcl"] = Subject("hcl", "loss", hcl_loss)
    out["kd3_align"] = Subject("kd3_align", "loss", _kd3_align)
    out["kd3_mixdist"] = Subject("kd3_mixdist", "loss", kd3_mixdist_loss)
    out["crd"] = Subject("crd", "loss", crd_loss)
    out["nkd_kl"] = Subject("nkd_kl", "loss", nkd_nontarget_kl, grad=False)
    out["uskd_kl"] = Subject("uskd_kl", "loss", uskd_nontarget_kl, grad=False)
    for name in T.list_token_losses():
        for form in ("dense", "sparse", "fused"):
            if form == "sparse" and not get_spec(name).sparse_ok:
                continue
            fn = None if form == "fused" else (lambda s, o, y, _n=name, **kw: T.token_loss(_n, s, o, y, **kw))
            key = f"token.{name}.{form}"
            out[key] = Subject(key, "token", fn, token=name, form=form)
    return out


def _kd3_align(student_emb, teacher_emb, student_weight, teacher_weight):
    """KD3's alignment term with its features named as embeddings (rows of one width) for make_case."""
    return kd3_align_loss(student_emb, teacher_emb, student_weight, teacher_weight)


def positional(fn) -> list[str]:
    return [p.name for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


@dataclass
class Context:
    """What the arguments of ``OTHER_ARGS`` are built from (drawn with the case)."""

    rng: np.random.Generator
    n: int
    c: int
    width: int
    dtype: torch.dtype  # the compute dtype of the loss: float64 for float64 inputs, else float32


def _bank(ctx: Context) -> torch.Tensor:
    """A CRD memory bank: 16 L2-normalised rows of the embedding width."""
    bank = torch.from_numpy(ctx.rng.standard_normal((16, ctx.width)))
    return F.normalize(bank, dim=1).to(ctx.dtype)


# arguments that are neither model outputs nor the target: a valid value built from the case
OTHER_ARGS: dict[str, Callable[[Context], object]] = {
    "global_t": lambda ctx: torch.ones(1, requires_grad=True),  # CTKD's learnable temperature
    "epoch_progress": lambda ctx: 3.5,
    "class_means": lambda ctx: torch.from_numpy(ctx.rng.uniform(-1, 1, (ctx.c, ctx.width))),  # ND
    "student_memory": _bank,
    "teacher_memory": _bank,
    "contrast_idx": lambda ctx: torch.from_numpy(ctx.rng.integers(0, 16, (ctx.n, 5))),  # CRD: K = 4
    "normalisers": lambda ctx: torch.tensor([0.5, 2.0], dtype=ctx.dtype),
    # KD3 alignment: the two classifiers' weights, (C, D) of the features' width
    "student_weight": lambda ctx: torch.from_numpy(ctx.rng.uniform(-1, 1, (ctx.c, ctx.width))).to(ctx.dtype),
    "teacher_weight": lambda ctx: torch.from_numpy(ctx.rng.uniform(-1, 1, (ctx.c, ctx.width))).to(ctx.dtype),
}
OUTPUT_SUFFIXES = ("logits", "emb", "vec", "feat", "feats")

# losses that compare the samples of a batch with each other need more than one row
MIN_BATCH = {"rkd": 2}
# student and teacher embeddings (and the class means / banks / classifier weights) share one width
SAME_WIDTH = {"nd", "crd", "kd3_align", "kd3_mixdist"}
SAME_SHAPE = {"hcl", "extended_kd"}  # teacher maps have the student maps' shapes (connectors applied)
UNIT_ROWS = {"crd"}  # vectors come L2-normalised from the embedding heads


def inputs_of(subject: Subject) -> list[str]:
    """Tensor arguments other than ``target`` and ``OTHER_ARGS``: ``*logits`` (N, C), ``*emb``/``*vec``
    (N, D), ``*feat`` (N, C, H, W), ``*feats`` (a list of (N, C, H, W) maps)."""
    args = [a for a in positional(subject.fn) if a != "target" and a not in OTHER_ARGS]
    unknown = [a for a in args if not a.endswith(OUTPUT_SUFFIXES)]
    if unknown:
        raise SystemExit(
            f"loss {subject.name!r} takes {unknown}: teach make_case in {__file__} to build them"
        )
    return args


def uses_target(subject: Subject) -> bool:
    if subject.family == "token":
        return get_spec(subject.token).uses_target
    return "target" in positional(subject.fn)


def categories_of(subject: Subject) -> tuple[str, ...]:
    if subject.family == "token":
        return ("finite", "large", *NAN_CATEGORIES, "masked")
    teacher = ("neginf-teacher",) if len(inputs_of(subject)) > 1 else ()
    own = ("finite", "large", "nonfinite", "neginf-student", *teacher)
    return own + (LABEL_CATEGORIES if uses_target(subject) else ())


def _flat(x) -> list[torch.Tensor]:
    return [t for t in (x if isinstance(x, list) else [x])]


def _poison(rng, tensors: list[torch.Tensor], n: int, y: torch.Tensor, count: int, values) -> None:
    """Set ``count`` entries of the ``(n, ...)`` tensors to values drawn from ``values`` (40%: a target
    column, where masking would hide them)."""
    for _ in range(count):
        x = tensors[int(rng.integers(len(tensors)))].view(n, -1)
        row = int(rng.integers(n))
        col = int(y[row]) % x.shape[1] if rng.random() < 0.4 else int(rng.integers(x.shape[1]))
        x[row, col] = values[int(rng.integers(len(values)))]


@dataclass
class Case:
    inputs: list
    target: torch.Tensor | None
    others: dict = field(default_factory=dict)
    kind: str = "index"
    extra: dict = field(default_factory=dict)  # token: keyword arguments and the trained tensors


def make_case(
    rng: np.random.Generator, subject: Subject, dtype: torch.dtype, kind: str, category: str
) -> Case:
    name = subject.name
    n, c = int(rng.integers(MIN_BATCH.get(name, 1), 9)), int(rng.integers(2, 65))
    bound = 30.0 if category != "large" else (6.0e4 if dtype == torch.float16 else 1.0e4)
    shared = int(rng.integers(1, 9))

    def make(*shape: int) -> torch.Tensor:
        return torch.from_numpy(rng.uniform(-bound, bound, (n, *shape)))

    h = int(rng.integers(1, 5))
    args = inputs_of(subject)
    inputs: list = []
    for arg in args:
        if arg.endswith("logits"):
            inputs.append(make(c))
        elif arg.endswith(("emb", "vec")):  # each network's own width: relational losses compare within one
            inputs.append(make(shared if name in SAME_WIDTH else int(rng.integers(1, 9))))
        elif arg.endswith("feats"):
            inputs.append([make(int(rng.integers(1, 5)), h, h) for _ in range(int(rng.integers(1, 3)))])
        else:
            inputs.append(make(3, h, h))
    if args[0].endswith("feats"):  # student and teacher maps pair up by stage: same count (and same shapes)
        if name in SAME_SHAPE:
            inputs[1] = [torch.from_numpy(rng.uniform(-bound, bound, tuple(m.shape))) for m in inputs[0]]
        else:
            missing = len(inputs[0]) - len(inputs[1])
            inputs[1] = inputs[1][: len(inputs[0])] + [make(2, h, h) for _ in range(missing)]
    elif args[0].endswith("feat"):
        inputs[1] = torch.from_numpy(rng.uniform(-bound, bound, tuple(inputs[0].shape)))
    if name in UNIT_ROWS:
        inputs = [F.normalize(x, dim=1) for x in inputs]
    y = torch.from_numpy(rng.integers(0, c, n))
    if category == "nonfinite":
        _poison(rng, [t for x in inputs for t in _flat(x)], n, y, int(rng.integers(1, 4)), NONFINITE)
    elif category in ("neginf-student", "neginf-teacher"):
        side = _flat(inputs[0]) if category == "neginf-student" else [t for x in inputs[1:] for t in _flat(x)]
        _poison(rng, side, n, y, int(rng.integers(1, 3)), (-math.inf,))
    target: torch.Tensor = y
    if kind == "soft" or category.startswith("bad-label"):
        y2 = torch.from_numpy(rng.integers(0, c, n))
        lam = float(rng.uniform(0.0, 1.0))
        eye = torch.eye(c, dtype=torch.float64)
        soft = lam * eye[y] + (1 - lam) * eye[y2]
        row = int(rng.integers(n))
        if category == "bad-label-sum2":
            soft[row] *= 2
        elif category == "bad-label-sum0":
            soft[row] = 0
        elif category == "bad-label-nonfinite":
            soft[row, int(rng.integers(c))] = rng.choice([math.nan, math.inf])
        elif category == "bad-label-negative":
            soft[row, int(rng.integers(c))] -= 1.5
        label_dtype = dtype if rng.random() < 0.5 else torch.float32
        target = soft.to(label_dtype)

    def leaf(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype).requires_grad_(True)

    width = inputs[0].shape[1] if name in SAME_WIDTH else 1
    ctx = Context(rng, n, c, width, torch.float64 if dtype == torch.float64 else torch.float32)
    others = {a: make_other(ctx) for a, make_other in OTHER_ARGS.items() if a in positional(subject.fn)}
    inputs = [[leaf(t) for t in x] if isinstance(x, list) else leaf(x) for x in inputs]
    return Case(inputs, target, others, kind)


def make_token_case(rng: np.random.Generator, subject: Subject, dtype: torch.dtype, category: str) -> Case:
    """Token logits (dense, sparse teacher) or hidden states and heads (fused), with labels, ignored
    positions and (always for ``masked``) heads padded beyond ``vocab_size``."""
    spec = get_spec(subject.token)
    flat = rng.random() < 0.3
    b, t = int(rng.integers(1, 4)), int(rng.integers(1, 6))
    layout = (b * t,) if flat else (b, t)
    v = int(rng.integers(2, 41))
    pad = int(rng.integers(1, 5)) if category == "masked" or rng.random() < 0.3 else 0
    bound = 30.0 if category != "large" else (6.0e4 if dtype == torch.float16 else 1.0e4)
    labels = torch.from_numpy(rng.integers(0, v, layout))
    drop = torch.from_numpy(rng.random(layout)) < 0.3
    labels[drop] = IGNORE
    kept = (labels != IGNORE).reshape(-1)
    if not bool(kept.any()):
        labels.view(-1)[int(rng.integers(labels.numel()))] = int(rng.integers(v))
        kept = (labels != IGNORE).reshape(-1)
    kw: dict = {"vocab_size": v} if pad or rng.random() < 0.2 else {}
    kept_rows = kept.nonzero().squeeze(1).tolist()
    ignored_rows = (~kept).nonzero().squeeze(1).tolist()
    kind = "labels"
    if not spec.uses_target and category != "masked" and subject.form != "fused" and rng.random() < 0.3:
        labels, kind = None, "nolabels"  # every position kept
        kept_rows, ignored_rows = list(range(b * t)), []

    def uniform(lo_hi: float, *shape: int) -> torch.Tensor:
        return torch.from_numpy(rng.uniform(-lo_hi, lo_hi, shape))

    def poison_rows(x: torch.Tensor, rows: list[int], cols: int, count: int, values) -> None:
        flat_x = x.view(-1, x.shape[-1])
        for _ in range(count):
            row = rows[int(rng.integers(len(rows)))]
            target = int(labels.reshape(-1)[row]) if labels is not None else -1
            col = target if 0 <= target < cols and rng.random() < 0.4 else int(rng.integers(cols))
            flat_x[row, col] = values[int(rng.integers(len(values)))]

    def mask_unused(x: torch.Tensor) -> None:
        """NaN/inf/-inf where the loss never looks: an ignored row, and an entry beyond vocab_size."""
        flat_x = x.view(-1, x.shape[-1])
        value = NONFINITE[int(rng.integers(3))]
        if ignored_rows:
            flat_x[ignored_rows[int(rng.integers(len(ignored_rows)))]] = value
        if x.shape[-1] > v:
            flat_x[:, v + int(rng.integers(x.shape[-1] - v))] = value

    if subject.form == "fused":
        if category == "large" and dtype == torch.float16:
            # The head's gradient sums g * h over the tokens (up to ~10 |h| with these weights) and comes back
            # in float16, as in any float16 backward (the unfused reference overflows alike): logits to 5e3.
            # Where it still leaves the float16 range, check() asks the float32 reference (FP16_RANGE).
            bound = 5.0e3
        ds, dt_ = int(rng.integers(1, 7)), int(rng.integers(1, 7))
        hs, ho = uniform(bound / ds, *layout, ds), uniform(bound / dt_, *layout, dt_)
        ws = uniform(1.0, v + pad, ds)
        wo = uniform(1.0, v + pad, dt_)
        bs = uniform(1.0, v + pad) if rng.random() < 0.5 else None
        bo = uniform(1.0, v + pad) if bs is not None else None
        if spec.trains_other:  # weak logits: the student's own head on a middle hidden state
            ho = uniform(bound / ds, *layout, ds)
            wo, bo = ws, bs
        if category in NAN_CATEGORIES:
            values = NONFINITE if category == "nonfinite" else (-math.inf,)
            side = {"nonfinite": ("s", "o"), "neginf-student": ("s",), "neginf-teacher": ("o",)}[category]
            for _ in range(int(rng.integers(1, 3))):
                who = side[int(rng.integers(len(side)))]
                h_, w_ = (hs, ws) if who == "s" else (ho, wo)
                if rng.random() < 0.5:
                    poison_rows(h_, kept_rows, h_.shape[-1], 1, values)
                else:
                    row, col = int(rng.integers(v)), int(rng.integers(w_.shape[1]))  # a kept vocabulary row
                    w_[row, col] = values[int(rng.integers(len(values)))]
        elif category == "masked":
            for h_ in (hs, ho):
                if ignored_rows:
                    h_.view(-1, h_.shape[-1])[ignored_rows[int(rng.integers(len(ignored_rows)))]] = math.nan
            for w_, b_ in ((ws, bs), (wo, bo)):
                if b_ is not None:
                    b_[v:] = -math.inf  # a masked padded vocabulary
                else:
                    w_[v + int(rng.integers(pad))] = NONFINITE[int(rng.integers(3))]
        trained = [hs, ws] + ([bs] if bs is not None else [])
        if spec.trains_other:
            trained.append(ho)
        conv = {id(x): x.to(dtype).requires_grad_(any(x is y for y in trained)) for x in
                [hs, ws, ho, wo] + [x for x in (bs, bo) if x is not None]}
        hs, ws, ho, wo = (conv[id(x)] for x in (hs, ws, ho, wo))
        bs = conv[id(bs)] if bs is not None else None
        bo = conv[id(bo)] if bo is not None else None
        kw.update(student_bias=bs, teacher_bias=bo, chunk_size=int(rng.integers(1, 9)),
                  ce_weight=float(rng.choice([0.0, 0.5, 1.0])), weight=float(rng.choice([0.0, 1.0, 1.5])))
        grads = [hs, ws] + ([bs] if bs is not None else []) + ([ho] if spec.trains_other else [])
        return Case([hs, ws, ho, wo], labels, kind=kind, extra={"kw": kw, "trained": grads})

    zs = uniform(bound, *layout, v + pad)
    zo = uniform(bound, *layout, v + (pad if subject.form == "dense" else 0))
    sparse = None
    if subject.form == "sparse":
        k = int(rng.integers(1, v + 1))
        sparse = T.sparse_topk(zo, k, labels=labels if spec.uses_target else None)
    if category in NAN_CATEGORIES:
        values = NONFINITE if category == "nonfinite" else (-math.inf,)
        side = {"nonfinite": ("s", "o"), "neginf-student": ("s",), "neginf-teacher": ("o",)}[category]
        for _ in range(int(rng.integers(1, 3))):
            who = side[int(rng.integers(len(side)))]
            if who == "s":
                poison_rows(zs, kept_rows, v, 1, values)
            elif sparse is None:
                poison_rows(zo, kept_rows, v, 1, values)
            elif rng.random() < 0.7:
                poison_rows(sparse.logprobs, kept_rows, sparse.k, 1, values)
            else:
                sparse.tail.view(-1)[kept_rows[int(rng.integers(len(kept_rows)))]] = values[
                    int(rng.integers(len(values)))]
    elif category == "masked":
        mask_unused(zs)
        if sparse is None:
            mask_unused(zo)
    zs = zs.to(dtype).requires_grad_(True)
    if sparse is not None:
        other: torch.Tensor | T.SparseTeacher = sparse
    else:
        other = zo.to(dtype).requires_grad_(spec.trains_other)
    trained = [zs] + ([other] if spec.trains_other else [])
    return Case([zs, other], labels, kind=kind, extra={"kw": kw, "trained": trained})


def call(subject: Subject, case: Case) -> torch.Tensor:
    if subject.family == "token":
        kw = case.extra["kw"]
        if subject.form == "fused":
            hs, ws, ho, wo = case.inputs
            return T.fused_distill_loss(subject.token, hs, ws, ho, wo, case.target, **kw)
        return subject.fn(case.inputs[0], case.inputs[1], case.target, **kw)
    it = iter(case.inputs)
    args = [case.target if a == "target" else case.others[a] if a in case.others else next(it)
            for a in positional(subject.fn)]
    return subject.fn(*args)


@dataclass(frozen=True)
class Passed:
    """A case that keeps the contract through a documented exception: ``outcome`` names it (counted apart),
    ``detail`` says why."""

    outcome: str
    detail: str


def reference_grads(subject: Subject, case: Case) -> list[torch.Tensor | None]:
    """Gradients of a case's inputs computed in float32 on the same (float16) values: the loss itself for a
    classification subject, the plain materialised computation (:func:`fused_distill_loss_reference`) for a
    fused token case (shared tensors stay shared)."""
    if subject.family != "token":
        flat = [t for x in case.inputs for t in _flat(x)]
        up = {id(t): t.detach().float().requires_grad_(t.requires_grad) for t in flat}
        inputs = [[up[id(t)] for t in x] if isinstance(x, list) else up[id(x)] for x in case.inputs]
        with torch.enable_grad():
            loss = call(subject, Case(inputs, case.target, case.others, case.kind, case.extra))
            wanted = [up[id(t)] for t in flat]
            return _grads_or_none(loss, wanted)
    conv: dict[int, torch.Tensor] = {}

    def f32(x: torch.Tensor | None) -> torch.Tensor | None:
        if x is not None and id(x) not in conv:
            conv[id(x)] = x.detach().float().requires_grad_(x.requires_grad)
        return None if x is None else conv[id(x)]

    kw = {k: v for k, v in case.extra["kw"].items() if k != "chunk_size"}
    kw.update(student_bias=f32(kw.get("student_bias")), teacher_bias=f32(kw.get("teacher_bias")))
    hs, ws, ho, wo = (f32(x) for x in case.inputs)
    with torch.enable_grad():
        loss = fused_distill_loss_reference(subject.token, hs, ws, ho, wo, case.target, **kw)
        trained = [conv[id(x)] for x in case.extra["trained"]]
        return list(torch.autograd.grad(loss, trained, allow_unused=True))


def _grads_or_none(loss: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor | None]:
    trained = [t for t in inputs if t.requires_grad]
    grads = iter(torch.autograd.grad(loss, trained, allow_unused=True))
    return [next(grads) if t.requires_grad else None for t in inputs]


def fp16_overflow(subject: Subject, case: Case, flat: list[torch.Tensor], bad: list[int]) -> Passed | str:
    """A float16 case (a classification loss, or a fused token case) with non-finite gradients
    ``flat[i].grad`` (``i`` in ``bad``): :class:`Passed` when each non-finite entry is one whose float32
    reference gradient exceeds the float16 maximum in magnitude (its true value has no float16 form), else
    the failure."""
    ref = reference_grads(subject, case)
    peak = 0.0
    for i in bad:
        nonfinite = ~torch.isfinite(flat[i].grad)
        r = ref[i] if ref[i] is not None else torch.zeros(flat[i].shape)
        # an overflow only where the reference is a finite number beyond the range (NaN/inf there: a bug)
        inside = nonfinite & ~(torch.isfinite(r) & (r.abs() > FP16_MAX))
        if bool(inside.any()):
            worst = r[inside].abs().max().item()
            return (f"non-finite gradient of input #{i} where the float32 reference does not leave the "
                    f"float16 range (|ref| {worst:.6g}, not a finite value above {FP16_MAX:.0f}, at "
                    f"{int(inside.sum())} of {int(nonfinite.sum())} non-finite entries)")
        peak = max(peak, r[nonfinite].abs().max().item())
    return Passed(FP16_RANGE, f"non-finite gradient of input{'s' if len(bad) > 1 else ''} "
                              f"#{', #'.join(map(str, bad))}: float32 reference |grad| up to {peak:.6g} > "
                              f"float16 max {FP16_MAX:.0f} at every non-finite entry")


def check(subject: Subject, category: str, case: Case) -> str | Passed | None:
    """None (or a :class:`Passed` for a documented exception) when the case behaves as documented, else a
    description of what went wrong."""
    if category.startswith("bad-label"):
        try:
            call(subject, case)
        except ValueError as exc:
            return None if "soft-label" in str(exc) else f"ValueError without 'soft-label': {exc}"
        return "no ValueError for a bad soft label"
    try:
        loss = call(subject, case)
    except ValueError as exc:
        if subject.form == "sparse" and category in NAN_CATEGORIES and "teacher's probabilities" in str(exc):
            return None  # the eager mass check refused the poisoned sparse teacher
        raise
    if loss.dim() != 0:
        return f"loss of shape {tuple(loss.shape)}, not 0-dim"
    if subject.grad and loss.requires_grad:
        loss.backward()
    if category in NAN_CATEGORIES:
        return None if torch.isnan(loss) else f"loss {loss.item()} for non-finite inputs"
    if not torch.isfinite(loss):
        where = " outside the kept rows and vocabulary" if category == "masked" else ""
        return f"non-finite loss {loss.item()} for finite inputs{where}"
    if subject.family == "token":
        flat = case.extra["trained"]
    else:
        flat = [t for x in case.inputs for t in _flat(x)]
    bad = [i for i, x in enumerate(flat) if x.grad is not None and not torch.isfinite(x.grad).all()]
    if bad and flat[bad[0]].dtype == torch.float16 and (subject.family != "token" or subject.form == "fused"):
        return fp16_overflow(subject, case, flat, bad)
    return f"non-finite gradient of input #{bad[0]}" if bad else None


@dataclass
class FuzzResult:
    """Counts per (subject, dtype, target kind, category, passed), the first failures, and the passes through
    a documented exception (:class:`Passed`): a count per outcome and the first cases of each."""

    cases: int
    seed: int
    seconds: float
    counts: Counter
    failures: list[str]
    outcomes: Counter = field(default_factory=Counter)
    noted: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(n for k, n in self.counts.items() if not k[4])

    @property
    def passed(self) -> int:
        return self.cases - self.failed


def run(cases: int, seed: int = 0, *, subjects: dict[str, Subject] | None = None,
        max_failures: int = 20) -> FuzzResult:
    """``cases`` cases over ``subjects`` (default: :func:`default_subjects`), round-robin, from ``seed``."""
    subjects = default_subjects() if subjects is None else subjects
    rng = np.random.default_rng(seed)
    names = sorted(subjects)
    counts: Counter[tuple[str, str, str, str, bool]] = Counter()
    failures: list[str] = []
    outcomes: Counter[str] = Counter()
    noted: list[str] = []
    start = time.perf_counter()
    for i in range(cases):
        subject = subjects[names[i % len(names)]]
        dname = list(DTYPES)[int(rng.integers(len(DTYPES)))]
        allowed = categories_of(subject)
        category = allowed[int(rng.integers(len(allowed)))]
        try:
            if subject.family == "token":
                case = make_token_case(rng, subject, DTYPES[dname], category)
            else:
                kind = "soft" if category.startswith("bad-label") or rng.random() < 0.5 else "index"
                case = make_case(rng, subject, DTYPES[dname], kind, category)
            problem = check(subject, category, case)
            kind = case.kind
        except Exception as exc:  # an internal error is a failure like any other
            problem = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
            kind = "?"
        where = f"case {i} ({subject.name}, {dname}, {kind}, {category})"
        if isinstance(problem, Passed):
            outcomes[problem.outcome] += 1
            if len(noted) < max_failures:
                noted.append(f"{where}: {problem.outcome}: {problem.detail}")
            problem = None
        counts[(subject.name, dname, kind, category, problem is None)] += 1
        if problem is not None and len(failures) < max_failures:
            failures.append(f"{where}: {problem}")
    return FuzzResult(cases, seed, time.perf_counter() - start, counts, failures, outcomes, noted)


def report(result: FuzzResult) -> None:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, check=False).stdout.strip() or "?"
    except OSError:
        commit = "?"
    print(f"# fuzz_losses: {result.cases} cases, seed {result.seed}, {result.seconds:.1f} s "
          f"({result.cases / max(result.seconds, 1e-9):.0f} cases/s)")
    machine = platform.processor() or platform.machine()
    print(f"# {datetime.date.today()}  torch {torch.__version__}  {machine}  python "
          f"{platform.python_version()}  commit {commit}")
    counts = result.counts
    cells = sorted({k[:4] for k in counts})
    print(f"{'subject':24s} {'dtype':5s} {'target':8s} {'category':20s} {'pass':>6s} {'fail':>5s}")
    for cell in cells:
        ok, bad = counts[(*cell, True)], counts[(*cell, False)]
        print(f"{cell[0]:24s} {cell[1]:5s} {cell[2]:8s} {cell[3]:20s} {ok:6d} {bad:5d}")
    by: Counter = Counter()
    for (name, _, _, category, passed), n in counts.items():
        by[("all", category, passed)] += n
        by[(name, "all", passed)] += n
    print("\nper category:")
    for category in CATEGORIES:
        ok, bad = by[("all", category, True)], by[("all", category, False)]
        print(f"  {category:20s} pass {ok:6d}  fail {bad:4d}")
    print("per subject:")
    for name in sorted({k[0] for k in counts}):
        print(f"  {name:24s} pass {by[(name, 'all', True)]:6d}  fail {by[(name, 'all', False)]:4d}")
    print(f"\ntotal: {result.passed} passed, {result.failed} failed")
    for outcome, n in sorted(result.outcomes.items()):
        print(f"  of the passed, {outcome}: {n}")
    for f in result.noted:
        print("NOTE", f)
    for f in result.failures:
        print("FAIL", f)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=12000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="", help="fuzz only the subjects whose name contains this text")
    args = ap.parse_args()
    torch.set_num_threads(1)
    subjects = {k: s for k, s in default_subjects().items() if args.only in k}
    if not subjects:
        names = ", ".join(sorted(default_subjects()))
        raise SystemExit(f"no subject name contains {args.only!r}; names: {names}")
    result = run(args.cases, args.seed, subjects=subjects)
    report(result)
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
