"""Smoke test of benchmarks/reliability_damage.py: the outcome classifier, and two real damage cases of
best.pt (its consumer is ``unikd eval``), one tiny training in a forked child (a few seconds)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import reliability_damage as rd  # noqa: E402
from _reliability import Result, Runner  # noqa: E402


def _res(rc: int, err: str = "", timed_out: bool = False) -> Result:
    return Result(rc, "", err, 0.1, timed_out)


def test_classify_every_outcome():
    named = ["unikd eval: error: checkpoint 'CASE/run/best.pt' is damaged"]
    unverified = ["checkpoint CASE/run/best.pt carries no unikd checksum (written by an older unikd ...)"]
    assert rd.classify(_res(1), executed=True, notes=[], diff=None) == "executed"
    assert rd.classify(_res(-9, timed_out=True), executed=False, notes=[], diff=None) == "hang"
    assert rd.classify(_res(1, "Traceback (most recent call last):\n  ..."), executed=False, notes=named,
                       diff=None) == "crash"
    assert rd.classify(_res(-11), executed=False, notes=[], diff=None) == "crash"
    assert rd.classify(_res(1, named[0]), executed=False, notes=named, diff=None) == "refused"
    assert rd.classify(_res(2, "error"), executed=False, notes=[], diff=None) == "refused-unnamed"
    assert rd.classify(_res(0), executed=False, notes=unverified, diff="model.fc.weight") == "silent-wrong"
    assert rd.classify(_res(0), executed=False, notes=["resume=auto: last.pt: ..."], diff=None) == "recovered"
    assert rd.classify(_res(0), executed=False, notes=unverified, diff=None) == "correct"
    assert rd.classify(_res(0), executed=False, notes=[], diff=None) == "correct"


def test_damaged_best_pt_is_refused_by_name(tmp_path):
    environ, threads = dict(os.environ), torch.get_num_threads()
    try:
        matrix = rd.Matrix(tmp_path, Runner("fork", timeout=60))
        matrix.setup(["best.pt"], ["trunc0", "flip-sum"])
        rows = [matrix.run_case("best.pt", kind) for kind in ("trunc0", "flip-sum")]
    finally:
        os.environ.clear()
        os.environ.update(environ)
        torch.set_num_threads(threads)
    assert [r["outcome"] for r in rows] == ["refused", "refused"], rows
    assert all("best.pt" in r["message"] and r["rc"] == 1 for r in rows), rows
