"""Peak memory per rank of DistillationTrainer under FSDP2: fused token loss vs the loss from full logits.

Two gloo processes on the CPU (``torch.distributed.run``), each config in its own launch. The Llama student
(2 layers) and teacher (2 layers, twice as wide), random init, are both sharded with ``fully_shard`` (each
decoder layer a unit, then the root, which holds the embeddings and the output head) before the trainer is
built; ``fused=True`` gathers the student's head for the chunked loss, ``fused=False`` has both models return
their ``(B, T, V)`` logits. Peak memory is each rank's peak resident set during ``trainer.train()`` above its
resident set just before (``VmHWM`` reset through ``/proc/self/clear_refs``); the table shows the larger of
the two ranks. Time is each rank's process CPU time of the steps.

Usage::

    python benchmarks/lm_fsdp_memory.py                 # V = 32,000 and 128,000; B = 4 per rank, T = 128
    python benchmarks/lm_fsdp_memory.py --quick         # a small smoke run
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _peak_memory import PeakMemory  # benchmarks/ is on sys.path when run as a script


def worker(a: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist
    import transformers
    from torch.distributed.fsdp import fully_shard

    from unikd.lm import DistillationTrainer, DistillSettings

    torch.set_num_threads(a.threads)
    dist.init_process_group("gloo")

    def llama(hidden: int, seed: int):
        torch.manual_seed(seed)
        cfg = transformers.LlamaConfig(
            vocab_size=a.vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=a.seq, use_cache=False,
        )
        model = transformers.LlamaForCausalLM(cfg)
        for layer in model.model.layers:
            fully_shard(layer)
        return fully_shard(model)

    student, teacher = llama(a.hidden, 0), llama(2 * a.hidden, 1)
    g = torch.Generator().manual_seed(0)
    world = dist.get_world_size()
    data = [{"input_ids": x, "labels": x}
            for x in torch.randint(0, a.vocab, (a.batch * world * a.steps, a.seq), generator=g)]
    with tempfile.TemporaryDirectory() as tmp:
        args = transformers.TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=a.batch, max_steps=a.steps, report_to=[],
            save_strategy="no", use_cpu=True, disable_tqdm=True, logging_steps=a.steps,
            dataloader_num_workers=0, ddp_backend="gloo",
        )
        trainer = DistillationTrainer(
            student, teacher, args, train_dataset=data, distill=DistillSettings("kd", fused=a.mode == "fused")
        )
        with PeakMemory() as mem:
            cpu = time.process_time()
            trainer.train()
            cpu = time.process_time() - cpu
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    row = {"rank": dist.get_rank(), "peak_bytes": mem.peak_bytes, "cpu_s": cpu, "loss": losses[-1]}
    Path(a.report, f"rank{dist.get_rank()}.json").write_text(json.dumps(row))
    dist.destroy_process_group()


def launch(a: argparse.Namespace, vocab: int, mode: str) -> list[dict]:
    with tempfile.TemporaryDirectory() as report:
        argv = [f"--batch={a.batch}", f"--seq={a.seq}", f"--vocab={vocab}", f"--hidden={a.hidden}",
                f"--steps={a.steps}", f"--threads={a.threads}", f"--worker={mode}", f"--report={report}"]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               __file__, *argv]
        env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise SystemExit(f"the {mode} run at V={vocab} failed:\n{done.stderr[-4000:]}")
        return [json.loads(p.read_text()) for p in sorted(Path(report).glob("rank*.json"))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=4, help="sequences per rank per step")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--vocab", type=int, nargs="+", default=[32000, 128000])
    p.add_argument("--hidden", type=int, default=64, help="student width (the teacher's is twice)")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="B=2, T=32, V=4096: a smoke run")
    p.add_argument("--worker", choices=["fused", "unfused"], help=argparse.SUPPRESS)
    p.add_argument("--report", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.quick:
        a.batch, a.seq, a.vocab = 2, 32, [4096]
    if a.worker:
        a.mode, a.vocab = a.worker, a.vocab[0]
        worker(a)
        return
    import torch
    import transformers

    tokens = a.batch * a.seq
    print(f"2 gloo ranks, B={a.batch} per rank, T={a.seq} ({tokens} tokens per rank), student d={a.hidden}, "
          f"teacher d={2 * a.hidden} (2 layers each, both sharded), {a.steps} AdamW steps, {a.threads} "
          "thread(s) per rank")
    print("| V | path | peak MiB per rank (max of 2) | rank 0 / rank 1 MiB | ratio | CPU s per rank | "
          "one (B, T, V) fp32 tensor MiB | loss |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for vocab in a.vocab:
        rows = {mode: launch(a, vocab, mode) for mode in ("unfused", "fused")}
        base = max(r["peak_bytes"] for r in rows["unfused"])
        for mode, ranks in rows.items():
            peak = max(r["peak_bytes"] for r in ranks)
            each = " / ".join(f"{r['peak_bytes'] / 2**20:,.0f}" for r in ranks)
            print(f"| {vocab:,} | {mode} | {peak / 2**20:,.0f} | {each} | {peak / base:.3f} | "
                  f"{max(r['cpu_s'] for r in ranks):.1f} | {tokens * vocab * 4 / 2**20:,.0f} | "
                  f"{ranks[0]['loss']:.4f} |", flush=True)
    print(f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, transformers "
          f"{transformers.__version__}, {datetime.date.today().isoformat()}")


if __name__ == "__main__":
    main()
