"""``unikd cache-teacher CONFIG.yaml [key=value ...]``: precompute teacher logits for ``teacher.cache``."""

from __future__ import annotations

import argparse
import sys

_EPILOG = """\
Give the same config and key=value overrides as the 'unikd train' runs that will use the cache: the cache
replays the exact augmented views of that training stream (seed, batch size, augmentation, mixup) and
'unikd train ... teacher.cache=DIR' refuses a cache built for anything else. Rerunning the command resumes
an interrupted build (finished epochs are kept) and returns at once when the cache is complete.

Storage: fp16 full logits when the class count is <= 1024 (fp32 with --dtype fp32, needed for bit-exact
replays), else the top-k log-probabilities plus the residual log-mass (--topk forces it).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "cache-teacher",
        help="precompute the teacher's logits over the augmented training stream (for teacher.cache)",
        description="Run the teacher over the exact augmented views of E epochs of the training stream and "
        "store its logits (memory-mapped shards + manifest) for 'unikd train ... teacher.cache=DIR'.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="training config YAML (the one the distillation runs use), or '-' for the "
                   "built-in defaults (as in 'unikd train -')")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, as for 'unikd train'")
    p.add_argument("--out", default=None,
                   help="cache folder (default: teacher.cache if set, else "
                   "$UNIKD_CACHE/teacher-cache/<teacher>-seed<seed>-<key>, $UNIKD_CACHE=~/.cache/unikd)")
    p.add_argument("--epochs", type=int, default=None, help="epochs to cache (default: the config's epochs)")
    p.add_argument("--dtype", choices=("fp16", "fp32"), default="fp16",
                   help="storage precision (default fp16)")
    p.add_argument("--topk", type=int, default=None,
                   help="store top-k + residual mass with this k (default: full logits when classes <= 1024, "
                   "else k=20)")
    p.add_argument("--world-size", type=int, default=1,
                   help="number of DDP ranks of the training runs (each rank's teacher forward is replayed)")
    p.add_argument("--overwrite", action="store_true", help="replace a cache of another run in the folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--record", default=None, metavar="JSON",
                   help="also write {\"folder\": CACHE_FOLDER} to this file (for tools that build caches)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from unikd.cache import read_manifest
    from unikd.cache.build import build_teacher_cache
    from unikd.engine.config import load_config

    try:
        cfg = load_config(None if args.config == "-" else args.config, args.overrides)
        folder = build_teacher_cache(
            cfg, args.out, epochs=args.epochs, dtype=args.dtype, topk=args.topk, world_size=args.world_size,
            overwrite=args.overwrite, show_progress=not args.no_progress,
        )
    except (ValueError, FileNotFoundError, RuntimeError) as e:  # a held lock (FolderLockedError) included
        print(f"unikd cache-teacher: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a read-only folder: the finished shards stay whole
        where = f" ({e.filename})" if e.filename else (f" in {args.out}" if args.out else "")
        print(
            f"unikd cache-teacher: error: cannot write the teacher cache{where}: {e.strerror or e}. Free "
            "space or choose another --out, then run the same command again (the files already written "
            "are whole)",
            file=sys.stderr,
        )
        return 2
    if args.record:
        import json

        from unikd._atomic import atomic_write_text

        atomic_write_text(args.record, json.dumps({"folder": str(folder)}))
    m = read_manifest(folder) or {}
    storage = f"{m.get('mode')} {m.get('dtype')}" + (f" k={m['k']}" if m.get("k") else "")
    print(f"teacher cache: {folder}  ({m.get('epochs')} epochs x {m.get('num_samples')} samples, {storage}, "
          f"{m.get('total_bytes', 0) / 1e6:.1f} MB)")
    print(f"use it with: unikd train {args.config} {' '.join(args.overrides)} teacher.cache={folder}".replace(
        "  ", " "))
    return 0
