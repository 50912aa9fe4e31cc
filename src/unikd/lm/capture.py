"""The input of a causal LM's output head, without its full logits.

A Hugging Face ``*ForCausalLM`` runs its base model (``model.base_model``: the decoder stack and final norm)
and then ``lm_head``. A forward hook on the base model keeps its last hidden state, and ``logits_to_keep=1``
asks the model for the logits of the last position only, so the ``(B, T, V)`` tensor is never built; the
fused token losses then apply the head chunk by chunk. :func:`check_head_capture` proves, on a few tokens,
that ``head(captured hidden) == logits`` for a given model: models that post-process their logits (final
soft-capping, scaling) fail it with a message naming ``fused=False``.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .sharding import head_shape, whole


def _head_of(model: nn.Module) -> nn.Module | None:
    get = getattr(model, "get_output_embeddings", None)
    try:
        head = get() if callable(get) else None
    except (AttributeError, NotImplementedError):  # a wrapper forwarding to a model without a head
        return None
    return head if isinstance(head, nn.Module) else None


def _owns_decoder(model: nn.Module, head: nn.Module) -> bool:
    """``model.base_model`` is a proper submodule that does not contain ``head`` (so it feeds the head)."""
    base = getattr(model, "base_model", None)
    if not isinstance(base, nn.Module) or base is model:
        return False
    return not any(m is head for m in base.modules())


def causal_lm(model: nn.Module, name: str = "model") -> nn.Module:
    """The ``*ForCausalLM`` inside ``model``: ``model`` itself, or the model under a PEFT / other wrapper.

    The innermost module that owns the output head and has a separate decoder (``base_model``) wins: for a
    PEFT model that is ``peft_model.base_model.model``, whose decoder's output is the head's input (the
    PEFT wrapper's own ``base_model`` returns logits). A wrapper that hides the head entirely is searched
    for the causal LMs inside it; exactly one must be found.
    """
    head = _head_of(model)
    inner = [m for m in model.modules() if (h := _head_of(m)) is not None and (head is None or h is head)]
    inner = [m for m in inner if _owns_decoder(m, _head_of(m))]
    heads = {id(_head_of(m)) for m in inner}
    if not inner or len(heads) > 1:
        found = "no linear output head: no" if not inner else f"{len(heads)} different"
        raise ValueError(
            f"the {name} ({type(model).__name__}) has {found} causal LMs (modules with "
            "get_output_embeddings() and a separate base_model) inside it; token distillation needs a causal "
            "LM such as *ForCausalLM. Pass the *ForCausalLM itself (or a PEFT model of one), or use "
            "fused=False"
        )
    return inner[-1]


def head_parameters(model: nn.Module, name: str = "model") -> tuple[Tensor, Tensor | None]:
    """``(weight, bias or None)`` of the output head of ``model`` (or of the causal LM inside a wrapper such
    as PEFT's), as stored: possibly an FSDP2 ``DTensor`` shard or an empty ZeRO-3 partition."""
    head = _head_of(model)
    if head is None:
        head = _head_of(causal_lm(model, name))
    weight = getattr(head, "weight", None)
    if not isinstance(weight, Tensor) or len(head_shape(weight)) != 2:
        raise ValueError(
            f"the {name} ({type(model).__name__}) has no linear output head "
            f"(get_output_embeddings() returned "
            f"{type(head).__name__}); token distillation needs a causal LM such as *ForCausalLM"
        )
    bias = getattr(head, "bias", None)
    return weight, bias if isinstance(bias, Tensor) else None


def output_head(model: nn.Module, name: str = "model") -> tuple[Tensor, Tensor | None]:
    """``(weight (V, d), bias (V,) or None)`` of the output head of ``model``, whole: an FSDP2 shard is
    gathered (a collective: every process calls it), differentiably (:func:`unikd.lm.sharding.whole`)."""
    weight, bias = head_parameters(model, name)
    return whole(weight, name), whole(bias, name)


def base_model(model: nn.Module) -> nn.Module:
    """The module whose output is the head's input: the decoder (``base_model``) of the causal LM."""
    return causal_lm(model).base_model


def accepts_logits_to_keep(model: nn.Module) -> bool:
    """``model`` takes ``logits_to_keep``, itself or through ``**kwargs`` down to the causal LM inside."""
    params = inspect.signature(model.forward).parameters
    if "logits_to_keep" in params:
        return True
    forwards = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if not forwards:
        return False
    try:
        inner = causal_lm(model)
    except ValueError:
        return False
    return inner is not model and "logits_to_keep" in inspect.signature(inner.forward).parameters


class HiddenCapture:
    """Keeps the last hidden state of ``base_model(model)`` from every forward while active."""

    def __init__(self, model: nn.Module) -> None:
        self.module = base_model(model)
        self.hidden: Tensor | None = None

    def _hook(self, _module: nn.Module, _args: Any, out: Any) -> None:
        self.hidden = out[0] if isinstance(out, (tuple, list)) or hasattr(out, "to_tuple") else out

    @contextlib.contextmanager
    def active(self) -> Iterator[HiddenCapture]:
        handle = self.module.register_forward_hook(self._hook)
        try:
            yield self
        finally:
            handle.remove()

    def take(self) -> Tensor:
        h, self.hidden = self.hidden, None
        if not isinstance(h, Tensor) or h.dim() != 3:
            raise RuntimeError(
                "the base model's forward did not produce a (B, T, d) hidden state to capture; "
                "use fused=False"
            )
        return h


def hidden_and_logits(model: nn.Module, capture: HiddenCapture, inputs: dict[str, Any]) -> tuple[Tensor, Any]:
    """Run ``model(**inputs)`` keeping only the last position's logits; return the head input (B, T, d) and
    those logits (None when the model returns none)."""
    kwargs = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}
    with capture.active():
        out = model(**inputs, use_cache=False, **kwargs)
    return capture.take(), getattr(out, "logits", None)


def hidden_states(model: nn.Module, capture: HiddenCapture, inputs: dict[str, Any]) -> Tensor:
    """Run ``model(**inputs)`` keeping only the last position's logits; return the head input (B, T, d)."""
    return hidden_and_logits(model, capture, inputs)[0]


@torch.no_grad()
def check_head_capture(model: nn.Module, name: str = "model", *, tokens: int = 8) -> None:
    """Raise ``ValueError`` unless ``head(captured hidden)`` equals the model's logits on a probe input."""
    head = _head_of(causal_lm(model, name))
    if hasattr(head, "base_layer") or hasattr(head, "lora_A"):
        raise ValueError(
            f"the {name}'s output head carries an adapter ({type(head).__name__}): the fused loss applies "
            "head.weight only and would miss the adapter. Leave the head out of the adapter's "
            "target_modules (for LoRA: not 'lm_head'), or use fused=False"
        )
    device = next(model.parameters()).device
    vocab = head_shape(head_parameters(model, name)[0])[0]
    ids = torch.arange(tokens, device=device).remainder(vocab).unsqueeze(0)  # (1, tokens)
    was_training = model.training
    model.eval()
    try:
        with HiddenCapture(model).active() as cap:
            logits = model(input_ids=ids, use_cache=False).logits
        h = cap.take()
        weight, bias = output_head(model, name)
        mine = F.linear(h, weight, bias)
    finally:
        model.train(was_training)
    if mine.shape != logits.shape or not torch.allclose(mine.float(), logits.float(), rtol=1e-3, atol=1e-3):
        err = (
            (mine.float() - logits.float()).abs().max().item() if mine.shape == logits.shape else float("nan")
        )
        raise ValueError(
            f"the {name} ({type(model).__name__}) transforms its logits after the output head "
            f"(max difference {err:.3g} between head(hidden) and its logits, e.g. final soft-capping or "
            "scaling), so the fused loss would not train the model you evaluate. Use fused=False"
        )


__all__ = [
    "HiddenCapture",
    "base_model",
    "causal_lm",
    "check_head_capture",
    "head_parameters",
    "hidden_and_logits",
    "hidden_states",
    "output_head",
]
