"""Peak memory of one DistillationTrainer step: fused token loss vs the loss from materialised logits.

The same student/teacher pair (Llama decoders, random init), the same batch and the same loss, run through
``unikd.lm.DistillationTrainer`` twice -- ``fused=True`` (hidden states captured, heads applied chunk by
chunk, only the last position's logits requested from the models) and ``fused=False`` (the models return
their full ``(B, T, V)`` logits, the loss is computed from them) -- each in its own fresh process, in rounds
of alternating order. Peak memory is the process's peak resident set during ``trainer.train()`` of
``--steps`` optimizer steps above its resident set just before (``VmHWM`` reset through
``/proc/self/clear_refs``): activations, logits, softmaxes and gradients of a step. Time is the process CPU
time of the steps (robust to other jobs on a shared machine).

Usage::

    python benchmarks/lm_trainer_memory.py                  # B=8, T=256, V=32000, d=128 (student) / 256
    python benchmarks/lm_trainer_memory.py --quick          # a small smoke run
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from _peak_memory import PeakMemory  # benchmarks/ is on sys.path when run as a script


def worker(a: argparse.Namespace) -> dict:
    import torch
    import transformers

    from unikd.lm import DistillationTrainer, DistillSettings

    torch.set_num_threads(a.threads)

    def llama(hidden: int, layers: int, seed: int):
        torch.manual_seed(seed)
        cfg = transformers.LlamaConfig(
            vocab_size=a.vocab,
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=a.seq,
            use_cache=False,
        )
        return transformers.LlamaForCausalLM(cfg)

    student, teacher = llama(a.hidden, 2, 0), llama(a.teacher_hidden, 4, 1)
    g = torch.Generator().manual_seed(0)
    data = [
        {"input_ids": x, "labels": x}
        for x in torch.randint(0, a.vocab, (a.batch * a.steps, a.seq), generator=g)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        args = transformers.TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=a.batch,
            max_steps=a.steps,
            report_to=[],
            save_strategy="no",
            use_cpu=True,
            disable_tqdm=True,
            logging_steps=a.steps,
            dataloader_num_workers=0,
        )
        trainer = DistillationTrainer(
            student, teacher, args, train_dataset=data, distill=DistillSettings("kd", fused=a.mode == "fused")
        )
        with PeakMemory() as mem:
            cpu = time.process_time()
            trainer.train()
            cpu = time.process_time() - cpu
        peak = mem.peak_bytes
    loss = [r["loss"] for r in trainer.state.log_history if "loss" in r][-1]
    return {"peak_bytes": peak, "cpu_s": cpu, "loss": loss}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--teacher-hidden", type=int, default=256)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="B=2, T=32, V=4096: a smoke run")
    p.add_argument("--worker", choices=["fused", "logits"], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.quick:
        a.batch, a.seq, a.vocab, a.rounds = 2, 32, 4096, 1
    if a.worker:
        a.mode = a.worker
        print(json.dumps(worker(a)))
        return
    argv = [
        f"--batch={a.batch}",
        f"--seq={a.seq}",
        f"--vocab={a.vocab}",
        f"--hidden={a.hidden}",
        f"--teacher-hidden={a.teacher_hidden}",
        f"--steps={a.steps}",
        f"--threads={a.threads}",
    ]
    results: dict[str, list[dict]] = {"fused": [], "logits": []}
    for r in range(a.rounds):
        for mode in ("fused", "logits") if r % 2 == 0 else ("logits", "fused"):
            out = subprocess.run(
                [sys.executable, __file__, *argv, f"--worker={mode}"],
                capture_output=True,
                text=True,
                check=True,
            )
            res = json.loads(out.stdout.strip().splitlines()[-1])
            results[mode].append(res)
            print(
                f"round {r} {mode}: peak {res['peak_bytes'] / 2**20:.0f} MiB, CPU {res['cpu_s']:.1f} s, "
                f"loss {res['loss']:.4f}",
                flush=True,
            )
    import torch

    tokens = a.batch * a.seq
    logits_mib = tokens * a.vocab * 4 / 2**20
    print(
        f"\nB*T={tokens} tokens, V={a.vocab}, student d={a.hidden} (2 layers), teacher d={a.teacher_hidden} "
        f"(4 layers), {a.steps} steps, {a.threads} thread(s); one (B, T, V) fp32 logits tensor = "
        f"{logits_mib:.0f} MiB"
    )
    print("| path | peak MiB (max over rounds) | peak ratio | CPU s (median) | CPU ratio |")
    print("|---|---|---|---|---|")
    base_peak = max(x["peak_bytes"] for x in results["logits"])
    base_cpu = statistics.median(x["cpu_s"] for x in results["logits"])
    for mode in ("logits", "fused"):
        peak = max(x["peak_bytes"] for x in results[mode])
        cpu = statistics.median(x["cpu_s"] for x in results[mode])
        print(f"| {mode} | {peak / 2**20:.0f} | {peak / base_peak:.3f} | {cpu:.1f} | {cpu / base_cpu:.2f} |")
    print(
        f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{datetime.date.today().isoformat()}"
    )


if __name__ == "__main__":
    main()
