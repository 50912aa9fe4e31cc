"""On-policy (student-sampled) and sequence-level (teacher-sampled) batches for the distillation trainer.

Before an optimizer step's token count is taken, each of its micro-batches is, by a number fixed by the
trainer's seed, the step and the micro-batch's index (:func:`~unikd.lm.generation.uniform`, the same on
every process): with probability ``on_policy`` replaced by the student's completions of its prompts, with
probability ``seq_kd`` by the teacher's, and otherwise kept. A replaced batch is ``prompt + completion``
per row with the prompt masked (labels ``ignore_index``), so the loss, the step's kept-token count and the
gradient-accumulation weights all come from the generated tokens.

The prompt of a row is, in this order: the collator's ``prompt_input_ids`` (:class:`PromptCollator`), the
row's masked prefix (labels ``ignore_index`` before the first kept label; a row with no kept label is all
prompt), or, for a row whose labels mask no prefix (packed text), its first ``generation.prompt_length``
tokens (:func:`batch_prompts`).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from .checks import check_dataset
from .generation import pack, row_seed, sample_completions, uniform
from .prompt_data import PromptCollator, is_text_dataset, text_rows_have_completions
from .settings import DistillSettings

ROLES = ("student", "teacher")


def _ids_of(tok: Any, name: str) -> Any:
    return getattr(tok, name, None) if tok is not None else None


def end_and_pad(distill: DistillSettings, tokenizer: Any, model: Any) -> tuple[Any, int]:
    """The end token(s) and the padding id for generation: the settings', the tokenizer's, the model's."""
    g = distill.generation
    eos = g.eos_token_id if g.eos_token_id is not None else _ids_of(tokenizer, "eos_token_id")
    if eos is None:
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    pad = g.pad_token_id if g.pad_token_id is not None else _ids_of(tokenizer, "pad_token_id")
    if pad is None:
        pad = eos if isinstance(eos, int) else (eos[0] if eos else 0)
    return eos, int(pad)


def batch_prompts(batch: dict[str, Tensor], *, ignore_index: int = -100, prompt_length: int | None = None):
    """Each row's prompt (token ids): the collator's ``prompt_input_ids``, else the row's masked prefix
    (labels ``ignore_index`` before the first kept label; all of a row with none kept), else, for a row
    whose labels mask no prefix (packed text), its first ``prompt_length`` tokens."""
    if "prompt_input_ids" in batch:
        ids, mask = batch["prompt_input_ids"], batch["prompt_attention_mask"]
        return [r[m.bool()].tolist() for r, m in zip(ids.cpu(), mask.cpu())]
    ids = batch["input_ids"].cpu()
    mask = batch.get("attention_mask")
    mask = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.cpu().bool()
    out = []
    for i, (r, m, y) in enumerate(zip(ids, mask, batch["labels"].cpu())):
        kept = (y != ignore_index).nonzero()
        start = int(kept[0]) if kept.numel() else r.numel()
        prompt = r[:start][m[:start]].tolist()
        if not prompt and prompt_length is not None:
            prompt = r[m][:prompt_length].tolist()
        if not prompt:
            raise ValueError(
                f"row {i} of a batch has no prompt: none of its leading labels is ignore_index, so the "
                "prompt to generate from is unknown. Mask the prompt's labels (-100), or set generation "
                "prompt_length=k to use the first k tokens of such rows (e.g. for packed text)"
            )
        out.append(prompt)
    return out


