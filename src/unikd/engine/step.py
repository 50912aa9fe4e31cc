"""The per-method student objective: cross-entropy plus the method's own term, as named loss terms.

Every method shares one shape: ``loss = ce_weight * CE + weight * ramp(epoch) * method_term``. The terms are
returned by name (``{"loss", "ce", "nkd"}``) so that logging, the progress bar and the non-finite check
reuse them instead of recomputing. The harness never switches on method names to decide what a loss needs:
it reads the module's ``requires_teacher`` / ``requires_features`` attributes.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unikd.engine.config import Config


class NonFiniteLossError(RuntimeError):
    """Raised when a loss term is NaN or infinite; the message names the step and the term."""


def build_loss_module(cfg: Config, *, num_classes: int, in_features: int | None = None) -> nn.Module | None:
    """The method's loss module from ``unikd.losses`` (None for ce and ls).

    USKD's module owns the weak linear head, so it needs the feature width ``in_features``.
    """
    if cfg.loss_name is None:
        return None
    from unikd.losses import create_loss

    kwargs: dict[str, Any] = dict(cfg.loss.params)
    if cfg.loss_name == "uskd":
        if in_features is None:
            raise ValueError("USKD needs the feature width (in_features) of its weak head")
        kwargs.update(in_features=in_features, num_classes=num_classes)
    return create_loss(cfg.loss_name, **kwargs)


def loss_class(loss_name: str) -> type[nn.Module]:
    """The module class behind a ``unikd.losses`` registry name (read for its ``requires_*`` flags)."""
    from unikd.losses import LOSSES

    return LOSSES.get(loss_name)


def needs(module: nn.Module | type | None, attribute: str) -> bool:
    """``requires_teacher`` / ``requires_features`` of a loss module or class (False without one)."""
    return bool(getattr(module, attribute, False)) if module is not None else False


class Objective:
    """Computes the named loss terms of one training step.

    Args:
        cfg: the run config (method, ``loss.ce_weight``, ``loss.weight``, ``loss.warmup_epochs``,
            ``loss.smoothing`` for ``ls``).
        loss_module: the method's module, or None for ce/ls.
    """

    def __init__(self, cfg: Config, loss_module: nn.Module | None) -> None:
        self.method = cfg.method
        self.loss_module = loss_module
        self.ce_weight = cfg.loss.ce_weight
        self.weight = cfg.loss.weight
        self.warmup_epochs = cfg.loss.warmup_epochs
        self.smoothing = cfg.loss.smoothing if cfg.method == "ls" else 0.0
        self.requires_teacher = needs(loss_module, "requires_teacher")
        self.requires_features = needs(loss_module, "requires_features")

    def ramp(self, progress_epochs: float) -> float:
        """Linear warm-up factor of the method term; ``progress_epochs`` counts finished epochs (fractional).

        Per-step rather than per-epoch (DKD ramps per epoch), so the first steps do not jump.
        """
        if self.warmup_epochs <= 0:
            return 1.0
        return min(1.0, max(0.0, progress_epochs) / self.warmup_epochs)

    def term_names(self) -> list[str]:
        names = ["loss", "ce"]
        if self.loss_module is not None:
            names.append(self.method)
        return names

    def __call__(
        self,
        logits: Tensor,
        target: Tensor,
        *,
        teacher_logits: Tensor | None = None,
        features: Tensor | None = None,
        progress_epochs: float = 0.0,
    ) -> dict[str, Tensor]:
        """Named 0-dim float32 terms; ``"loss"`` is the weighted total that is back-propagated."""
        logits = logits.float()  # losses in fp32 even under autocast (softmax of low-precision logits)
        ce = F.cross_entropy(logits, target, label_smoothing=self.smoothing)
        terms: dict[str, Tensor] = {"ce": ce}
        total = self.ce_weight * ce
        module = self.loss_module
        if module is not None:
            if self.requires_teacher:
                if teacher_logits is None:
                    raise ValueError(f"method {self.method!r} needs teacher logits")
                term = module(logits, teacher_logits.float(), target)
            elif self.requires_features:
                if features is None:
                    raise ValueError(f"method {self.method!r} needs the student's features")
                term = module(logits, features.float(), target)
            else:
                term = module(logits, target)
            terms[self.method] = term
            total = total + (self.weight * self.ramp(progress_epochs)) * term
        return {"loss": total, **terms}


def check_finite(values: Tensor, names: list[str], *, step: int, epoch: int, where: str) -> None:
    """Raise :class:`NonFiniteLossError` naming the first non-finite term (``values`` aligned with names)."""
    bad = [(n, float(v)) for n, v in zip(names, values.tolist()) if not torch.isfinite(torch.tensor(v))]
    if not bad:
        return
    # Prefer naming a component over the total: the total is non-finite because a component is.
    components = [b for b in bad if b[0] != "loss"] or bad
    name, value = components[0]
    raise NonFiniteLossError(
        f"non-finite loss at step {step} (epoch {epoch}): term {name!r} = {value}. "
        f"Training stopped; {where}. Lower optim.lr, enable optim.clip_grad_norm, use precision=fp32, "
        "or check the data and the teacher."
    )
