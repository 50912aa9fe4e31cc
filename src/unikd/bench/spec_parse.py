"""Reading and validating a bench spec (the format is in :mod:`unikd.bench.spec`)."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from unikd._yaml import read_yaml_file
from unikd.bench.results import COMPARISON_METRICS
from unikd.bench.spec_types import (
    DROP_KEYS,
    RESERVED_KEYS,
    BenchSpec,
    Comparison,
    TeacherSpec,
    TrackSpec,
    overrides_require_teacher,
    term_methods,
)
from unikd.bench.values import expand_env, flatten

_TOP_KEYS = {
    "name", "base", "overrides", "out_dir", "seeds", "teacher_cache", "tracks", "jobs", "threads",
    "comparisons",
}
_TRACK_KEYS = {"name", "student", "overrides", "teacher", "methods", "seeds"}
_COMPARISON_KEYS = {"track", "reference", "methods", "threshold", "metric"}
_TEACHER_KEYS = {"model", "overrides", "seed", "checkpoint"}

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
        if not term_methods(flat):  # the terms form derives `method` from the term names itself
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

