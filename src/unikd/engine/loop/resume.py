"""Resume: locating the checkpoint to continue from, and loading it into every stateful part of a run
(the RNG states themselves are :mod:`unikd.engine.run.rng`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from unikd.engine.config import Config
from unikd.engine.loop.network import load_objective
from unikd.engine.run.last_checkpoint import load_latest, load_training_checkpoint
from unikd.engine.run.rng import rng_state, seed_everything, set_rng_state  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    from unikd.engine.loop.components import Components


def resume_checkpoint(cfg: Config) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint to resume from, loaded: ``resume=no`` -> None; ``auto`` -> ``out_dir/last.pt`` (or
    ``last.prev.pt`` when that one is missing or damaged) if present; else the file ``resume`` names."""
    if cfg.resume == "no":
        return None
    if cfg.resume == "auto":
        return load_latest(cfg.out_dir)
    path = Path(cfg.resume)
    if not path.exists():
        raise FileNotFoundError(
            f"resume={cfg.resume!r}: no such checkpoint; use resume=auto to continue from out_dir/last.pt "
            "when it exists, or resume=no to start fresh"
        )
    return path, load_training_checkpoint(path)


def check_compatible(ckpt: dict[str, Any], cfg: Config, num_classes: int, path: Path) -> None:
    """A checkpoint from a different model, method or class count cannot be resumed: say which differs."""
    problems = []
    if ckpt.get("model_name") != cfg.model:
        problems.append(f"model {ckpt.get('model_name')!r} (config: {cfg.model!r})")
    if ckpt.get("num_classes") != num_classes:
        problems.append(f"num_classes {ckpt.get('num_classes')} (config/data: {num_classes})")
    if ckpt.get("method") != cfg.method:
        problems.append(f"method {ckpt.get('method')!r} (config: {cfg.method!r})")
    if problems:
        raise ValueError(
            f"cannot resume from {str(path)!r}: it was saved with {', '.join(problems)}. Use a fresh "
            "out_dir, start over with resume=no overwrite=true, or fix the config to match the checkpoint"
        )


def restore(c: Components, found: tuple[Path, dict[str, Any]] | None) -> Path | None:
    """Load the checkpoint :func:`resume_checkpoint` found (checked by
    :func:`~unikd.engine.loop.resume_check.check_resume`) into every stateful component; restore the RNGs
    last."""
    if found is None:
        return None
    path, ckpt = found
    check_compatible(ckpt, c.cfg, c.num_classes, path)
    c.student.load_train_state(ckpt, path, objective=_objective_state(c.objective, ckpt))
    if c.online is not None:
        c.online.load_state_dict(ckpt.get("online"), path)
    elif ckpt.get("online"):
        raise ValueError(
            f"cannot resume from {str(path)!r}: it was saved by online training with peers "
            f"{[p['model_name'] for p in ckpt['online']['peers']]}, but this config has no online.peers; set "
            "them, or use a fresh out_dir or resume=no"
        )
    if c.diagnostics is not None:
        c.diagnostics.load_state_dict(ckpt.get("diagnostics"))
    if c.scaler is not None and "scaler" in ckpt:
        c.scaler.load_state_dict(ckpt["scaler"])
    c.state.load_state_dict(ckpt["progress"])
    c.train_loader.load_state_dict(ckpt["loader"])
    set_rng_state(ckpt["rng"])
    return path


def _restore_objective(objective: Any, ckpt: dict[str, Any], path: Path) -> None:
    """Load the term modules' state of ``ckpt`` (either form) into ``objective``."""
    load_objective(objective, _objective_state(objective, ckpt), path)


def _objective_state(objective: Any, ckpt: dict[str, Any]) -> dict[str, Any]:
    """The term modules' state; checkpoints from before the terms form hold one module as ``loss_module``."""
    state = ckpt.get("objective")
    if state is None and "loss_module" in ckpt and len(objective.terms) == 1:
        name = next(iter(objective.terms))
        state = {f"terms.{name}.{k}": v for k, v in ckpt["loss_module"].items()}
    return state if state is not None else {}
