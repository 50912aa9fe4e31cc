"""benchmarks/gpu_step.py runs in one command: its --help, and a CPU --quick run of one step per
configuration (eager with and without checks, one concurrent job) printing every row."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_step.py"


def _run(*argv: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_help():
    text = _run("--help")
    assert "--quick" in text and "--jobs" in text and "cudagraphs" in text


def test_unknown_mode_is_an_error():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--modes", "graphs"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert out.returncode != 0 and "unknown modes" in out.stderr


@pytest.mark.slow
def test_quick_cpu_run_prints_every_configuration():
    text = _run(
        "--device",
        "cpu",
        "--quick",
        "--methods",
        "ce,uskd",
        "--modes",
        "eager,eager+checks",
        "--warmup",
        "1",
        "--rounds",
        "1",
        "--block",
        "1",
        "--jobs",
        "1",
    )
    rows = [line.split() for line in text.splitlines() if line.startswith("  ") and "." in line]
    configs = {(r[0], r[1]) for r in rows if r[0] in ("ce", "uskd")}
    assert configs == {(m, mode) for m in ("ce", "uskd") for mode in ("eager", "eager+checks")}, text
    assert all(float(r[2]) > 0 for r in rows if r[0] in ("ce", "uskd"))
    assert "k concurrent jobs" in text and any(r[0] == "1" for r in rows), text
    assert "failed" not in text, text


@pytest.mark.slow
def test_quick_run_times_the_engine_step():
    # the engine's own step, eager and compile=step (aot_eager under --quick); KD has no engine row
    text = _run("--device", "cpu", "--quick", "--methods", "ce,kd", "--modes", "engine,engine+compile",
                "--rounds", "1", "--block", "1")
    rows = [line.split() for line in text.splitlines() if line.startswith("  ") and "." in line]
    assert {(r[0], r[1]) for r in rows} == {("ce", "engine"), ("ce", "engine+compile")}, text
    assert "compile backend aot_eager" in text and "failed" not in text, text
