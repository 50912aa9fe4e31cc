"""Where the completions come from (the data, the student, the teacher) on the ``unikd lm-distill`` example.

Each *arm* is one distilled method of the built-in example at one setting of ``on_policy`` / ``seq_kd``:

- ``rkl-off`` / ``rkl-on``: reverse KL on the data / on the student's samples (λ = 1);
- ``jsd-off`` / ``jsd-on``: JSD (β = 0.5, GKD's default) on the data / on the student's samples (λ = 1);
- ``kd-off``: KD (forward KL) on the data, the off-policy reference;
- ``seqkd``: KD on the teacher's samples of the same prompts (sequence-level KD, seq_kd = 1).

Arms with the same ``on_policy`` / ``seq_kd`` share a folder (``off``, ``on``, ``seq``), every folder one
data split and one teacher (the first folder's, copied). Every arm: ``ce_weight=0`` (the distillation term
alone, so arms differ only in the loss and in where the completions come from), the example's 300 steps,
16-token prompts and 48 new tokens at temperature 1, the same seeds. For every seed: the validation
perplexity, the per-token KL to the teacher, ``val_sample_nll`` (the teacher's NLL of the student's samples
from ``sample_eval`` validation prompts, fixed seeds); each comparison ``A:B`` is a paired difference (A − B)
with a 95 % t interval; the training seconds and the seconds spent sampling.

Settings fixed before running (the evidence of docs/results.md, "On-policy JSD and sequence-level KD"):
seeds 0-4, ``--threads 1``, ``--sample-eval 256``, every other setting the example's default;
``--arms kd-off jsd-off jsd-on seqkd``; comparisons ``jsd-on:jsd-off jsd-on:kd-off jsd-off:kd-off
seqkd:kd-off``.

    PYTHONPATH=src python benchmarks/lm_on_policy.py --out runs/lm/on-policy --seeds 0 1 2 3 4 --threads 1
    PYTHONPATH=src python benchmarks/lm_on_policy.py --out runs/lm/gkd --seeds 0 1 2 3 4 --threads 1 \\
        --arms kd-off jsd-off jsd-on seqkd --compare jsd-on:jsd-off jsd-on:kd-off jsd-off:kd-off seqkd:kd-off
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

from unikd.lm.example import run_example
from unikd.lm.example_config import load_example_config
from unikd.lm.example_report import paired_rows

KEYS = (
    ("val_ppl", "validation perplexity"),
    ("val_kl", "KL(teacher ‖ student), nats/token"),
    ("val_sample_nll", "teacher NLL of student samples, nats/token"),
    ("train_seconds", "train seconds"),
)
# arm: (method, folder); the folder fixes on_policy / seq_kd
ARMS = {
    "rkl-off": ("reverse_kl", "off"),
    "rkl-on": ("reverse_kl", "on"),
    "kd-off": ("kd", "off"),
    "jsd-off": ("jsd", "off"),
    "jsd-on": ("jsd", "on"),
    "seqkd": ("kd", "seq"),
}
FOLDERS = {"off": ["on_policy=0.0", "seq_kd=0.0"], "on": ["on_policy=1.0"], "seq": ["seq_kd=1.0"]}


def run_folder(out: Path, folder: str, methods: list[str], seeds: list[int], extra: list[str]) -> None:
    chosen = [f"methods=[{','.join(methods)}]", "ce_weight=0.0", f"seeds={seeds}"]
    overrides = [*FOLDERS[folder], *chosen, *extra]
    cfg = load_example_config(None, overrides)
    cfg.out_dir = str(out)
    run_example(cfg)


def results(root: Path, arm: str, seeds: list[int]) -> dict[int, dict]:
    method, folder = ARMS[arm]
    base = root / folder / "runs" / method
    return {s: json.loads((base / f"seed{s}" / "result.json").read_text()) for s in seeds}


def sampling_line(arm: str, runs: dict[int, dict]) -> str:
    gen = [r["generation"] for r in runs.values() if "generation" in r]
    train = statistics.fmean(r["train_seconds"] for r in runs.values())
    if not gen:
        return f"{arm}: no sampling, {train:.1f} s training"
    return (
        f"{arm}: sampling {statistics.fmean(g['seconds'] for g in gen):.1f} s per run "
        f"({statistics.fmean(g['generated_tokens'] for g in gen):.0f} tokens) of {train:.1f} s training"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/lm/on-policy")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sample-eval", type=int, default=256)
    ap.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=["rkl-off", "rkl-on"])
    ap.add_argument("--compare", nargs="+", default=["rkl-on:rkl-off"], help="A:B pairs of arms (A − B)")
    ap.add_argument("overrides", nargs="*", help="more key=value settings for every arm")
    a = ap.parse_args()
    pairs = [tuple(c.split(":")) for c in a.compare]
    for pair in pairs:
        if len(pair) != 2 or not set(pair) <= set(a.arms):
            ap.error(f"--compare {':'.join(pair)}: give A:B with both in --arms {a.arms}")
    root = Path(a.out)
    extra = [f"threads={a.threads}", f"sample_eval={a.sample_eval}", *a.overrides]
    folders: dict[str, list[str]] = {}
    for arm in a.arms:
        method, folder = ARMS[arm]
        folders.setdefault(folder, []).append(method)
    first = next(iter(folders))
    for folder, methods in folders.items():
        for stage in ("data", "teacher"):  # the same split and teacher for every folder
            if folder != first and not (root / folder / stage).exists():
                shutil.copytree(root / first / stage, root / folder / stage)
        run_folder(root / folder, folder, methods, a.seeds, extra)
    runs = {arm: results(root, arm, a.seeds) for arm in a.arms}
    lines = [
        "| A − B | quantity | B | A | A − B [95% CI] | seeds A < B |",
        "|---|---|---|---|---|---|",
    ]
    for x, y in pairs:
        lines += paired_rows(x, y, runs, KEYS)
    lines += ["", *(sampling_line(arm, runs[arm]) for arm in a.arms)]
    text = "\n".join(lines)
    (root / "summary.md").write_text(text + "\n")
    (root / "summary.json").write_text(json.dumps(runs, indent=1, default=str))
    print(text)


if __name__ == "__main__":
    main()
