"""The step-mode keys of the training config: ``checks`` (when the losses' value checks run) and
``compile`` (nothing, the model's forward, or the whole forward-and-loss step under ``torch.compile``).

Both are checked here, together, because they constrain each other: the value checks are never traced, so a
compiled step cannot run them.
"""

from __future__ import annotations

from typing import Any

from unikd.registry import closest

# auto: checked for the first steps of every process (a fresh run or a resume), then sync-free
CHECK_SETTINGS = ("auto", "full", "off")
COMPILE_MODES = ("model", "step")  # besides false; true is "model" (the key's older boolean form)


def compile_mode(cfg: Any) -> str | None:
    """``None`` (eager), ``"model"`` or ``"step"``: the ``compile`` key with ``true`` read as ``"model"``."""
    if cfg.compile is True:
        return "model"
    return cfg.compile or None


def check_step_options(cfg: Any) -> None:
    """Raise ``ValueError`` naming the key and the fix for a bad ``checks`` or ``compile`` value or a
    combination that cannot run."""
    if cfg.checks not in CHECK_SETTINGS:
        hint = closest(str(cfg.checks), CHECK_SETTINGS)
        did_you_mean = f" Did you mean {hint!r}?" if hint else ""
        raise ValueError(
            f"checks={cfg.checks!r} is not valid.{did_you_mean} Choose one of: auto (value checks of the "
            "losses for the first steps and after every resume, then sync-free), full (every step), off "
            "(never)."
        )
    if isinstance(cfg.compile, str) and cfg.compile not in COMPILE_MODES:
        hint = closest(cfg.compile, COMPILE_MODES)
        did_you_mean = f" Did you mean {hint!r}?" if hint else ""
        raise ValueError(
            f"compile={cfg.compile!r} is not valid.{did_you_mean} Choose one of: false, model (true: the "
            "model's forward), step (forward and loss terms of every network, with their backward)."
        )
    if compile_mode(cfg) != "step":
        return
    if cfg.checks == "full":
        raise ValueError(
            "compile=step with checks=full: the value checks of the losses are never traced into a compiled "
            "step. Use checks=auto (the first steps run eagerly with checks, then compiled), checks=off, or "
            "compile=model (the losses stay eager and checked)"
        )
    if cfg.diagnostics.every:
        raise ValueError(
            f"compile=step with diagnostics.every={cfg.diagnostics.every}: the gradient diagnostics "
            "differentiate each term separately, outside the compiled step. Use compile=model or "
            "diagnostics.every=0"
        )


__all__ = ["CHECK_SETTINGS", "COMPILE_MODES", "check_step_options", "compile_mode"]
