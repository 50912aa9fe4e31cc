"""Benchmark spec: a YAML grid of (track x method x seed) training runs, expanded into run plans.

Spec format (every path is relative to the working directory ``unikd bench`` is started from; any string
may use ``${VAR}`` or ``${VAR:-default}`` to read an environment variable)::

    name: cifar10_cpu              # optional; the report title
    base: configs/cifar.yaml       # optional base config file given to ``unikd train``
    overrides:                     # optional; applied to every run, teacher runs included
      data.name: imagefolder       #   dotted keys or nested mappings (``data: {name: imagefolder}``)
      epochs: 10
    out_dir: runs/bench/cifar10    # required; runs go to OUT/runs/TRACK/LABEL/seedN, teachers to OUT/teachers
    seeds: [0, 1, 2]               # a list, or an int n meaning 0..n-1
    teacher_cache: false           # true: one teacher-output cache per teacher (needs ``unikd.cache``)
    jobs: 1                        # runs trained at the same time (each its own subprocess)
    threads: null                  # torch threads per run (OMP_NUM_THREADS); null: cores // jobs if jobs > 1
    tracks:
      - name: distill
        student: resnet8           # the model of every student run of this track
        seeds: null                # optional; this track's own seeds (a list or a count), else the spec's
        overrides: {}              # optional; every student run of this track (not the teacher)
        teacher:                   # optional; needed by methods that use a teacher (kd, dkd, nkd)
          model: resnet20
          overrides: {epochs: 30}  # teacher training, on top of the top-level overrides
          seed: 0                  # teacher training seed (default 0); one teacher serves every student seed
          checkpoint: null         # an existing checkpoint instead of training one
        methods:                   # LABEL: overrides; the method is LABEL unless ``method`` is set
          ce: {}
          kd: {loss.temperature: 4}
          kd_t2: {method: kd, loss.temperature: 2}
    comparisons:                   # optional; pre-registered families of paired comparisons (the report
      - track: distill             #   adds paired-t p-values, Holm-adjusted within each family and
        reference: ce              #   metric, and a verdict where a threshold is named)
        methods: [kd, kd_t2]       #   null or missing: every other method of the track
        threshold: 1.0             #   optional decision threshold on the first paired metric (points)
        metric: test_selected_top1_dropped   # optional first paired metric (default: the report's)

A trained teacher lives in ``OUT/teachers/MODEL-HASH`` where HASH is the hash of its resolved config, so
tracks with the same teacher settings share one teacher and a changed setting trains a new one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unikd._yaml import read_yaml_file
from unikd.bench.results import COMPARISON_METRICS
from unikd.bench.values import expand_env, flatten, format_value

# Methods whose loss needs teacher logits (docs/losses.md, "Functional API"); only a fallback for when the
# loss registry cannot be imported -- method_requires_teacher asks the loss classes themselves.
TEACHER_METHODS = frozenset({"kd", "dkd", "nkd"})
# Keys the bench sets itself for every run; a spec that sets them would silently be overridden.
RESERVED_KEYS = frozenset({"model", "seed", "out_dir", "resume", "teacher.model", "teacher.checkpoint"})
# Keys that do not change what a run computes; left out of the teacher hash.
_HASH_IGNORED = frozenset({"out_dir", "resume", "device", "tensorboard", "checkpoint_every", "integrity"})
_TOP_KEYS = {
    "name", "base", "overrides", "out_dir", "seeds", "teacher_cache", "tracks", "jobs", "threads",
    "comparisons",
}
_TRACK_KEYS = {"name", "student", "overrides", "teacher", "methods", "seeds"}
_COMPARISON_KEYS = {"track", "reference", "methods", "threshold", "metric"}
_TEACHER_KEYS = {"model", "overrides", "seed", "checkpoint"}
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


def _term_methods(flat: Mapping[str, Any]) -> list[str]:
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
    terms = _term_methods(flat)
    if terms:
        return any(method_requires_teacher(m) for m in terms)
    return "method" in flat and method_requires_teacher(str(flat["method"]))


def _check_keys(d: Mapping[str, Any], allowed: set[str], where: str) -> None:
    from unikd.registry import closest

    for key in d:
        if key not in allowed:
            hint = closest(str(key), sorted(allowed))
            extra = f" Did you mean {hint!r}?" if hint else ""
            raise ValueError(
                f"{where}: unknown key {key!r}.{extra} Valid keys: {', '.join(sorted(allowed))}."
            )


def _no_reserved(flat: dict[str, Any], where: str, allowed: frozenset[str] = frozenset()) -> None:
    bad = sorted((set(flat) & RESERVED_KEYS) - allowed)
    if bad:
        raise ValueError(
            f"{where} sets {', '.join(bad)}, which the bench sets itself for every run; "
            "use the track's 'student' / 'teacher' entries and the spec's 'seeds' and 'out_dir'"
        )


def parse_spec(
    data: Mapping[str, Any], *, source: str | None = None, extra_overrides: Mapping[str, Any] | None = None
) -> BenchSpec:
    """Validate a spec mapping (see the module docstring) into a :class:`BenchSpec`.

    ``extra_overrides`` (from the command line) are applied to every run after the spec's own overrides.
    """
    where = source or "spec"
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: a bench spec must be a YAML mapping with out_dir, seeds and tracks")
    data = expand_env(dict(data))
    _check_keys(data, _TOP_KEYS, where)
    for key in ("out_dir", "tracks"):
        if not data.get(key):
            raise ValueError(
                f"{where}: missing required key {key!r} (see 'unikd bench --help' for the format)"
            )
    seeds = _parse_seeds(data.get("seeds", 3), where)
    overrides = flatten(data.get("overrides"), f"{where}: overrides")
    overrides.update(flatten(extra_overrides, "command-line overrides"))
    _no_reserved(overrides, f"{where}: overrides")
    for key in ("method",):
        if key in overrides:
            raise ValueError(f"{where}: overrides set {key!r}; set it per method under a track's 'methods'")
    base = data.get("base")
    if base is not None and not Path(base).is_file():
        raise ValueError(
            f"{where}: base config {base!r} does not exist (paths are relative to the working "
            f"directory {os.getcwd()})"
        )
    tracks_raw = data["tracks"]
    if not isinstance(tracks_raw, list):
        raise ValueError(f"{where}: tracks must be a list of track mappings")
    tracks = [_parse_track(t, f"{where}: tracks[{i}]") for i, t in enumerate(tracks_raw)]
    names = [t.name for t in tracks]
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: track names {names} must be distinct")
    comparisons = _parse_comparisons(data.get("comparisons"), tracks, where)
    return BenchSpec(
        out_dir=Path(str(data["out_dir"])),
        seeds=list(seeds),
        tracks=tracks,
        name=str(data.get("name") or Path(source or "bench").stem),
        base=base,
        overrides=overrides,
        teacher_cache=bool(data.get("teacher_cache", False)),
        jobs=_positive_int(data.get("jobs", 1), "jobs", where),
        threads=None if data.get("threads") is None else _positive_int(data["threads"], "threads", where),
        source=source,
        comparisons=comparisons,
    )


def _parse_seeds(seeds: Any, where: str) -> list[int]:
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"{where}: seeds={seeds} must be >= 1 (or a list of seeds)")
        return list(range(seeds))
    if (
        not isinstance(seeds, list)
        or not seeds
        or len(set(seeds)) != len(seeds)
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
    ):
        raise ValueError(f"{where}: seeds={seeds!r} must be a count or a list of distinct non-negative ints")
    return list(seeds)


def _parse_comparisons(raw: Any, tracks: list[TrackSpec], where: str) -> list[Comparison]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValueError(f"{where}: comparisons must be a list of mappings with track and reference")
    by_name = {t.name: t for t in tracks}
    out: list[Comparison] = []
    for i, c in enumerate(raw):
        at = f"{where}: comparisons[{i}]"
        if not isinstance(c, Mapping):
            raise ValueError(f"{at} must be a mapping with track, reference, methods (optional), threshold "
                             "(optional), metric (optional)")
        _check_keys(c, _COMPARISON_KEYS, at)
        track = by_name.get(str(c.get("track")))
        if track is None:
            raise ValueError(
                f"{at}: track {c.get('track')!r} is not a track of this spec ({sorted(by_name)})"
            )
        labels = list(track.methods)
        ref = c.get("reference")
        if ref not in track.methods:
            raise ValueError(
                f"{at}: reference {ref!r} is not a method label of track {track.name!r} ({labels})"
            )
        methods = c.get("methods")
        if methods is None:
            methods = [m for m in labels if m != ref]
        if not isinstance(methods, list) or not methods:
            raise ValueError(f"{at}: methods must be a non-empty list of method labels of {track.name!r}")
        for m in methods:
            if m not in track.methods or m == ref:
                raise ValueError(
                    f"{at}: method {m!r} must be a method label of track {track.name!r} other than the "
                    f"reference ({labels})"
                )
        if len(set(methods)) != len(methods):
            raise ValueError(f"{at}: methods {methods} repeat a label")
        threshold = c.get("threshold")
        if threshold is not None:
            if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(
                threshold
            ):
                raise ValueError(f"{at}: threshold must be a finite number (e.g. 1.0 top-1 points)")
            threshold = float(threshold)
        metric = c.get("metric")
        if metric is not None and metric not in COMPARISON_METRICS:
            raise ValueError(
                f"{at}: metric {metric!r} is not a metric the report compares; use one of "
                f"{', '.join(COMPARISON_METRICS)}"
            )
        out.append(Comparison(track.name, str(ref), [str(m) for m in methods], threshold, metric))
    return out


def _positive_int(value: Any, key: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: {key}={value!r} must be a positive integer")
    return value


def _label_ok(name: Any) -> bool:
    return isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_.+-]+", name) is not None


def _parse_track(raw: Any, where: str) -> TrackSpec:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where} must be a mapping with name, student and methods")
    _check_keys(raw, _TRACK_KEYS, where)
    seeds = None if raw.get("seeds") is None else _parse_seeds(raw["seeds"], f"{where}: seeds")
    for key in ("name", "student", "methods"):
        if not raw.get(key):
            raise ValueError(f"{where}: missing required key {key!r}")
    if not _label_ok(raw["name"]):
        raise ValueError(
            f"{where}: track name {raw['name']!r} must use only letters, digits, '_.+-' "
            "(it becomes a folder name)"
        )
    where = f"{where} ({raw['name']})"
    overrides = flatten(raw.get("overrides"), f"{where}: overrides")
    _no_reserved(overrides, f"{where}: overrides")
    teacher = None
    if raw.get("teacher") is not None:
        t = raw["teacher"]
        if isinstance(t, str):
            t = {"model": t}
        if not isinstance(t, Mapping) or not t.get("model"):
            raise ValueError(f"{where}: teacher must be a model name or a mapping with at least 'model'")
        _check_keys(t, _TEACHER_KEYS, f"{where}: teacher")
        t_over = flatten(t.get("overrides"), f"{where}: teacher.overrides")
        _no_reserved(t_over, f"{where}: teacher.overrides")
        if "method" in t_over:
            raise ValueError(f"{where}: teacher.overrides sets 'method'; a teacher is always trained with ce")
        if any(k in t_over for k in DROP_KEYS):
            raise ValueError(f"{where}: teacher.overrides sets data.drop_classes; classes are dropped from "
                             "the students' training split only (set it in the overrides of the track or a "
                             "method)")
        ckpt = t.get("checkpoint")
        if ckpt is not None and not Path(str(ckpt)).is_file():
            raise ValueError(
                f"{where}: teacher.checkpoint {ckpt!r} does not exist; give an existing file or "
                "remove it to train the teacher"
            )
        teacher = TeacherSpec(
            model=str(t["model"]),
            overrides=t_over,
            seed=int(t.get("seed", 0)),
            checkpoint=None if ckpt is None else str(ckpt),
        )
    methods_raw = raw["methods"]
    if isinstance(methods_raw, list):  # [ce, kd] is shorthand for {ce: {}, kd: {}}
        methods_raw = {m: {} for m in methods_raw}
    if not isinstance(methods_raw, Mapping):
        raise ValueError(f"{where}: methods must be a mapping LABEL: overrides (or a list of method names)")
    methods: dict[str, dict[str, Any]] = {}
    for label, m_over in methods_raw.items():
        if not _label_ok(label):
            raise ValueError(f"{where}: method label {label!r} must use only letters, digits, '_.+-'")
        flat = flatten(m_over, f"{where}: methods.{label}")
        _no_reserved(flat, f"{where}: methods.{label}")
        if not _term_methods(flat):  # the terms form derives `method` from the term names itself
            flat.setdefault("method", label)
        if overrides_require_teacher(flat) and teacher is None:
            raise ValueError(
                f"{where}: method {label!r} ({flat.get('method', label)}) needs a teacher; add a 'teacher' "
                "entry to the track or move the method to a track with one"
            )
        methods[str(label)] = flat
    return TrackSpec(
        name=str(raw["name"]),
        student=str(raw["student"]),
        methods=methods,
        overrides=overrides,
        teacher=teacher,
        seeds=seeds,
    )


def load_spec(path: str | os.PathLike[str], extra_overrides: Mapping[str, Any] | None = None) -> BenchSpec:
    """Read and validate a spec file."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"bench spec {str(p)!r} does not exist")
    data = read_yaml_file(p, "bench spec")  # regular UTF-8 file, duplicate keys refused
    return parse_spec(data or {}, source=str(p), extra_overrides=extra_overrides)


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
