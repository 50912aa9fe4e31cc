"""The loss's terms beside the Trainer's ``loss`` and ``eval_loss``: ``ce`` and the distillation term by name.

Training: each micro-batch's ``ce`` and term (token means) are averaged, unweighted, over the logging
interval and over processes. The Trainer's own ``loss`` is the mean over the interval's optimizer steps of
each step's token-exact loss (every micro-batch weighted by its share of the step's kept tokens), so
``loss == ce_weight * ce + weight * term`` exactly when the micro-batches of a step keep equal token counts
(packed blocks), and only approximately under padding or prompt masking.

Evaluation: ``eval_ce`` and ``eval_<term>`` are averaged over the evaluation batches weighted by their
sequence counts, as the Trainer averages ``eval_loss``, so ``eval_loss == ce_weight * eval_ce + weight *
eval_<term>`` up to rounding.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class TermLogging:
    """Mixed into :class:`~unikd.lm.DistillationMixin`: :meth:`_record` in the loss, :meth:`log` adds."""

    def _reset_terms(self) -> None:
        self._terms: dict[str, Tensor] = {}
        self._term_steps = 0
        self._eval_terms: dict[str, Tensor] = {}
        self._eval_weight = 0.0

    def _record(self, terms: dict[str, Tensor], *, training: bool, sequences: int) -> None:
        if not hasattr(self, "_terms"):
            self._reset_terms()
        store = self._terms if training else self._eval_terms
        weight = 1.0 if training else float(sequences)
        for name, value in terms.items():
            v = value.detach().float() * weight
            store[name] = store[name] + v if name in store else v
        if training:
            self._term_steps += 1
        else:
            self._eval_weight += weight

    def _reduced(self, store: dict[str, Tensor], count: float) -> dict[str, float]:
        names = sorted(store)
        local = torch.stack([store[n] for n in names]) / count
        mean = self.accelerator.reduce(local.to(self.args.device), reduction="mean")
        return {name: round(value, 6) for name, value in zip(names, mean.tolist())}

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if not hasattr(self, "_terms"):
            self._reset_terms()
        if "loss" in logs and self._term_steps:
            logs.update(self._reduced(self._terms, self._term_steps))
            if getattr(self.loss_fn, "schedule", None) is not None:
                logs["taid_t"] = round(float(self.loss_fn.schedule.t), 6)
            self._terms, self._term_steps = {}, 0
        # evaluate() logs "<prefix>_loss" (eval_loss, test_loss, ...): the terms join under that prefix
        prefixes = [k[: -len("_loss")] for k in logs if k.endswith("_loss") and k != "loss"]
        if prefixes and self._eval_weight:
            for name, value in self._reduced(self._eval_terms, self._eval_weight).items():
                logs[f"{prefixes[0]}_{name}"] = value
            self._eval_terms, self._eval_weight = {}, 0.0
        super().log(logs, *args, **kwargs)


__all__ = ["TermLogging"]
