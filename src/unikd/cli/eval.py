"""``unikd eval CHECKPOINT``: top-1, top-5, NLL and ECE (15 bins) of a saved run, as a table or JSON."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint: top-1, top-5, NLL, ECE",
        description="Evaluate a unikd checkpoint (a run's best.pt or last.pt) on the data it was trained "
        "on (its validation split) or on --data / --data-root / --split.",
        epilog="examples: unikd eval runs/nkd/best.pt --split test --json; "
        "unikd eval runs/kd_drop/best.pt --bias-shift",
    )
    p.add_argument("checkpoint", help="a unikd checkpoint (best.pt / last.pt)")
    p.add_argument("--data", help="dataset name (default: the run's data.name)")
    p.add_argument("--data-root", help="dataset folder (default: the run's data.root)")
    p.add_argument(
        "--split",
        choices=("train", "val", "test"),
        help="split (default: val when the run held out data.val_split, else test)",
    )
    p.add_argument(
        "--samples-per-class",
        type=int,
        help="class-balanced subset of N images per class; 0 = every image (default: the run's own "
        "data.samples_per_class)",
    )
    p.add_argument(
        "--batch-size", type=int, help="evaluation batch size (default: the run's eval_batch_size)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    p.add_argument(
        "--network",
        default="student",
        help="which network of an online-training checkpoint: student (default), peer1, peer2, ...",
    )
    p.add_argument(
        "--classes",
        type=_class_list,
        help="comma-separated class indices, e.g. 3,5 (a run's data.drop_classes): also print top-1 on "
        "those classes and on the rest",
    )
    p.add_argument(
        "--integrity",
        default="lenient",
        choices=("lenient", "strict"),
        help="strict: refuse a checkpoint without a unikd checksum (one from unikd 0.1.0) instead of warning",
    )
    p.add_argument(
        "--bias-shift",
        action="store_true",
        help="the bias-shift fix of Hinton et al. 2015: one constant added to the logits of --classes "
        "(default: the run's data.drop_classes), chosen on the run's validation split to maximise its top-1, "
        "then --split (default: test) scored with it",
    )
    p.add_argument(
        "--bias-grid",
        type=_grid,
        help="the constants --bias-shift tries: START:STOP:STEP or a comma list; 0 is always added "
        "(default: 0:20:0.25)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=run)


def _class_list(text: str) -> list[int]:
    try:
        out = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--classes takes comma-separated class indices such as 3,5, got "
                                         f"{text!r}") from None
    if not out:
        raise argparse.ArgumentTypeError("--classes needs at least one class index, e.g. --classes 3,5")
    return out


def _grid(text: str) -> tuple[float, ...]:
    from unikd.engine.eval.bias_shift import parse_grid

    try:
        return parse_grid(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _top1(value: float | None, count: int) -> str:
    return ("–" if value is None else f"{value:.2f}%") + f"  ({count} images)"


def format_table(result: dict[str, Any]) -> str:
    network = result.get("network", "student")
    rows = [
        ("checkpoint", result["checkpoint"]),
        ("model", result["model"] + ("" if network == "student" else f" ({network})")),
        ("data", f"{result['data']} ({result['split']}, {int(result['count'])} images)"),
        ("top-1", f"{result['top1']:.2f}%"),
        ("top-5", f"{result['top5']:.2f}%"),
        ("NLL", f"{result['nll']:.4f}"),
        ("ECE (15 bins)", f"{result['ece']:.4f}"),
    ]
    if "classes" in result:
        names = ", ".join(map(str, result["classes"]))
        rows.append((f"top-1 classes {names}", _top1(result["top1_classes"], result["count_classes"])))
        rows.append(("top-1 other classes", _top1(result["top1_rest"], result["count_rest"])))
    if "bias_shift" in result:
        grid = result["bias_grid"]
        val = (f"chosen on val, {int(result['bias_val_count'])} images: top-1 "
               f"{result['bias_val_top1_unshifted']:.2f}% -> {result['bias_val_top1']:.2f}%")
        rows.append(("bias shift b", f"{result['bias_shift']:g} ({val}; grid {grid[0]:g}..{grid[-1]:g}, "
                     f"{len(grid)} values)"))
        rows.append(("top-1 with b", f"{result['biasfix_top1']:.2f}%"))
        rows.append(("  classes " + ", ".join(map(str, result["classes"])),
                     _top1(result["biasfix_top1_classes"], result["count_classes"])))
        rows.append(("  other classes", _top1(result["biasfix_top1_rest"], result["count_rest"])))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def run(args: argparse.Namespace) -> int:
    import logging

    from unikd.engine.eval.saved import evaluate_checkpoint

    logging.getLogger("unikd").setLevel(logging.INFO)  # progress bar on stderr (the result goes to stdout)
    try:
        result = evaluate_checkpoint(
            args.checkpoint,
            data=args.data,
            data_root=args.data_root,
            split=args.split,
            batch_size=args.batch_size,
            samples_per_class=args.samples_per_class,
            device=args.device,
            precision=args.precision,
            network=args.network,
            classes=args.classes,
            integrity=args.integrity,
            bias_shift=args.bias_shift or args.bias_grid is not None,
            bias_grid=args.bias_grid,
        )
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"unikd eval: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result) if args.json else format_table(result))
    return 0
