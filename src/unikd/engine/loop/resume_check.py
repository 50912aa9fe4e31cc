"""Resume continues the run that wrote the checkpoint, or fails before training.

Two checks, both before any data is loaded:

- the run id (:mod:`unikd.engine.run.identity`): a checkpoint written by another run than the one the
  folder holds is refused, even when the configs match;
- the config: the requested config is compared key by key (flattened dotted keys) with the one stored in
  the checkpoint. Only the keys of :data:`RESUME_FREE_KEYS` may differ; any other difference would continue
  the run with the checkpoint's state under new settings (a hybrid run whose ``config.yaml`` describes
  neither half), so the error names each key, old -> new.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unikd.engine.config import Config, _default_tree
from unikd.engine.loop.claim import run_files
from unikd.engine.run.identity import new_run_id, read_run_id

# The keys that may change when a run resumes (documented in docs/training.md, "Resume"). Each one either
# cannot change what the run computes or, like epochs, is a documented extension of the run.
RESUME_FREE_KEYS = frozenset({
    "epochs",  # extend (or end early) the run; the schedules then follow the new length (see docs)
    "resume",  # how this invocation starts, not what the run is
    "overwrite",  # always false when resuming (the config check refuses it with resume)
    "out_dir",  # a moved folder, or resume=PATH continuing into a new folder
    "device",  # the same run on another device (bit-identical only on the same device type)
    "checkpoint_every",  # when last.pt is written: saving reads the state, it never changes it
    "tensorboard",  # logging sinks only
    "trackers",
    "data.num_workers",  # loader processes: every view is a pure function of (seed, epoch, index)
    "checks",  # which input checks run: they raise on bad inputs, never change a value
    "integrity",  # how strictly files are checked when read back; never what the run computes
})

_UNSET = object()  # a key one side does not have


def _plain(value: Any) -> Any:
    # Checkpoints and YAML give lists where dataclass defaults may hold tuples: compare them alike.
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}`` (empty mappings give no key)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = _plain(value)
    return out


def config_changes(stored: dict[str, Any], cfg: Config) -> list[tuple[str, Any, Any]]:
    """``(key, old, new)`` for every key besides :data:`RESUME_FREE_KEYS` where ``cfg`` differs from the
    checkpoint's config ``stored``. Both sides are laid over the defaults, so a key added to the schema
    after the checkpoint was written counts as its default, and omitted optional sections as theirs."""
    base = flatten(_default_tree())
    old = {**base, **flatten(stored)}
    new = {**base, **flatten(cfg.to_dict())}
    keys = list(new) + [k for k in old if k not in new]
    return [
        (k, old.get(k, _UNSET), new.get(k, _UNSET))
        for k in keys
        if k not in RESUME_FREE_KEYS and old.get(k, _UNSET) != new.get(k, _UNSET)
    ]


def _show(value: Any) -> str:
    return "(unset)" if value is _UNSET else repr(value)


def _foreign_run(cfg: Config, ckpt: dict[str, Any], folder_id: str | None) -> str | None:
    ckpt_id = ckpt.get("run_id")
    if not (folder_id and ckpt_id and ckpt_id != folder_id):
        return None
    trained_in = (ckpt.get("config") or {}).get("out_dir")
    where = f", trained in {trained_in}" if trained_in and trained_in != cfg.out_dir else ""
    return (
        f"it was written by another run (run id {ckpt_id}{where}) than the one in {cfg.out_dir} (run id "
        f"{folder_id}), and a checkpoint of another run is never continued"
    )


def _folder_run_id(cfg: Config) -> str | None:
    """The id of the run ``out_dir`` holds; a run.json without any other file of a run (a run stopped
    before its first epoch) names no run there."""
    if cfg.out_dir is None or not run_files(Path(cfg.out_dir)):
        return None
    return read_run_id(cfg.out_dir)


def check_resume(cfg: Config, found: tuple[Path, dict[str, Any]] | None) -> tuple[str, dict[str, Any] | None]:
    """Refuse to resume ``found`` (the checkpoint :func:`~unikd.engine.loop.resume.resume_checkpoint` chose)
    under another run or other settings; return the run id to carry on and, for a checkpoint of another
    folder's run continued in a new one, where it came from (for ``run.json``).

    A fresh run gets a new id; a resumed one keeps its folder's id (or, in a folder from before run ids,
    the checkpoint's). Raises ``ValueError`` naming every difference and the ways out.
    """
    if found is None:
        return new_run_id(), None
    path, ckpt = found
    folder_id = _folder_run_id(cfg)
    foreign = _foreign_run(cfg, ckpt, folder_id)
    stored = ckpt.get("config")
    changes = config_changes(stored, cfg) if isinstance(stored, dict) else []
    inside = cfg.out_dir is not None and Path(path).resolve().parent == Path(cfg.out_dir).resolve()
    if foreign or changes:
        own = Path(cfg.out_dir) / "config.yaml" if inside else None
        raise _refusal(path, foreign, changes, own if own is not None and own.is_file() else None)
    ckpt_id = ckpt.get("run_id") if isinstance(ckpt.get("run_id"), str) else None
    if folder_id:
        return folder_id, None
    if inside and ckpt_id:
        return ckpt_id, None  # the folder lost its run.json: the checkpoint names the run
    if inside:
        return new_run_id(), None  # a folder and checkpoint from before run ids: from now on it has one
    # A new folder continuing another run's checkpoint (resume=PATH) is a run of its own, started from it.
    return new_run_id(), {"run_id": ckpt_id, "checkpoint": str(path)}


def _refusal(
    path: Path, foreign: str | None, changes: list[tuple[str, Any, Any]], own_config: Path | None
) -> ValueError:
    """The error: what differs, then the ways on (``own_config``: the run's config.yaml, when it is
    the checkpoint's own)."""
    problems, ways = [], []
    if foreign:
        problems.append(foreign)
    if changes:
        shown = ", ".join(f"{k} {_show(old)} -> {_show(new)}" for k, old, new in changes)
        problems.append(f"its run was made with other settings ({shown})")
    if changes and not foreign:
        where = f", e.g. unikd train {own_config} resume=auto" if own_config is not None else ""
        ways.append(
            f"continue the run with its own settings{where} (only {', '.join(sorted(RESUME_FREE_KEYS))} may "
            'change when a run resumes; docs/training.md, "What may change on resume")'
        )
    ways += ["start over with resume=no overwrite=true (deletes the run in out_dir)",
             "train into another out_dir"]
    return ValueError(
        f"cannot resume from {str(path)!r}: {'; '.join(problems)}. To go on: {'; or '.join(ways)}"
    )
