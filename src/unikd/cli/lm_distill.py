"""``unikd lm-distill``: the end-to-end language-model example (see :mod:`unikd.lm.example`)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    from unikd.lm.example_config import CROSS_METHODS
    from unikd.lm.example_config_help import describe_defaults

    p = subparsers.add_parser(
        "lm-distill",
        help="distil a causal LM: a Hugging Face model or folder, or the built-in standard-library example",
        description=(
            "Train a byte-level BPE and a Llama teacher on the source files of Python's standard library "
            "(no download), then students half its depth and width with CE only, KD, reverse KL, TAID, NKD "
            "and DKD for several seeds, through unikd.lm.DistillationTrainer (a transformers.Trainer). "
            "Writes results.md (validation perplexity, KL to the teacher, paired differences against KD), "
            "results.json and lm.png into out_dir. Rerunning resumes: finished stages and runs are kept. "
            "Under torchrun --nproc_per_node N the teacher and students train with DDP (gloo on CPU). "
            "With teacher=<Hugging Face model name or folder> the teacher is loaded instead of trained and "
            "its tokenizer reads data= (a folder of text files; a .jsonl of text, prompt+completion or chat "
            "messages records, prompts masked from the loss; or a datasets name); student= is another "
            "model (same tokenizer, checked id by id) or a size to build from scratch. "
            "With teacher_vocab_size=N the teacher gets its own byte-level BPE of N tokens and the students "
            f"train with CE only or a cross-tokenizer loss ({', '.join(CROSS_METHODS[1:])}; "
            "alignment=span|truncation) on text chunks read by both tokenizers, scored in bits per byte "
            "(comparable across tokenizers); the same methods with teacher=<model> student=<model> distil a "
            "pretrained pair whose tokenizers differ (text data). "
            "Offline, set HF_HUB_OFFLINE=1 and fill the Hugging Face cache, or pass folders."
        ),
        epilog=(
            "examples:\n"
            "  unikd lm-distill --quick                      # every stage in about a minute (smoke test)\n"
            "  unikd lm-distill                              # the full example (the settings below)\n"
            "  unikd lm-distill my.yaml steps=600 seeds=[0,1,2,3,4] methods=[ce,kd,taid]\n"
            "  torchrun --nproc_per_node 2 -m unikd lm-distill --quick --out runs/lm/quick-ddp\n"
            "  unikd lm-distill methods=[kd] sparse_teacher.folder=cache sparse_teacher.k=8 \\\n"
            "      sparse_teacher.mode=sample               # students from a sampled cache of the teacher\n"
            "  unikd lm-distill teacher=Qwen/Qwen2.5-1.5B student=Qwen/Qwen2.5-0.5B data=chat.jsonl \\\n"
            "      methods=[kd] seeds=[0] block_size=1024 batch_size=8 teacher_dtype=bfloat16 \\\n"
            "      teacher_device=cpu save_students=true\n"
            "  unikd lm-distill teacher=./my-teacher student.layers=4 student.hidden=256 data=./texts/\n"
            f"  unikd lm-distill teacher_vocab_size=4096 methods=[{','.join(CROSS_METHODS)}] "
            "seeds=[0,1,2,3,4]   # two tokenizers\n"
            'data= records (one JSON object a line): {"text": ...} | {"prompt": ..., "completion": ...} | '
            '{"messages": [{"role": ..., "content": ...}, ...]}\n'
            "settings (key=default; hyperparameters.<method>.<name>=value sets a loss hyperparameter):\n"
            + describe_defaults()
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "config",
        nargs="?",
        default=None,
        help="YAML file of settings (optional; the defaults are the documented example)",
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="settings that override the file")
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny corpus, models and step counts, one seed: every stage in about a minute",
    )
    p.add_argument(
        "--out",
        default=None,
        help="output folder (default: out_dir; runs/lm/stdlib or runs/lm/quick with --quick)",
    )
    p.add_argument(
        "--tag",
        default="",
        help="suffix for this invocation's run folders and results "
        "(e.g. ddp), so a second launch mode keeps its own runs",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        from unikd.lm.example import run_example
        from unikd.lm.example_config import load_example_config

        config, overrides = args.config, list(args.overrides)
        if config is not None and "=" in config and not config.endswith((".yaml", ".yml")):
            config, overrides = None, [config, *overrides]
        if args.out is not None:
            overrides.append(f"out_dir={args.out}")
        elif args.quick and not any(o.startswith("out_dir=") for o in overrides):
            overrides.append("out_dir=runs/lm/quick")
        if args.tag and not args.tag.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"--tag must be letters, digits, - or _, got {args.tag!r}")
        cfg = load_example_config(config, overrides, quick=args.quick)
        run_example(cfg, tag=args.tag)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"unikd lm-distill: error: {exc}", file=sys.stderr)
        return 1
    return 0
