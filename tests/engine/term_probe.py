"""A test-only loss term that asks for EVERY input and context argument of the term interface and checks
what the harness hands it, with a trainable connector and a memory bank updated by dataset index (the
shape of CRD-like methods). ``register()`` adds it to the loss registry as ``probe``; subprocess tests
import this module and call it before training."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NAME = "probe"


class ProbeLoss(nn.Module):
    requires = (
        "target",
        "teacher_logits",
        "student_features",
        "teacher_features",
        "student_embedding",
        "teacher_embedding",
        "indices",
        "epoch_progress",
    )
    taps = "hint"

    def __init__(
        self,
        num_classes: int,
        num_samples: int,
        student_shapes: list,
        teacher_shapes: list,
        in_features: int,
        teacher_in_features: int,
        total_epochs: int,
        *,
        momentum: float = 0.5,
    ) -> None:
        super().__init__()
        assert len(student_shapes) == len(teacher_shapes) == 1, (student_shapes, teacher_shapes)
        self.context = dict(num_classes=num_classes, num_samples=num_samples, student_shapes=student_shapes,
                            teacher_shapes=teacher_shapes, in_features=in_features,
                            teacher_in_features=teacher_in_features, total_epochs=total_epochs)
        self.momentum = momentum
        self.connector = nn.Linear(in_features, teacher_in_features)
        self.register_buffer("bank", torch.zeros(num_samples, teacher_in_features))
        self.register_buffer("seen", torch.zeros(num_samples, dtype=torch.long))
        self.calls = 0

    def forward(self, student_logits: Tensor, target: Tensor, teacher_logits: Tensor,
                student_features: list[Tensor], teacher_features: list[Tensor], student_embedding: Tensor,
                teacher_embedding: Tensor, indices: Tensor, epoch_progress: float) -> Tensor:
        n, c = student_logits.shape
        ctx = self.context
        assert c == ctx["num_classes"] and teacher_logits.shape == (n, c) and target.shape[0] == n
        assert teacher_logits.dtype == torch.float32 and not teacher_logits.requires_grad
        assert [tuple(f.shape[1:]) for f in student_features] == [tuple(s) for s in ctx["student_shapes"]]
        assert [tuple(f.shape[1:]) for f in teacher_features] == [tuple(s) for s in ctx["teacher_shapes"]]
        assert student_features[0].requires_grad and not teacher_features[0].requires_grad
        assert student_embedding.shape == (n, ctx["in_features"]) and student_embedding.requires_grad
        assert teacher_embedding.shape == (n, ctx["teacher_in_features"])
        assert not teacher_embedding.requires_grad
        assert indices.dtype == torch.int64 and indices.shape == (n,)
        assert int(indices.min()) >= 0 and int(indices.max()) < ctx["num_samples"]
        assert 0 < epoch_progress <= ctx["total_epochs"]
        self.calls += 1
        mapped = self.connector(student_embedding)
        loss = F.mse_loss(mapped, teacher_embedding) + 0.1 * F.mse_loss(mapped, self.bank[indices])
        with torch.no_grad():  # a momentum memory bank, as CRD keeps one
            self.bank[indices] = self.momentum * self.bank[indices] + (1 - self.momentum) * teacher_embedding
            self.seen[indices] += 1
        return loss


def register() -> None:
    from unikd.losses import LOSSES

    if NAME not in LOSSES:
        LOSSES.register(NAME, ProbeLoss)


def unregister() -> None:
    from unikd.losses import LOSSES

    LOSSES._entries.pop(NAME, None)
