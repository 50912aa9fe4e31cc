"""Text prompt datasets for on-policy distillation: TRL's ``prompt`` and chat ``messages`` formats.

Rows are ``{"prompt": str}`` (prompt only), ``{"prompt": str, "completion": str}``, or chat
``{"messages": [{"role", "content"}, ...]}`` (rendered with the tokenizer's chat template; a last
assistant message is the completion, otherwise the conversation is the prompt, with the generation
prompt appended). TRL's conversational prompts (``prompt`` / ``completion`` as lists of messages) are read
the same way. :class:`PromptCollator` tokenizes them into the batch the trainer reads: the prompt
(``prompt_input_ids``, ``prompt_attention_mask``) and, for the dataset's own batches, ``prompt +
completion`` with the prompt masked (``input_ids``, ``attention_mask``, ``labels``).
"""

from __future__ import annotations

from collections.abc import Sized
from typing import Any

import torch
from torch import Tensor

TEXT_KEYS = ("prompt", "messages")


def _first(dataset: Any) -> Any:
    if not (isinstance(dataset, Sized) and hasattr(dataset, "__getitem__")) or len(dataset) == 0:
        return None
    return dataset[0]


def is_text_dataset(dataset: Any) -> bool:
    """The first row holds ``prompt`` or ``messages`` and no ``input_ids`` (it is not tokenized yet)."""
    row = _first(dataset)
    return isinstance(row, dict) and "input_ids" not in row and any(k in row for k in TEXT_KEYS)


def text_rows_have_completions(dataset: Any) -> bool:
    row = _first(dataset)
    if "completion" in row:
        return True
    messages = row.get("messages") or []
    return bool(messages) and messages[-1].get("role") == "assistant"


def _template(tok: Any, messages: list[dict[str, Any]], *, generation_prompt: bool) -> str:
    if getattr(tok, "chat_template", None) is None:
        raise ValueError(
            "the data holds chat messages but the tokenizer has no chat template: set "
            "tokenizer.chat_template (or give plain-text 'prompt' rows)"
        )
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def split_row(tok: Any, row: dict[str, Any]) -> tuple[str, str | None]:
    """``(prompt text, completion text or None)`` of one row."""
    if "messages" in row:
        messages = list(row["messages"])
        if messages and messages[-1].get("role") == "assistant":
            prompt = _template(tok, messages[:-1], generation_prompt=True)
            full = _template(tok, messages, generation_prompt=False)
            if not full.startswith(prompt):
                raise ValueError("the chat template does not render the conversation as prompt + reply")
            return prompt, full[len(prompt) :]
        return _template(tok, messages, generation_prompt=True), None
    if "prompt" not in row:
        raise ValueError(
            f"a row has keys {sorted(row)}; prompt data needs 'prompt' (and 'completion') or 'messages'"
        )
    prompt, completion = row["prompt"], row.get("completion")
    if isinstance(prompt, list):  # TRL's conversational prompt: a list of messages
        text = _template(tok, prompt, generation_prompt=True)
        if isinstance(completion, list):
            full = _template(tok, prompt + completion, generation_prompt=False)
            return text, full[len(text) :] if full.startswith(text) else None
        return text, None if completion is None else str(completion)
    return str(prompt), None if completion is None else str(completion)


def _pad(rows: list[list[int]], pad: int, fill: int | None = None) -> tuple[Tensor, Tensor]:
    width = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), pad if fill is None else fill, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


class PromptCollator:
    """Tokenizes text prompt rows (module docstring) into prompt and ``prompt + completion`` tensors.

    ``max_length`` cuts ``prompt + completion`` (and keeps a prompt's last ``max_length`` tokens); the
    completion ends with the end-of-sequence token (appended when its text lacks it). Padding is on the
    right; the trainer left-pads the prompts itself for generation.
    """

    def __init__(self, tokenizer: Any, *, max_length: int | None = None, ignore_index: int = -100) -> None:
        self.tok, self.max_length, self.ignore_index = tokenizer, max_length, ignore_index
        eos = getattr(tokenizer, "eos_token_id", None)
        pad = getattr(tokenizer, "pad_token_id", None)
        self.eos, self.pad = eos, pad if pad is not None else (eos if eos is not None else 0)

    def _ids(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Tensor]:
        prompts, full, labels = [], [], []
        for row in rows:
            prompt_text, completion_text = split_row(self.tok, row)
            p = self._ids(prompt_text)
            if self.max_length is not None:
                p = p[-self.max_length :]
            c = [] if completion_text is None else self._ids(completion_text)
            if completion_text is not None and self.eos is not None and (not c or c[-1] != self.eos):
                c.append(self.eos)
            seq = (p + c)[: self.max_length] if self.max_length else p + c
            prompts.append(p)
            full.append(seq)
            labels.append(([self.ignore_index] * len(p) + c)[: len(seq)])
        prompt_ids, prompt_mask = _pad(prompts, self.pad)
        ids, mask = _pad(full, self.pad)
        label_ids, _ = _pad(labels, self.pad, fill=self.ignore_index)
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": label_ids,
            "prompt_input_ids": prompt_ids,
            "prompt_attention_mask": prompt_mask,
        }


__all__ = ["PromptCollator", "TEXT_KEYS", "is_text_dataset", "split_row", "text_rows_have_completions"]
