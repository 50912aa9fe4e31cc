"""The bench spec's types (tracks, teachers, comparisons, run plans) and which methods need a teacher;
the format is in :mod:`unikd.bench.spec`."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unikd.bench.values import format_value

# Methods whose loss needs teacher logits (docs/losses.md, "Functional API"); only a fallback for when the
# loss registry cannot be imported -- method_requires_teacher asks the loss classes themselves.
TEACHER_METHODS = frozenset({"kd", "dkd", "nkd"})
# Keys the bench sets itself for every run; a spec that sets them would silently be overridden.
RESERVED_KEYS = frozenset({"model", "seed", "out_dir", "resume", "teacher.model", "teacher.checkpoint"})
# Dropped classes concern the student's training split only: a bench teacher is trained without them.
DROP_KEYS = ("data.drop_classes", "data.drop_seed")


@dataclass
class TeacherSpec:
    model: str
    overrides: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    checkpoint: str | None = None


@dataclass
class TrackSpec:
    name: str
    student: str
    methods: dict[str, dict[str, Any]]
    overrides: dict[str, Any] = field(default_factory=dict)
    teacher: TeacherSpec | None = None
    seeds: list[int] | None = None  # None: the spec's seeds


@dataclass
class Comparison:
    """A pre-registered family: each of ``methods`` minus ``reference`` in ``track``, paired by seed.

    ``threshold`` (optional, in the units of the first paired metric, e.g. top-1 points) is the smallest
    gain the family's claim is about: the report then gives the one-sided 95% bound and a verdict.
    ``metric`` (optional, one of :data:`unikd.bench.results.COMPARISON_METRICS`) is that first metric, e.g.
    ``test_selected_top1_dropped``; by default the report's first paired metric (test top-1 at the selected
    epoch)."""

    track: str
    reference: str
    methods: list[str]
    threshold: float | None = None
    metric: str | None = None


@dataclass
class BenchSpec:
    out_dir: Path
    seeds: list[int]
    tracks: list[TrackSpec]
    name: str = "bench"
    base: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    teacher_cache: bool = False
    jobs: int = 1
    threads: int | None = None
    source: str | None = None  # the spec file's path, for the report
    comparisons: list[Comparison] = field(default_factory=list)

    def track_seeds(self, track: TrackSpec) -> list[int]:
        return self.seeds if track.seeds is None else track.seeds


@dataclass
class RunPlan:
    """One ``unikd train`` invocation: the config file, its overrides, and where the grid files it."""

    role: str  # "student" | "teacher"
    track: str
    label: str
    method: str
    seed: int
    out_dir: Path
    base: str | None
    overrides: dict[str, Any]
    teacher: str | None = None  # id of the teacher run this one needs (its out_dir as a string)
    # out_dir of an earlier run of the grid with exactly the same settings (e.g. the CE baseline of two
    # tracks on the same student): this run is not trained again, its result files are copied.
    copy_of: str | None = None

    @property
    def name(self) -> str:
        return (
            f"{self.track}/{self.label}/seed{self.seed}" if self.role == "student" else str(self.out_dir.name)
        )

    def override_args(self) -> list[str]:
        return [f"{k}={format_value(v)}" for k, v in self.overrides.items()]

    def command(self, config_path: str) -> list[str]:
        """The ``python -m unikd train`` command line; ``config_path`` is the YAML given as CONFIG."""
        return [sys.executable, "-m", "unikd", "train", config_path, *self.override_args()]

    def record(self) -> dict[str, Any]:
        """What bench_run.json stores; a later invocation refuses to reuse a folder whose record differs."""
        return {
            "role": self.role,
            "track": self.track,
            "label": self.label,
            "method": self.method,
            "seed": self.seed,
            "base": self.base,
            "overrides": self.overrides,
        }


def method_requires_teacher(method: str) -> bool:
    """True when the method's loss class reads anything of the teacher's (the harness's own rule)."""
    try:
        from unikd.engine.config.method import method_to_loss, methods
        from unikd.losses import LOSSES
        from unikd.losses.contract import needs_teacher
    except ImportError:  # pragma: no cover - only while the package is incomplete
        return method in TEACHER_METHODS
    if method not in methods():
        return False
    loss_name = method_to_loss(method)
    return loss_name is not None and needs_teacher(LOSSES.get(loss_name))


def term_methods(flat: Mapping[str, Any]) -> list[str]:
    """The methods of a ``loss.terms`` objective in flattened overrides (empty for the single form)."""
    terms = flat.get("loss.terms")
    if isinstance(terms, list):
        return [str(t.get("method")) for t in terms if isinstance(t, Mapping)]
    names = {k.split(".")[2] for k in flat if k.startswith("loss.terms.") and k.count(".") >= 2}
    return [str(flat.get(f"loss.terms.{n}.method", n)) for n in sorted(names)]


def overrides_require_teacher(flat: Mapping[str, Any]) -> bool:
    """Whether a run with these flattened overrides reads the teacher (single-method or terms form); online
    runs (``online.peers``) train their teachers themselves."""
    if flat.get("online.peers"):
        return False
    terms = term_methods(flat)
    if terms:
        return any(method_requires_teacher(m) for m in terms)
    return "method" in flat and method_requires_teacher(str(flat["method"]))

