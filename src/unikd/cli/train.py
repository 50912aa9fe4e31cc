"""``unikd train CONFIG.yaml [key=value ...]``: train a teacher, distil a student or self-distil."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

EPILOG = """\
examples:
  unikd train configs/cifar100/ce/resnet56.yaml out_dir=runs/t56
  unikd train configs/cifar100/nkd/resnet56_resnet20.yaml teacher.checkpoint=runs/t56/best.pt
  unikd train - method=uskd model=tiny_cnn data.name=digits epochs=5 sched.milestones=[3]
  unikd train - model=resnet8 method=dml "online.peers=[resnet20]"   # online: both networks trained
  unikd train configs/x.yaml diagnostics.every=50  # per-term gradient norms and imbalance warnings
  unikd train configs/x.yaml resume=auto          # continue from out_dir/last.pt (or last.prev.pt)
  unikd train configs/x.yaml overwrite=true       # start over in an out_dir that holds a finished run
  torchrun --nproc_per_node 2 -m unikd train configs/x.yaml   # DDP, data.batch_size is the global batch

overrides use dotted keys (optim.lr=0.1, loss.temperature=4, teacher.model=resnet56) and YAML values
([150, 180] for lists, null for None). Every key and default: docs/training.md (config schema).
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train with a method (ce, ls, kd, dkd, nkd, dist, ttm, wttm, abkd, ctkd, uskd, tfkd, zipf, "
        "fitnet, at, dml, bdkd, ...)",
        description="Train a model from a YAML recipe plus key=value overrides. Writes config.yaml, "
        "metrics.jsonl, summary.json, last.pt (plus the previous one, last.prev.pt), best.pt and "
        "student.safetensors into out_dir (default: a fresh runs/METHOD-MODEL-TIMESTAMP). Every checkpoint "
        "carries a checksum that is verified when it is read. One process per out_dir: a second one fails "
        "at once; a folder holding another run needs resume=auto or overwrite=true.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="YAML recipe (see configs/), or '-' for the built-in defaults")
    # REMAINDER (not "*") so that options may also follow the overrides; they are picked out in run().
    p.add_argument(
        "overrides", nargs=argparse.REMAINDER, metavar="key=value", help="config overrides, e.g. optim.lr=0.1"
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unikd.engine.config import config_to_yaml, load_config

    overrides = [o for o in args.overrides if o != "--print-config"]
    print_config = args.print_config or len(overrides) != len(args.overrides)
    bad = [o for o in overrides if o.startswith("-")]
    if bad:
        print(
            f"unikd train: error: unknown option {bad[0]!r}; overrides look like key=value", file=sys.stderr
        )
        return 2
    try:
        cfg = load_config(None if args.config == "-" else args.config, overrides)
    except (ValueError, FileNotFoundError) as exc:
        print(f"unikd train: error: {exc}", file=sys.stderr)
        return 2
    if print_config:
        print(config_to_yaml(cfg), end="")
        return 0
    from unikd.engine.loop.step import NonFiniteLossError
    from unikd.engine.loop.trainer import TrainingInterrupted, train
    from unikd.engine.run.write_errors import RunWriteError

    try:
        summary = train(cfg)
    except TrainingInterrupted as exc:
        print(f"unikd train: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except (ValueError, FileNotFoundError, NonFiniteLossError, ImportError, RunWriteError) as exc:
        print(f"unikd train: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. reading the data: one line naming the file, not a traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"unikd train: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun every rank returns; one prints
        print(json.dumps(summary))
    return 0
