"""DistillationTrainer runs with FSDP2-sharded students, for tests/lm/test_fsdp.py.

``python fsdp_worker.py OUT RUN [RUN ...]``, alone or under torchrun (gloo). A run is ``SHARD:PATH``: SHARD
``none`` (one process, or DDP under torchrun), ``before`` (decoder layers and root sharded before the trainer
is built), ``after`` (the same, on ``trainer.model`` after construction), ``head`` (``before`` with the output
head its own unit, so its weight is a shard after the forward), ``teacher`` (``before``, the teacher sharded
too) or ``zero3`` (DeepSpeed ZeRO-3 through the Trainer's ``deepspeed`` argument); PATH ``fused`` or
``unfused``. Each run trains 2 SGD steps of 8 sequences with unequal kept-token counts (2 per process x 2
accumulation steps under torchrun) and is evaluated on 8 other sequences; rank 0 writes
``OUT/<run>/losses.json`` (the 2 logged losses, then ``eval_loss``) and the full weights
``OUT/<run>/weights.pt``; ``save`` after a run also saves the model with ``trainer.save_model`` into
``OUT/<run>/saved``; ``tied`` gives the student a head tied to its embedding (``OUT/<run>-tied``). The run
``refusals:-`` records the errors of a sharded student with checkpoints and of a sharded teacher with
``teacher_dtype`` (``refusals:zero3`` also of ZeRO-3 with ``fused=True``) in ``OUT/refusals.json``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ddp_token_worker import InOrder, masked_examples  # noqa: E402
from lm_support import args, examples, llama  # noqa: E402

import unikd.lm as lm  # noqa: E402

WORLD = int(os.environ.get("WORLD_SIZE", "1"))


def shard(model, *, head_unit: bool = False):
    from torch.distributed.fsdp import fully_shard

    for layer in model.model.layers:
        fully_shard(layer)
    if head_unit:
        fully_shard(model.lm_head)
    return fully_shard(model)


def full_weights(model) -> dict[str, torch.Tensor]:
    """Every parameter whole (a collective for DTensor shards: every rank calls it)."""
    out = {}
    for name, p in model.named_parameters():
        full = p.full_tensor() if hasattr(p, "full_tensor") else p
        out[name] = full.detach().cpu().clone()
    return out


ZERO3 = {"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": "auto",
         "gradient_accumulation_steps": "auto", "train_batch_size": "auto", "gradient_clipping": "auto"}


def zero3_weights(trainer) -> dict[str, torch.Tensor]:
    import deepspeed

    params = dict(trainer.model.named_parameters())
    with deepspeed.zero.GatheredParameters(list(params.values()), modifier_rank=None):
        return {n: p.detach().cpu().clone() for n, p in params.items()}


def tied_llama(seed: int):
    """The test student with its head tied to its input embedding (as in many small causal LMs)."""
    cfg = llama(seed=seed).config
    cfg.tie_word_embeddings = True
    torch.manual_seed(seed)
    model = type(llama())(cfg)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    return model


def run(out: Path, where: str, path: str, save: bool = False, tied: bool = False) -> None:
    student, teacher = tied_llama(2) if tied else llama(seed=2), llama(hidden=24, seed=1)
    if where in ("before", "head", "teacher"):
        shard(student, head_unit=where == "head")
    if where == "teacher":
        shard(teacher)
    kw = {"save_only_model": True} if save else {}
    if where == "zero3":
        kw["deepspeed"] = ZERO3
    trainer = InOrder(
        student,
        teacher,
        args(out / "trainer", per_device_train_batch_size=8 // (2 * WORLD), gradient_accumulation_steps=2,
             max_steps=2, logging_steps=1, learning_rate=0.5, optim="sgd", per_device_eval_batch_size=2,
             ddp_backend="gloo" if WORLD > 1 else None, **kw),
        train_dataset=masked_examples(),
        eval_dataset=examples(8, seed=5),
        distill=lm.DistillSettings("kd", ce_weight=0.5, fused=path == "fused"),
    )
    if where == "after":
        shard(trainer.model)
    trainer.train()
    weights = zero3_weights(trainer) if where == "zero3" else full_weights(trainer.model)
    evaluated = trainer.evaluate()
    if save:
        trainer.save_model(str(out / "saved"))
    if trainer.is_world_process_zero():
        losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
        losses.append(evaluated["eval_loss"])  # the trained student on held-out sequences
        out.mkdir(parents=True, exist_ok=True)
        torch.save(weights, out / "weights.pt")
        (out / "losses.json").write_text(json.dumps(losses))


def refusals(out: Path, zero3: bool) -> None:
    """The messages of the two refusals a sharded model meets (rank 0 writes them to OUT/refusals.json)."""
    found = {}
    for name, kw, distill in (
        ("checkpoints", {"save_strategy": "steps", "save_steps": 1}, {}),
        ("teacher_dtype", {}, {"teacher_dtype": "bfloat16"}),
        *((("zero3_fused", {"deepspeed": ZERO3}, {}),) if zero3 else ()),
    ):
        student, teacher = llama(seed=2), llama(hidden=24, seed=1)
        if name != "zero3_fused":
            shard(student)
        if name == "teacher_dtype":
            shard(teacher)
        try:
            InOrder(student, teacher, args(out / "trainer", ddp_backend="gloo", **kw),
                    train_dataset=masked_examples(), distill=lm.DistillSettings("kd", **distill))
            found[name] = None
        except ValueError as e:
            found[name] = str(e)
    if dist.get_rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "refusals.json").write_text(json.dumps(found))


if __name__ == "__main__":
    root = Path(sys.argv[1])
    for spec in sys.argv[2:]:
        where, path, *rest = spec.split(":")
        if where == "refusals":
            refusals(root, zero3=path == "zero3")
            continue
        name = "-".join([where, path, *(["tied"] if "tied" in rest else [])])
        run(root / name, where, path, save="save" in rest, tied="tied" in rest)
    if dist.is_initialized():
        dist.destroy_process_group()
