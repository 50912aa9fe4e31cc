"""Tiny causal LMs and datasets for the ``unikd.lm`` tests (random init, no download).

``UNIKD_LM_TEST_DEVICE=cuda`` runs the Trainer tests on the GPU (the Trainer places the models there); the
default is the CPU.
"""

from __future__ import annotations

import os

import torch

transformers = __import__("pytest").importorskip("transformers")

DEVICE = os.environ.get("UNIKD_LM_TEST_DEVICE", "cpu")
VOCAB = 96
CONTEXT = 16


def llama(hidden: int = 16, layers: int = 1, *, vocab: int = VOCAB, context: int = CONTEXT, seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=context,
        use_cache=False,
        bos_token_id=0,
        eos_token_id=0,
    )
    return transformers.LlamaForCausalLM(cfg)


def gpt2(hidden: int = 16, layers: int = 1, *, vocab: int = VOCAB, context: int = CONTEXT, seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(
        vocab_size=vocab,
        n_embd=hidden,
        n_layer=layers,
        n_head=2,
        n_positions=context,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    return transformers.GPT2LMHeadModel(cfg)


def examples(n: int = 16, length: int = CONTEXT, *, vocab: int = VOCAB, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (length,), generator=g)
        out.append({"input_ids": ids, "labels": ids.clone()})
    return out


def args(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path / "trainer"),
        per_device_train_batch_size=4,
        max_steps=4,
        logging_steps=2,
        report_to=[],
        save_strategy="no",
        use_cpu=DEVICE == "cpu",
        learning_rate=1e-2,
        seed=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    base.update(kw)
    return transformers.TrainingArguments(**base)