class OnPolicyBatches:
    """Replaces the micro-batches of a step by sampled ones; ``stats`` counts them and the time spent."""

    def __init__(
        self, distill: DistillSettings, *, seed: int, vocab: int, context: int | None, eos: Any, pad: int
    ) -> None:
        self.distill, self.seed, self.vocab, self.context = distill, seed, vocab, context
        self.eos, self.pad = eos, pad
        self.stats = {"student": 0, "teacher": 0, "data": 0, "generated_tokens": 0, "seconds": 0.0}

    def role(self, step: int, micro: int) -> str | None:
        """``"student"``, ``"teacher"`` or None (the dataset's) for micro-batch ``micro`` of ``step``."""
        u = uniform(self.seed, step, micro, "mode")
        d = self.distill
        return "student" if u < d.on_policy else "teacher" if u < d.on_policy + d.seq_kd else None

    def prompts(self, batch: dict[str, Tensor]) -> list[list[int]]:
        g = self.distill.generation
        return batch_prompts(batch, ignore_index=self.distill.ignore_index, prompt_length=g.prompt_length)

    def __call__(self, trainer: Any, batches: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The step's micro-batches, each replaced by a sampled one where :meth:`role` says so."""
        args, step = trainer.args, trainer.state.global_step
        per_device, world, rank = args.per_device_train_batch_size, args.world_size, args.process_index
        out = []
        for micro, batch in enumerate(batches):
            role = self.role(step, micro)
            if role is None:
                self.stats["data"] += 1
                out.append(batch)
                continue
            t0 = time.perf_counter()
            prompts = self.prompts(batch)
            # the row's place in the step's global batch: the same for any split over processes
            first = (micro * world + rank) * per_device
            seeds = [row_seed(self.seed, step, first + i, role) for i in range(len(prompts))]
            model = trainer.accelerator.unwrap_model(trainer.model) if role == "student" else trainer.teacher
            completions = sample_completions(
                model,
                prompts,
                seeds,
                self.distill.generation,
                vocab=self.vocab,
                eos=self.eos,
                pad=self.pad,
                context=self.context,
            )
            new = pack(prompts, completions, pad=self.pad, ignore_index=self.distill.ignore_index)
            device = batch["input_ids"].device
            out.append({k: v.to(device) for k, v in new.items()})
            self.stats[role] += 1
            self.stats["generated_tokens"] += sum(len(c) for c in completions)
            self.stats["seconds"] += time.perf_counter() - t0
        return out


def check_data(
    dataset: Any, context: int | None, distill: DistillSettings, name: str = "train_dataset"
) -> None:
    """The trainer's data check (:func:`~unikd.lm.checks.check_dataset`), aware of generated batches.

    Text prompt rows are tokenized by the collator, so only their form is checked: when the dataset's own
    batches (a fraction ``1 - on_policy - seq_kd``) would find no completion there, ``ValueError``. A
    tokenized dataset every batch of which is generated may hold prompts only (every label ignored).
    """
    if is_text_dataset(dataset):
        rest = 1.0 - distill.on_policy - distill.seq_kd
        if name == "train_dataset" and rest > 1e-12 and not text_rows_have_completions(dataset):
            raise ValueError(
                f"{name} holds prompts without completions, but on_policy + seq_kd = "
                f"{distill.on_policy + distill.seq_kd:g} < 1 leaves a fraction {rest:g} of the batches to "
                "train on the dataset's completions; add completions (or assistant replies) or set "
                "on_policy + seq_kd = 1"
            )
        return
    if name == "train_dataset" and distill.on_policy + distill.seq_kd >= 1 - 1e-12:
        try:
            check_dataset(dataset, context, ignore_index=distill.ignore_index, name=name)
        except ValueError as exc:
            if "no token to learn from" not in str(exc):  # prompt-only rows are fine: every batch samples
                raise
        return
    check_dataset(dataset, context, ignore_index=distill.ignore_index, name=name)


def on_policy_for(trainer: Any, distill: DistillSettings, tokenizer: Any = None) -> OnPolicyBatches | None:
    """The trainer's :class:`OnPolicyBatches` (None unless ``on_policy`` or ``seq_kd``); keeps the text
    columns of a prompt dataset from the Trainer's column pruning (the collator reads them)."""
    if not distill.generates:
        return None
    if is_text_dataset(trainer.train_dataset):
        trainer.args.remove_unused_columns = False
    tokenizer = tokenizer if tokenizer is not None else getattr(trainer, "processing_class", None)
    eos, pad = end_and_pad(distill, tokenizer, trainer.accelerator.unwrap_model(trainer.model))
    return OnPolicyBatches(
        distill, seed=trainer.args.seed, vocab=trainer.vocab, context=trainer.context, eos=eos, pad=pad
    )


def default_prompt_collator(distill: DistillSettings | None, dataset: Any, tokenizer: Any) -> Any:
    """A :class:`PromptCollator` for a generating trainer whose dataset holds text rows (else None)."""
    if distill is None or not distill.generates or not is_text_dataset(dataset):
        return None
    if tokenizer is None:
        raise ValueError(
            "the training data holds text prompts: pass the tokenizer (processing_class=tokenizer or "
            "student_tokenizer=...) or a data_collator that tokenizes them"
        )
    return PromptCollator(tokenizer, ignore_index=distill.ignore_index)


__all__ = [
    "ROLES",
    "OnPolicyBatches",
    "batch_prompts",
    "check_data",
    "default_prompt_collator",
    "end_and_pad",
    "on_policy_for",
]
