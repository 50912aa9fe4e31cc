"""Student perplexity by teacher representation: the live (dense) teacher against sparse caches of it.

The ``unikd lm-distill`` example's KD students (``CE + KD``, temperature 1, the example's 300 steps and
every other default) trained from three representations of one teacher, at equal bytes per token between
the two sparse ones: the dense live teacher, a top-k + tail cache (``sparse_teacher.mode=topk``) and a
sampled cache (Sparse Logit Sampling, ``sparse_teacher.mode=sample``: k − 1 draws at proposal temperature 1
plus a label slot, draws seeded by sampling seed 0 and each block's index). Each arm is its own folder; all
share one data split and one teacher (``--share``: a folder of the example whose ``data/`` and ``teacher/``
are copied; else the first arm trains them). For every seed: the validation perplexity and the KL to the
teacher; paired differences (arm − dense, and sampled − top-k at the same k) with 95 % t intervals.

Settings fixed before running (docs/results.md, "Perplexity by teacher representation"):

- k = 8 (34 bytes/token: fp16 values, uint16 ids, one tail value) first, then k = 32 (130 bytes/token);
  a dense fp16 row of this vocabulary (2,048) is 4,096 bytes/token;
- seeds 0, 1, 2; ``threads=1``; KD at temperature 1 (the loss for which a sampled teacher is unbiased);
- order of runs: dense, topk8, sample8, topk32, sample32 (each arm all seeds), so k = 8 completes first.

    PYTHONPATH=src python benchmarks/lm_cache_ppl.py --out runs/lm/cache-ppl --seeds 0 1 2 --threads 1 \\
        --share runs/lm/gkd/off
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from unikd.lm.example import run_example
from unikd.lm.example_config import load_example_config
from unikd.lm.example_report import paired_rows

KEYS = (("val_ppl", "validation perplexity"), ("val_kl", "KL(teacher ‖ student), nats/token"))


def arm_overrides(arm: str) -> list[str]:
    if arm == "dense":
        return []
    for mode in ("topk", "sample"):
        if arm.startswith(mode) and arm[len(mode) :].isdigit():
            k = int(arm[len(mode) :])
            return [
                f"sparse_teacher.folder=cache-{mode}{k}",
                f"sparse_teacher.mode={mode}",
                f"sparse_teacher.k={k}",
            ]
    raise SystemExit(f"unknown arm {arm!r}: dense, topk<k> or sample<k>")


def run_arm(root: Path, arm: str, seeds: list[int], share: Path, extra: list[str]) -> dict[int, dict]:
    out = root / arm
    for stage in ("data", "teacher"):
        if share != out and not (out / stage).exists() and (share / stage).exists():
            shutil.copytree(share / stage, out / stage)
    cfg = load_example_config(None, ["methods=[kd]", f"seeds={seeds}", *arm_overrides(arm), *extra])
    cfg.out_dir = str(out)
    run_example(cfg)
    return {s: json.loads((out / "runs" / "kd" / f"seed{s}" / "result.json").read_text()) for s in seeds}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/lm/cache-ppl")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--arms", nargs="+", default=["dense", "topk8", "sample8", "topk32", "sample32"])
    ap.add_argument("--share", default="", help="an example folder whose data/ and teacher/ every arm copies")
    ap.add_argument("overrides", nargs="*", help="more key=value settings for every arm")
    a = ap.parse_args()
    root = Path(a.out)
    share = Path(a.share) if a.share else root / a.arms[0]
    extra = [f"threads={a.threads}", *a.overrides]
    runs = {arm: run_arm(root, arm, a.seeds, share, extra) for arm in a.arms}
    lines = ["| A − B | quantity | B | A | A − B [95% CI] | seeds A < B |", "|---|---|---|---|---|---|"]
    for arm in a.arms:
        if arm != "dense" and "dense" in runs:
            lines += paired_rows(arm, "dense", runs, KEYS)
    for arm in a.arms:
        topk = "topk" + arm[len("sample") :]
        if arm.startswith("sample") and topk in runs:
            lines += paired_rows(arm, topk, runs, KEYS)
    caches = {arm: r[a.seeds[0]].get("sparse_teacher") for arm, r in runs.items()}
    lines += ["", *(f"{arm}: {c['bytes_per_token']} bytes/token" for arm, c in caches.items() if c)]
    text = "\n".join(lines)
    (root / "summary.md").write_text(text + "\n")
    (root / "summary.json").write_text(json.dumps(runs, indent=1, default=str))
    print(text)


if __name__ == "__main__":
    main()
