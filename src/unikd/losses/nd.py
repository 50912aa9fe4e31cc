"""The ND loss (Wang, Cheng, Duan, Wang, Feng and Kong, "Improving Knowledge Distillation via Regularizing
Feature Norm and Direction", arXiv:2305.17007; authors' code
github.com/WangYZ1608/Knowledge-Distillation-via-ND): pull the student's pre-classifier embedding toward the
direction of the teacher's class mean while pushing its norm up to at least the teacher's. Added beside a
logit term it gives KD++, DKD++, NKD+ND, ..."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor, nn

from ._common import nan_if_nonfinite, parse_target
from ._features import check_count, check_embedding, check_same_batch, common_dtype


def nd_loss(student_emb: Tensor, teacher_emb: Tensor, class_means: Tensor, target: Tensor) -> Tensor:
    """``mean_i [1 - <s_i, e_{y_i}> / max(||s_i||, ||t_i||)]`` with ``e_c = mu_c / ||mu_c||``.

    ``mu_c`` is the teacher's mean embedding of class c on the training set. The loss is 0 exactly when the
    student embedding points along ``e_y`` with a norm at least the teacher's; the gradient raises the
    student's norm while it is the smaller one. As the authors' ``DirectNormLoss`` (``CIFAR/utils.py``):
    no eps (a row where both embeddings are exactly 0 gives NaN), the maximum taken with the gradient of
    whichever norm is larger (the teacher's is detached).

    Args:
        student_emb: ``(N, D)`` student embedding (projected to the teacher's width if they differ).
        teacher_emb: ``(N, D)`` teacher embedding (detached).
        class_means: ``(C, D)`` teacher class means (direction only matters).
        target: int64 ``(N,)`` classes, or float ``(N, C)`` soft labels (their argmax class is used).
    """
    s = check_embedding(student_emb, "student_emb")
    t = check_embedding(teacher_emb, "teacher_emb").detach()
    check_same_batch(s, t, "student_emb", "teacher_emb")
    if not isinstance(class_means, Tensor) or class_means.dim() != 2:
        got = tuple(class_means.shape) if isinstance(class_means, Tensor) else type(class_means).__name__
        raise ValueError(f"class_means must be a (C, D) tensor, got {got}")
    if s.shape[1] != t.shape[1] or s.shape[1] != class_means.shape[1]:
        raise ValueError(
            f"width mismatch: student_emb D={s.shape[1]}, teacher_emb D={t.shape[1]}, class_means "
            f"D={class_means.shape[1]}; project the student embedding to the teacher's width (NDLoss does)"
        )
    y = parse_target(target, s.shape[0], class_means.shape[0], device=s.device).index[:, 0]  # (N,)
    dt = common_dtype(s, t, class_means)
    s, t = s.to(dt), t.to(dt)
    mu = class_means.detach().to(dt)[y]  # (N, D)
    direction = mu / mu.norm(dim=1, keepdim=True).clamp_min(torch.finfo(dt).tiny)
    norm = torch.maximum(s.norm(dim=1), t.norm(dim=1))  # (N,)
    # An infinite teacher norm would turn the student's term into 1 - finite / inf = 1: a finite loss that
    # hides the bad embedding. NaN instead, for either embedding and for non-finite class means.
    return nan_if_nonfinite((1.0 - (s * direction).sum(dim=1) / norm).mean(), s, t, mu)  # docs/losses.md


def load_class_means(path: str | Path, num_classes: int) -> Tensor:
    """``(C, D)`` class means from a ``.pt`` tensor or the authors' ``center_emb_train.json``
    (``{"0": [...], "1": [...], ...}``)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"class_means file {str(p)!r} does not exist")
    if p.suffix == ".json":
        raw = json.loads(p.read_text())
        missing = [c for c in range(num_classes) if str(c) not in raw]
        if missing:
            raise ValueError(
                f"{p}: no class mean for classes {missing[:10]} (expected keys '0'..'{num_classes - 1}')"
            )
        means = torch.tensor([raw[str(c)] for c in range(num_classes)], dtype=torch.float32)
    else:
        means = torch.load(p, map_location="cpu", weights_only=True)
        if not isinstance(means, Tensor):
            raise ValueError(f"{p} must hold a (C, D) tensor, got {type(means).__name__}")
    return means


class NDLoss(nn.Module):
    """:func:`nd_loss` with the teacher's class means as state.

    Class means (``class_means``): a ``(C, D_t)`` tensor or a file (``.pt`` or the authors' JSON) fixes them.
    Otherwise they come from the teacher: the harness can call :meth:`fit_class_means` at start-up with the
    teacher embeddings of one pass over the training set (what the authors do, with the training
    augmentation); if it has not, the module accumulates the detached teacher embeddings it sees during
    training and uses the running means, frozen once ``num_samples`` embeddings were seen (after the first
    epoch), so only the first epoch differs. Sums and counts are buffers (checkpointed).

    When the student and teacher widths differ, a projector ``BatchNorm1d -> Dropout(0.5) -> Linear`` (zero
    bias) maps the student embedding to the teacher's width, as the authors' ``EmbTrans``; it is trainable
    state of this module.
    """

    requires = ("student_embedding", "teacher_embedding", "target")

    def __init__(
        self,
        num_classes: int,
        in_features: int,
        teacher_in_features: int,
        num_samples: int | None = None,
        *,
        class_means: Tensor | str | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = check_count(num_classes, "num_classes", minimum=2)
        check_count(in_features, "in_features")
        self.dim = check_count(teacher_in_features, "teacher_in_features")
        self.num_samples = None if num_samples is None else check_count(num_samples, "num_samples")
        self.projector: nn.Module | None = None
        if in_features != teacher_in_features:
            linear = nn.Linear(in_features, teacher_in_features)
            nn.init.zeros_(linear.bias)
            self.projector = nn.Sequential(nn.BatchNorm1d(in_features), nn.Dropout(0.5), linear)
        self.register_buffer("class_sums", torch.zeros(num_classes, teacher_in_features))
        self.register_buffer("class_counts", torch.zeros(num_classes))
        self.register_buffer("fitted", torch.tensor(False))
        # host copies of ``fitted`` (once True) and of the rows accumulated so far, so that a training step
        # needs no host sync to read them
        self._fitted_known = False
        self._seen: float | None = None
        self.register_load_state_dict_post_hook(_forget_fitted)
        if class_means is not None:
            means = (
                load_class_means(class_means, num_classes)
                if isinstance(class_means, (str, Path))
                else class_means
            )
            self._set_means(torch.as_tensor(means))

    def _set_means(self, means: Tensor) -> None:
        if means.shape != (self.num_classes, self.dim) or not means.is_floating_point():
            raise ValueError(
                f"class_means must be a float (num_classes, teacher_in_features) = ({self.num_classes}, "
                f"{self.dim}) tensor, got {means.dtype} {tuple(means.shape)}"
            )
        if not bool(torch.isfinite(means).all()) or bool((means.norm(dim=1) == 0).any()):
            raise ValueError("class_means must be finite with no all-zero row (a zero mean has no direction)")
        self.class_sums.copy_(means)
        self.class_counts.fill_(1.0)
        self.fitted.fill_(True)
        self._seen = None

    @torch.no_grad()
    def fit_class_means(self, batches: Iterable[tuple[Tensor, Tensor]]) -> Tensor:
        """Set the class means from ``(teacher_embedding (N, D), target)`` batches (one pass over the
        training set); every class must occur. Returns the ``(C, D)`` means."""
        self.class_sums.zero_()
        self.class_counts.zero_()
        for emb, target in batches:
            self._accumulate(emb, target)
        empty = (self.class_counts == 0).nonzero().flatten().tolist()
        if empty:
            raise ValueError(
                f"fit_class_means saw no sample of classes {empty[:10]}; pass the whole training set"
            )
        means = self.class_means()
        self._set_means(means)
        return means

    def class_means(self) -> Tensor:
        """The current ``(C, D)`` means (rows of unseen classes are 0)."""
        return self.class_sums / self.class_counts.clamp_min(1.0).unsqueeze(1)

    def _accumulate(self, emb: Tensor, target: Tensor) -> None:
        e = check_embedding(emb, "teacher_embedding").detach()
        if e.shape[1] != self.dim:
            raise ValueError(f"teacher_embedding has width {e.shape[1]}, expected {self.dim}")
        y = parse_target(target.to(e.device), e.shape[0], self.num_classes, device=e.device).index[:, 0]
        self.class_sums.index_add_(0, y, e.to(self.class_sums.dtype))
        self.class_counts.index_add_(0, y, torch.ones_like(y, dtype=self.class_counts.dtype))

    def forward(
        self, student_logits: Tensor, student_embedding: Tensor, teacher_embedding: Tensor, target: Tensor
    ) -> Tensor:
        s = check_embedding(student_embedding, "student_embedding")
        if self.projector is not None:
            s = self.projector(s.to(self.projector[2].weight.dtype))
        if not self._fitted_known:
            self._fitted_known = bool(self.fitted)
        if not self._fitted_known:
            if not self.training:
                raise ValueError(
                    "NDLoss has no class means yet: pass class_means=..., call fit_class_means(...) or run "
                    "it in training mode, where it accumulates them from the teacher embeddings"
                )
            if self._seen is None:
                self._seen = float(self.class_counts.sum())
            self._accumulate(teacher_embedding, target)
            self._seen += teacher_embedding.shape[0]
            if self.num_samples is not None and self._seen >= self.num_samples:
                self.fitted.fill_(True)
        return nd_loss(s, teacher_embedding, self.class_means(), target)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, dim={self.dim}, projector={self.projector is not None}"


def _forget_fitted(module: NDLoss, incompatible_keys: object) -> None:
    module._fitted_known = False  # a checkpoint taken while the means were still accumulating
    module._seen = None
