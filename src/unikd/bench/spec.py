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

from unikd.bench.spec_expand import expand, resolved_hash
from unikd.bench.spec_parse import load_spec, parse_spec
from unikd.bench.spec_types import (
    DROP_KEYS,
    RESERVED_KEYS,
    TEACHER_METHODS,
    BenchSpec,
    Comparison,
    RunPlan,
    TeacherSpec,
    TrackSpec,
    method_requires_teacher,
    overrides_require_teacher,
)

__all__ = [
    "DROP_KEYS",
    "RESERVED_KEYS",
    "TEACHER_METHODS",
    "BenchSpec",
    "Comparison",
    "RunPlan",
    "TeacherSpec",
    "TrackSpec",
    "expand",
    "load_spec",
    "method_requires_teacher",
    "overrides_require_teacher",
    "parse_spec",
    "resolved_hash",
]
