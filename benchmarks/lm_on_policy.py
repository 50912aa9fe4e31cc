"""On-policy (student-sampled) against off-policy reverse-KL distillation on the ``unikd lm-distill`` example.

Two folders of the built-in example that differ only in ``on_policy`` (0 and 1), sharing one data split and
one teacher (the first folder's, copied), ``methods=[reverse_kl]``, ``ce_weight=0`` (the distillation term
alone, so the arms differ only in where the completions come from), the same seeds. For every seed: the
validation perplexity, the per-token KL to the teacher, and ``val_sample_nll`` (the teacher's NLL of the
student's samples from ``sample_eval`` validation prompts); paired differences (on − off) with 95 % t
intervals; the training seconds and the seconds spent sampling.

    PYTHONPATH=src python benchmarks/lm_on_policy.py --out runs/lm/on-policy --seeds 0 1 2 3 4 --threads 1
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

from unikd.lm.example import run_example
from unikd.lm.example_config import load_example_config
from unikd.stats import paired_difference

KEYS = (
    ("val_ppl", "validation perplexity"),
    ("val_kl", "KL(teacher ‖ student), nats/token"),
    ("val_sample_nll", "teacher NLL of student samples, nats/token"),
    ("train_seconds", "train seconds"),
)


def arm(out: Path, on_policy: float, seeds: list[int], extra: list[str]) -> dict[int, dict]:
    overrides = [f"on_policy={on_policy}", "methods=[reverse_kl]", "ce_weight=0.0", f"seeds={seeds}", *extra]
    cfg = load_example_config(None, overrides)
    cfg.out_dir = str(out)
    run_example(cfg)
    return {
        s: json.loads((out / "runs" / "reverse_kl" / f"seed{s}" / "result.json").read_text()) for s in seeds
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/lm/on-policy")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sample-eval", type=int, default=256)
    ap.add_argument("overrides", nargs="*", help="more key=value settings for both arms")
    a = ap.parse_args()
    root = Path(a.out)
    extra = [f"threads={a.threads}", f"sample_eval={a.sample_eval}", *a.overrides]
    off = arm(root / "off", 0.0, a.seeds, extra)
    for stage in ("data", "teacher"):  # the same split and teacher for both arms
        if not (root / "on" / stage).exists():
            shutil.copytree(root / "off" / stage, root / "on" / stage)
    on = arm(root / "on", 1.0, a.seeds, extra)
    lines = [
        "| quantity | off-policy | on-policy | on − off [95% CI] | seeds on < off |",
        "|---|---|---|---|---|",
    ]
    for key, label in KEYS:
        d = paired_difference({s: r[key] for s, r in on.items()}, {s: r[key] for s, r in off.items()})
        mean = {
            name: statistics.fmean(r[key] for r in runs.values()) for name, runs in (("off", off), ("on", on))
        }
        ci = f"[{d.ci_low:+.3f}, {d.ci_high:+.3f}]" if d.n > 1 else ""
        lines.append(
            f"| {label} | {mean['off']:.3f} | {mean['on']:.3f} | {d.mean:+.3f} {ci} | "
            f"{sum(x < 0 for x in d.diffs)}/{d.n} |"
        )
    gen = [r["generation"] for r in on.values()]
    lines.append("")
    lines.append(
        f"sampling: {statistics.fmean(g['seconds'] for g in gen):.1f} s per on-policy run "
        f"({statistics.fmean(g['generated_tokens'] for g in gen):.0f} tokens), of "
        f"{statistics.fmean(r['train_seconds'] for r in on.values()):.1f} s training"
    )
    text = "\n".join(lines)
    (root / "summary.md").write_text(text + "\n")
    (root / "summary.json").write_text(json.dumps({"off": off, "on": on}, indent=1, default=str))
    print(text)


if __name__ == "__main__":
    main()
