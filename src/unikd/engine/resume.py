"""Everything exact resume needs: RNG states as plain tensors/lists, and locating the checkpoint.

Checkpoints must load with ``weights_only=True``, which only allows tensors and plain containers, so the
numpy and Python RNG states (tuples holding an ndarray) are converted to tensors and lists here.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from unikd.engine.config import Config
from unikd.engine.last_checkpoint import load_latest, load_training_checkpoint

if TYPE_CHECKING:
    from unikd.engine.setup import Components


def rng_state() -> dict[str, Any]:
    """torch (CPU and every CUDA device), numpy and Python RNG states, ``weights_only``-loadable."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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
    :func:`~unikd.engine.resume_check.check_resume`) into every stateful component; restore the RNGs last."""
    if found is None:
        return None
    path, ckpt = found
    check_compatible(ckpt, c.cfg, c.num_classes, path)
    c.model.load_state_dict(ckpt["train_model"] if "train_model" in ckpt else ckpt["model"])
    if c.ema is not None:
        if "ema" in ckpt:
            c.ema.load_state_dict(ckpt["ema"])
        else:
            c.ema.module.load_state_dict(ckpt["model"])
    _restore_objective(c.objective, ckpt, path)
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
    c.optimizer.load_state_dict(ckpt["optimizer"])
    c.scheduler.load_state_dict(ckpt["scheduler"])
    if c.scaler is not None and "scaler" in ckpt:
        c.scaler.load_state_dict(ckpt["scaler"])
    c.state.load_state_dict(ckpt["progress"])
    c.train_loader.load_state_dict(ckpt["loader"])
    set_rng_state(ckpt["rng"])
    return path


def _restore_objective(objective: Any, ckpt: dict[str, Any], path: Path) -> None:
    """The term modules' state; checkpoints from before the terms form hold one module as ``loss_module``."""
    state = ckpt.get("objective")
    if state is None and "loss_module" in ckpt and len(objective.terms) == 1:
        name = next(iter(objective.terms))
        state = {f"terms.{name}.{k}": v for k, v in ckpt["loss_module"].items()}
    try:
        objective.load_state_dict(state if state is not None else {})
    except RuntimeError as exc:
        raise ValueError(
            f"cannot resume from {str(path)!r}: the state of its loss terms does not fit this config's terms "
            f"({exc}). Use a fresh out_dir or resume=no"
        ) from None
