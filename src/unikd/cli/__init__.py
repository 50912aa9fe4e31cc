"""``unikd`` command line: one module per subcommand, each exposing ``register(subparsers)``.

A subcommand module's ``register`` adds its parser and sets ``func`` (called with the parsed
namespace, returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Order here is the order in --help.
COMMANDS = ["demo", "train", "eval", "cache_teacher", "bench", "report", "lm_distill"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unikd",
        description="Knowledge distillation (NKD, KD, DKD) and self-distillation (USKD, tf-KD, Zipf-LS) "
        "for image classifiers, and token-level distillation of language models (lm-distill).",
        epilog="Run 'unikd COMMAND --help' for a command's options.",
    )
    from unikd import __version__

    parser.add_argument("--version", action="version", version=f"unikd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"unikd.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
