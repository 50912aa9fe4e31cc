"""A parsed bench spec expanded into run plans: teachers first, hashed by their resolved config."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from unikd._yaml import read_yaml_file
from unikd.bench.spec_types import DROP_KEYS, BenchSpec, RunPlan, overrides_require_teacher
from unikd.bench.values import format_value

# Keys that do not change what a run computes; left out of the teacher hash.
_HASH_IGNORED = frozenset({"out_dir", "resume", "device", "tensorboard", "checkpoint_every", "integrity"})

def resolved_hash(base: str | None, overrides: Mapping[str, Any]) -> str:
    """Hash of the resolved training config (``unikd.engine.config.load_config``), ignoring output keys."""
    from unikd.engine.config import load_config

    cfg = load_config(base, [f"{k}={format_value(v)}" for k, v in overrides.items()])
    d = cfg.to_dict() if hasattr(cfg, "to_dict") else dataclasses.asdict(cfg)
    for key in _HASH_IGNORED:
        d.pop(key, None)
    blob = json.dumps(d, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _without_drops(spec: BenchSpec) -> dict[str, Any]:
    """The spec's overrides for a teacher run: any dropped classes (spec-wide or from the base config)
    switched off, so the teacher sees every class."""
    over = {k: v for k, v in spec.overrides.items() if k not in DROP_KEYS}
    base: Any = {}
    if spec.base is not None and Path(spec.base).is_file():
        base = read_yaml_file(spec.base, "base config")
    data = base.get("data") if isinstance(base, dict) else None
    in_base = isinstance(data, dict) and any(data.get(k.split(".")[1]) is not None for k in DROP_KEYS)
    if in_base or len(over) < len(spec.overrides):
        over.update(dict.fromkeys(DROP_KEYS))  # null: the defaults, which the teacher's hash leaves out
    return over


def expand(spec: BenchSpec, *, hash_fn: Any = resolved_hash) -> list[RunPlan]:
    """The grid as run plans: each distinct teacher first (in track order), then students track by track,
    seed-major within a track (all methods of seed 0, then seed 1, ...) so an interrupted grid already has
    complete seeds to compare."""
    teachers: dict[str, RunPlan] = {}
    plans: list[RunPlan] = []
    for track in spec.tracks:
        teacher_args: dict[str, Any] = {}
        teacher_id = None
        if track.teacher is not None:
            t = track.teacher
            if t.checkpoint is not None:
                teacher_args = {"teacher.model": t.model, "teacher.checkpoint": t.checkpoint}
            else:
                t_over = {**_without_drops(spec), **t.overrides, "method": "ce", "model": t.model,
                          "seed": t.seed}
                out = spec.out_dir / "teachers" / f"{t.model}-{hash_fn(spec.base, t_over)}"
                teacher_id = str(out)
                if teacher_id not in teachers:
                    teachers[teacher_id] = RunPlan(
                        role="teacher",
                        track=track.name,
                        label="teacher",
                        method="ce",
                        seed=t.seed,
                        out_dir=out,
                        base=spec.base,
                        overrides={**t_over, "out_dir": str(out), "resume": "auto"},
                    )
                # The final weights, not the best epoch: picking the epoch on the test split would leak it.
                teacher_args = {"teacher.model": t.model, "teacher.checkpoint": str(out / "last.pt")}
        for seed in spec.track_seeds(track):
            for label, m_over in track.methods.items():
                out = spec.out_dir / "runs" / track.name / label / f"seed{seed}"
                needs = overrides_require_teacher(m_over)
                over = {
                    **spec.overrides,
                    **track.overrides,
                    **m_over,
                    "model": track.student,
                    "seed": seed,
                    **(teacher_args if needs else {}),
                    "out_dir": str(out),
                    "resume": "auto",
                }
                plans.append(
                    RunPlan(
                        role="student",
                        track=track.name,
                        label=label,
                        method=m_over.get("method", label),
                        seed=seed,
                        out_dir=out,
                        base=spec.base,
                        overrides=over,
                        teacher=teacher_id if needs else None,
                    )
                )
    first: dict[str, RunPlan] = {}
    for p in plans:
        key = json.dumps(
            {k: v for k, v in p.overrides.items() if k != "out_dir"}, sort_keys=True, default=str
        )
        if key in first:
            p.copy_of = str(first[key].out_dir)
        else:
            first[key] = p
    return list(teachers.values()) + plans

