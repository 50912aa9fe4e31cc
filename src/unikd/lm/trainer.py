"""``DistillationTrainer``: a ``transformers.Trainer`` whose loss is a token-level distillation loss.

The student runs through the Trainer's own (possibly DDP-wrapped) model, so ``torchrun`` and
``accelerate launch`` work unchanged. With ``fused=True`` (the default) neither model's ``(B, T, V)`` logits
exist: the hidden states that feed each output head are captured (:mod:`unikd.lm.capture`) and
:class:`unikd.token.FusedDistillLoss` applies the heads chunk by chunk, with the cross-entropy in the same
pass. ``fused=False`` computes the same loss from the logits the models return (the reference path, and the
path under DeepSpeed ZeRO-3). Students (and teachers) sharded with FSDP2 train on both paths, the sharded
head gathered for the fused loss (:mod:`unikd.lm.sharding`, :mod:`unikd.lm.sharded_training`).

The teacher is frozen, in eval mode, placed on the training device (or ``teacher_device``, in
``teacher_dtype``: :mod:`unikd.lm.placement`) and never handed to the accelerator, the optimizer or DDP.
Every term is logged by name beside the Trainer's ``loss`` and ``eval_loss``: ``ce`` and the distillation
loss under its own name (``kd``, ``reverse_kl``, ``taid``, ...; :mod:`unikd.lm.term_log`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from unikd.token import FusedDistillLoss, TokenDistillLoss, cross_entropy, next_token_labels

from ._require import require
from .cached_teacher import cached_loss, setup_cached_teacher
from .capture import HiddenCapture, check_head_capture, hidden_and_logits, hidden_states, output_head
from .checks import check_pair, context_length
from .cross_tokenizer import cross_loss, default_cross_collator, setup_cross_tokenizer
from .loss_state import LOSS_STATE, load_loss_state, save_loss_state
from .on_policy import check_data, default_prompt_collator, on_policy_for
from .placement import TeacherPlacement, freeze_teacher
from .settings import DistillSettings
from .sharded_training import ShardedStudentMixin
from .sharding import anchor, check_saving, is_sharded, reshard
from .term_log import TermLogging

transformers = require("transformers")


MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids", "token_type_ids")


class DistillationMixin(ShardedStudentMixin, TermLogging):
    """The distillation loss and its logging for any ``transformers.Trainer`` subclass (TRL's included).

    Mix it in first (``class MyTrainer(DistillationMixin, SFTTrainer)``) and call :meth:`setup_distillation`
    once after the trainer is built. :class:`DistillationTrainer` is this mixin on ``transformers.Trainer``.
    """

    def setup_distillation(
        self,
        teacher: nn.Module | None,
        distill: DistillSettings | None = None,
        *,
        student_tokenizer: Any = None,
        teacher_tokenizer: Any = None,
        sparse_teacher: Any = None,
        eval_sparse_teacher: Any = None,
        teacher_index: str | None = None,
    ) -> None:
        """Check the pair and the training data, freeze the teacher on the training device, build the loss.

        Raises ``ValueError`` when the teacher does not fit the student (vocabulary, head, tokenizers) or
        the data does not fit the models (a sequence longer than either context, no label to learn from).
        ``teacher=None`` with ``sparse_teacher=<cache folder>`` trains from cached teacher rows instead
        (:mod:`unikd.lm.cached_teacher`; ``teacher_index`` names a column of cache indices).
        """
        distill = distill or DistillSettings()
        model = self.model
        self.distill = distill
        self._cached = None
        if is_sharded(model):
            check_saving(self.args)
        self._check_zero3(distill.fused and not distill.cross_tokenizer)  # the cross path uses logits
        if (teacher is None) == (sparse_teacher is None):
            raise ValueError("pass a teacher model or sparse_teacher=<cache folder> (exactly one of them)")
        if distill.cross_tokenizer:
            setup_cross_tokenizer(self, teacher, distill, student_tokenizer, teacher_tokenizer)
            self._reset_terms()
            return
        if teacher is None:
            setup_cached_teacher(self, distill, sparse_teacher, eval_sparse_teacher=eval_sparse_teacher,
                                 teacher_index=teacher_index, student_tokenizer=student_tokenizer)
            self.model_accepts_loss_kwargs = True  # as below: the loss is token-exact per optimizer step
            self._reset_terms()
            return
        self.vocab = check_pair(
            model,
            teacher,
            vocab_size=distill.vocab_size,
            student_tokenizer=student_tokenizer,
            teacher_tokenizer=teacher_tokenizer,
        )
        contexts = [c for c in (context_length(model), context_length(teacher)) if c is not None]
        self.context = min(contexts) if contexts else None
        check_data(self.train_dataset, self.context, distill)
        if self.eval_dataset is not None and not isinstance(self.eval_dataset, dict):
            check_data(self.eval_dataset, self.context, distill, name="eval_dataset")
        # The loss is normalised by the optimizer step's kept-token count (get_batch_samples below), so the
        # Trainer must not also divide it by the accumulation steps: it skips that when this flag is set.
        self.model_accepts_loss_kwargs = True
        self._placement = TeacherPlacement(
            teacher, self.args.device, distill.teacher_device, distill.teacher_dtype
        )
        self.teacher = self._placement.teacher
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
            for m in (model, self.teacher):  # the probe forward left the FSDP2 roots gathered
                reshard(m)
        else:
            self.loss_fn = TokenDistillLoss(distill.loss, **common, **distill.hyperparameters)
        self._reset_terms()
        # on_policy / seq_kd: the micro-batches that train on sampled completions (unikd.lm.on_policy)
        self.on_policy_batches = on_policy_for(self, distill, student_tokenizer)

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
        index = inputs.pop(self._cache_key) if getattr(self, "_cached", None) is not None else None
        batch, inputs = inputs, {k: v for k, v in inputs.items() if k in MODEL_INPUTS}
        d = self.distill
        progress = self._progress() if model.training else None
        self._sync_gradients_of(model)
        if d.cross_tokenizer:  # the teacher reads its own ids, kept in the batch beside the student's
            loss, ce, term = cross_loss(self, model, batch, targets)
        elif index is not None:  # a cached teacher: no teacher forward
            loss, ce, term = cached_loss(self, model, inputs, index, targets, progress)
        elif d.fused:
            loss, ce, term = self._fused_loss(model, inputs, targets, progress)
        else:
            logits = model(**inputs, use_cache=False).logits
            with torch.no_grad():
                t_inputs = self._placement.inputs(inputs)
                t_logits = self.teacher(**t_inputs, use_cache=False).logits.to(logits.device)
            reshard(self.teacher)  # a sharded teacher's root: back to its shards until the next batch
            vocab = self.vocab
            ce = cross_entropy(logits[..., :vocab], targets, ignore_index=d.ignore_index)
            term = self.loss_fn(logits, t_logits, targets, progress=progress)
            loss = d.ce_weight * ce + d.weight * term
        self._record({"ce": ce, d.loss: term}, training=model.training, sequences=targets.shape[0])
        if model.training:
            if num_items_in_batch is not None:
                loss = self._token_exact(loss, targets, num_items_in_batch)
        return (loss, {"loss": loss}) if return_outputs else loss

    def _fused_loss(self, model, inputs, targets, progress) -> tuple[Tensor, Tensor, Tensor]:
        hs, logits = hidden_and_logits(model, self._student_capture, inputs)
        with torch.no_grad():  # one (B, T, d) transfer when the teacher runs elsewhere
            ht = hidden_states(self.teacher, self._teacher_capture, self._placement.inputs(inputs))
            ht = ht.to(hs.device)
        ws, bs = output_head(self.accelerator.unwrap_model(model), "student")  # FSDP2: gathered
        wt, bt = self._placement.head(hs.device)
        loss, parts = self.loss_fn(
            hs, ws, ht, wt, targets, student_bias=bs, teacher_bias=bt, progress=progress, return_parts=True
        )
        reshard(self.teacher)
        if is_sharded(model):  # the units that only feed the skipped logits still run their backward hooks
            loss = anchor(loss, logits)
        return loss, parts["ce"], parts["distill"]

    # -- gradient accumulation: one mean over every kept token of the optimizer step ------------------------
    def get_batch_samples(self, epoch_iterator, num_batches, device):  # type: ignore[override]
        """The Trainer's micro-batches of one optimizer step, with their kept-token count (our shift and
        ``ignore_index``; summed over processes under DDP when ``average_tokens_across_devices``)."""
        batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        if getattr(self, "on_policy_batches", None) is not None and batches:
            batches = self.on_policy_batches(self, batches)  # sampled first: the count is the generated one
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
    ``teacher=None, sparse_teacher=<cache folder>`` (and ``eval_sparse_teacher``, ``teacher_index``) trains
    from a :class:`~unikd.token.SparseTeacherCache` with no teacher model (:mod:`unikd.lm.cached_teacher`).
    """

    def __init__(
        self,
        model: nn.Module,
        teacher: nn.Module | None,
        args: Any = None,
        *,
        distill: DistillSettings | None = None,
        student_tokenizer: Any = None,
        teacher_tokenizer: Any = None,
        sparse_teacher: Any = None,
        eval_sparse_teacher: Any = None,
        teacher_index: str | None = None,
        **kwargs: Any,
    ) -> None:
        if teacher is model:
            raise ValueError("the teacher is the student itself; pass a separate (trained) teacher model")
        if kwargs.get("data_collator") is None and distill is not None and distill.cross_tokenizer:
            kwargs["data_collator"] = default_cross_collator(
                model, teacher, student_tokenizer, teacher_tokenizer
            )
        elif kwargs.get("data_collator") is None:  # text prompts (on_policy / seq_kd) need tokenizing
            tok = kwargs.get("processing_class") or student_tokenizer
            kwargs["data_collator"] = default_prompt_collator(distill, kwargs.get("train_dataset"), tok)
        super().__init__(model=model, args=args, **kwargs)
        self.setup_distillation(
            teacher, distill, student_tokenizer=student_tokenizer, teacher_tokenizer=teacher_tokenizer,
            sparse_teacher=sparse_teacher,
            eval_sparse_teacher=eval_sparse_teacher,
            teacher_index=teacher_index,
        )


__all__ = ["MODEL_INPUTS", "DistillSettings", "DistillationMixin", "DistillationTrainer", "freeze_teacher"]
