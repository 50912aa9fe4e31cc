"""``DistillationTrainer``: a ``transformers.Trainer`` whose loss is a token-level distillation loss.

The student runs through the Trainer's own (possibly DDP-wrapped) model, so ``torchrun`` and
``accelerate launch`` work unchanged. With ``fused=True`` (the default) neither model's ``(B, T, V)`` logits
exist: the hidden states that feed each output head are captured (:mod:`unikd.lm.capture`) and
:class:`unikd.token.FusedDistillLoss` applies the heads chunk by chunk, with the cross-entropy in the same
pass. ``fused=False`` computes the same loss from the logits the models return (the reference path, and the
path for sharded heads under FSDP / ZeRO-3).

The teacher is frozen, in eval mode, moved to the training device and never handed to the accelerator, the
optimizer or DDP. Every term is logged by name beside the Trainer's ``loss``: ``ce`` and the distillation
loss under its own name (``kd``, ``reverse_kl``, ``taid``, ...), averaged over the logging interval and over
processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from unikd.losses._common import check_weight
from unikd.token import (
    FusedDistillLoss,
    TokenDistillLoss,
    cross_entropy,
    list_token_losses,
    next_token_labels,
)

from ._require import require
from .capture import HiddenCapture, check_head_capture, hidden_states, output_head
from .checks import check_dataset, check_pair, context_length
from .loss_state import LOSS_STATE, load_loss_state, save_loss_state

transformers = require("transformers")


@dataclass
class DistillSettings:
    """What the trainer minimises: ``ce_weight * CE + weight * loss(student, teacher)`` per kept token.

    ``loss`` is a name from :func:`unikd.token.list_token_losses` (``kd``, ``reverse_kl``, ``jsd``, ``dkd``,
    ``nkd``, ``taid``); ``hyperparameters`` its settings (e.g. ``{"temperature": 2.0}``; for ``taid`` also
    ``t_start``, ``t_end``, ``alpha``, ``beta``, ``adaptive``). ``chunk_size`` is tokens per chunk of the
    fused path (None: about 2**25 logits per chunk). ``vocab_size`` cuts padded heads to the tokenizer.
    """

    loss: str = "kd"
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    ce_weight: float = 1.0
    weight: float = 1.0
    fused: bool = True
    chunk_size: int | None = None
    vocab_size: int | None = None
    ignore_index: int = -100

    def __post_init__(self) -> None:
        if self.loss not in list_token_losses() or self.loss == "uskd":
            names = ", ".join(n for n in list_token_losses() if n != "uskd")
            raise ValueError(
                f"unknown teacher loss {self.loss!r}; use one of {names} (uskd trains a weak head, not a "
                "teacher: call unikd.token.FusedDistillLoss('uskd') in your own loop)"
            )
        # fused=False combines the two terms here, not in FusedDistillLoss: check the weights for both paths
        self.ce_weight = check_weight(self.ce_weight, "ce_weight")
        self.weight = check_weight(self.weight, "weight")


def freeze_teacher(teacher: nn.Module, device: torch.device | str) -> nn.Module:
    """Eval mode, no gradients, on ``device``."""
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher.to(device)


MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids", "token_type_ids")


class DistillationMixin:
    """The distillation loss and its logging for any ``transformers.Trainer`` subclass (TRL's included).

    Mix it in first (``class MyTrainer(DistillationMixin, SFTTrainer)``) and call :meth:`setup_distillation`
    once after the trainer is built. :class:`DistillationTrainer` is this mixin on ``transformers.Trainer``.
    """

    def setup_distillation(
        self,
        teacher: nn.Module,
        distill: DistillSettings | None = None,
        *,
        student_tokenizer: Any = None,
        teacher_tokenizer: Any = None,
    ) -> None:
        """Check the pair and the training data, freeze the teacher on the training device, build the loss.

        Raises ``ValueError`` when the teacher does not fit the student (vocabulary, head, tokenizers) or
        the data does not fit the models (a sequence longer than either context, no label to learn from).
        """
        distill = distill or DistillSettings()
        model = self.model
        self.distill = distill
        self.vocab = check_pair(
            model,
            teacher,
            vocab_size=distill.vocab_size,
            student_tokenizer=student_tokenizer,
            teacher_tokenizer=teacher_tokenizer,
        )
        contexts = [c for c in (context_length(model), context_length(teacher)) if c is not None]
        self.context = min(contexts) if contexts else None
        check_dataset(self.train_dataset, self.context, ignore_index=distill.ignore_index)
        if self.eval_dataset is not None and not isinstance(self.eval_dataset, dict):
            check_dataset(
                self.eval_dataset, self.context, ignore_index=distill.ignore_index, name="eval_dataset"
            )
        # The loss is normalised by the optimizer step's kept-token count (get_batch_samples below), so the
        # Trainer must not also divide it by the accumulation steps: it skips that when this flag is set.
        self.model_accepts_loss_kwargs = True
        self.teacher = freeze_teacher(teacher, self.args.device)
        common = {"ignore_index": distill.ignore_index, "vocab_size": distill.vocab_size}
        if distill.fused:
            for role, m in (("student", model), ("teacher", self.teacher)):
                check_head_capture(m, role)
            self.loss_fn: nn.Module = FusedDistillLoss(
                distill.loss,
                chunk_size=distill.chunk_size,
                ce_weight=distill.ce_weight,
                weight=distill.weight,
                **common,
                **distill.hyperparameters,
            )
            self._student_capture = HiddenCapture(model)
            self._teacher_capture = HiddenCapture(self.teacher)
        else:
            self.loss_fn = TokenDistillLoss(distill.loss, **common, **distill.hyperparameters)
        self._terms: dict[str, Tensor] = {}
        self._term_steps = 0

    # -- the loss -------------------------------------------------------------------------------------
    def _targets(self, inputs: dict[str, Any]) -> Tensor:
        labels = inputs.pop("labels", None)
        if labels is None:
            raise ValueError(
                "the batch has no 'labels': use a collator that sets them (DataCollatorForLanguageModeling("
                "tokenizer, mlm=False)) or put labels=input_ids into each example"
            )
        return next_token_labels(labels, ignore_index=self.distill.ignore_index)

    def _progress(self) -> float | None:
        max_steps = getattr(self.state, "max_steps", 0) or 0
        return min(1.0, self.state.global_step / max_steps) if max_steps > 0 else None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[override]
        if not hasattr(self, "loss_fn"):
            raise RuntimeError(
                "call trainer.setup_distillation(teacher, DistillSettings(...)) before training"
            )
        inputs = dict(inputs)
        targets = self._targets(inputs)
        inputs = {k: v for k, v in inputs.items() if k in MODEL_INPUTS}
        d = self.distill
        progress = self._progress() if model.training else None
        if d.fused:
            hs = hidden_states(model, self._student_capture, inputs)
            with torch.no_grad():
                ht = hidden_states(self.teacher, self._teacher_capture, inputs)
            ws, bs = output_head(self.accelerator.unwrap_model(model), "student")
            wt, bt = output_head(self.teacher, "teacher")
            loss, parts = self.loss_fn(
                hs,
                ws,
                ht,
                wt,
                targets,
                student_bias=bs,
                teacher_bias=bt,
                progress=progress,
                return_parts=True,
            )
            ce, term = parts["ce"], parts["distill"]
        else:
            logits = model(**inputs, use_cache=False).logits
            with torch.no_grad():
                t_logits = self.teacher(**inputs, use_cache=False).logits
            vocab = self.vocab
            ce = cross_entropy(logits[..., :vocab], targets, ignore_index=d.ignore_index)
            term = self.loss_fn(logits, t_logits, targets, progress=progress)
            loss = d.ce_weight * ce + d.weight * term
        if model.training:
            self._record({"ce": ce, d.loss: term})
            if num_items_in_batch is not None:
                loss = self._token_exact(loss, targets, num_items_in_batch)
        return (loss, {"loss": loss}) if return_outputs else loss

    # -- gradient accumulation: one mean over every kept token of the optimizer step ------------------------
    def get_batch_samples(self, epoch_iterator, num_batches, device):  # type: ignore[override]
        """The Trainer's micro-batches of one optimizer step, with their kept-token count (our shift and
        ``ignore_index``; summed over processes under DDP when ``average_tokens_across_devices``)."""
        batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        if not hasattr(self, "distill") or not batches or any("labels" not in b for b in batches):
            return batches, None
        ignore = self.distill.ignore_index
        count = sum(
            (next_token_labels(b["labels"], ignore_index=ignore) != ignore).sum().to(device) for b in batches
        )
        if self._tokens_over_processes():
            count = self.accelerator.gather(count.reshape(1)).sum()
        return batches, count

    def _tokens_over_processes(self) -> bool:
        return self.args.world_size > 1 and bool(getattr(self.args, "average_tokens_across_devices", False))

    def _token_exact(self, loss: Tensor, targets: Tensor, num_items_in_batch: Any) -> Tensor:
        # loss is this micro-batch's mean over its kept tokens; times kept / (the step's kept tokens), the
        # accumulated gradient is the mean over all of them, however unequal the micro-batches. DDP then
        # averages over processes, which the factor world_size undoes when the count spans every process.
        kept = (targets != self.distill.ignore_index).sum()
        total = torch.as_tensor(num_items_in_batch, device=loss.device).to(loss.dtype).clamp_min(1)
        scale = kept.to(loss.dtype) / total  # a step whose tokens are all ignored: 0, not 0 / 0
        if self._tokens_over_processes():
            scale = scale * self.args.world_size
        return loss * scale

    # -- logging ------------------------------------------------------------------------------------
    def _record(self, terms: dict[str, Tensor]) -> None:
        for name, value in terms.items():
            v = value.detach().float()
            self._terms[name] = self._terms[name] + v if name in self._terms else v
        self._term_steps += 1

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs and self._term_steps:
            names = sorted(self._terms)
            local = torch.stack([self._terms[n] for n in names]) / self._term_steps
            mean = self.accelerator.reduce(local.to(self.args.device), reduction="mean")
            for name, value in zip(names, mean.tolist()):
                logs[name] = round(value, 6)
            if getattr(self.loss_fn, "schedule", None) is not None:
                logs["taid_t"] = round(float(self.loss_fn.schedule.t), 6)
            self._terms, self._term_steps = {}, 0
        super().log(logs, *args, **kwargs)

    # -- checkpoints: the loss's own state (TAID's schedule) travels with the optimizer's ------------------
    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        super()._save_optimizer_and_scheduler(output_dir)
        state = self.loss_fn.state_dict() if hasattr(self, "loss_fn") else {}
        if state and self.args.should_save:
            save_loss_state(state, Path(output_dir) / LOSS_STATE)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        path = Path(checkpoint) / LOSS_STATE if checkpoint else None
        if path is not None and path.exists() and hasattr(self, "loss_fn"):
            self.loss_fn.load_state_dict(load_loss_state(path))


class DistillationTrainer(DistillationMixin, transformers.Trainer):
    """``Trainer(model=student, ...)`` plus ``teacher`` and ``distill`` (a :class:`DistillSettings`).

    ``DistillationTrainer(model, teacher, args, distill=DistillSettings("reverse_kl"), train_dataset=ds,
    data_collator=collator)``; every other ``Trainer`` argument passes through. The constructor runs
    :meth:`~DistillationMixin.setup_distillation`, so a teacher or data that does not fit fails here, before
    any training step; ``student_tokenizer``/``teacher_tokenizer`` (both or neither) are compared id by id.
    """

    def __init__(
        self,
        model: nn.Module,
        teacher: nn.Module,
        args: Any = None,
        *,
        distill: DistillSettings | None = None,
        student_tokenizer: Any = None,
        teacher_tokenizer: Any = None,
        **kwargs: Any,
    ) -> None:
        if teacher is model:
            raise ValueError("the teacher is the student itself; pass a separate (trained) teacher model")
        super().__init__(model=model, args=args, **kwargs)
        self.setup_distillation(
            teacher, distill, student_tokenizer=student_tokenizer, teacher_tokenizer=teacher_tokenizer
        )


__all__ = ["MODEL_INPUTS", "DistillSettings", "DistillationMixin", "DistillationTrainer", "freeze_teacher"]
