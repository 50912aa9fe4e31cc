"""``unikd lm-distill --quick``: every stage end to end, resume, and two gloo processes matching one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from unikd.cli import main  # noqa: E402
from unikd.lm.example_config import DEFAULT_METHODS, load_example_config  # noqa: E402

pytestmark = pytest.mark.slow
SRC = Path(__file__).resolve().parents[2] / "src"


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lm") / "quick"
    assert main(["lm-distill", "--quick", "--out", str(out), "threads=1"]) == 0
    return out


def test_quick_run_has_every_method(quick_run):
    summary = json.loads((quick_run / "results.json").read_text())
    assert sorted(summary["runs"]) == sorted(DEFAULT_METHODS)
    for method, seeds in summary["runs"].items():
        result = seeds["0"]
        assert 1.0 < result["val_ppl"] < 10_000
        assert result["val_kl"] >= 0.0
        assert [row["step"] for row in result["curve"]] == [2, 4, 6, 8]
        if method != "ce":
            assert {"ce", method} <= result["curve"][0].keys()
    assert summary["teacher"]["val_ppl"] > 1.0
    text = (quick_run / "results.md").read_text()
    assert "Paired differences against KD" in text and "| taid | 1 |" in text
    assert (quick_run / "config.yaml").exists() and (quick_run / "teacher" / "model").is_dir()


def test_rerun_resumes_without_training(quick_run, capsys):
    before = {p: p.stat().st_mtime_ns for p in quick_run.glob("runs/*/*/result.json")}
    assert main(["lm-distill", "--quick", "--out", str(quick_run), "threads=1"]) == 0
    assert {p: p.stat().st_mtime_ns for p in quick_run.glob("runs/*/*/result.json")} == before
    assert "[lm] kd seed 0" not in capsys.readouterr().out


def test_rerun_with_other_settings_is_refused(quick_run, capsys):
    assert main(["lm-distill", "--quick", "--out", str(quick_run), "steps=9"]) == 1
    err = capsys.readouterr().err
    assert "holds runs made with other settings (steps: 8 there, 9 now)" in err and "another --out" in err


def test_two_gloo_processes_match_one(quick_run, tmp_path):
    """Every stage under torchrun from an empty folder: the same global batches (the seeded order is read
    sequentially; each rank takes alternate half-batches), so the logged loss curves of 2 processes x 4
    sequences equal 1 process x 8 up to float rounding -- the teacher's and then the student's."""
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "unikd",
        "lm-distill",
        "--quick",
        "--out",
        str(out),
        "methods=[kd]",
        "threads=1",
    ]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert done.stdout.count("[lm] kd seed 0") == 1  # only rank 0 reports and writes
    pairs = [("teacher/result.json", ("loss",)), ("runs/kd/seed0/result.json", ("loss", "ce", "kd"))]
    for path, keys in pairs:
        one, two = (json.loads((folder / path).read_text()) for folder in (quick_run, out))
        assert two["processes"] == 2 and one["processes"] == 1
        assert [r["step"] for r in one["curve"]] == [r["step"] for r in two["curve"]]
        for r1, r2 in zip(one["curve"], two["curve"]):
            for key in keys:
                assert r2[key] == pytest.approx(r1[key], rel=1e-4, abs=1e-5), (path, r1, r2)
        assert two["val_ppl"] == pytest.approx(one["val_ppl"], rel=1e-3)


def test_config_errors():
    with pytest.raises(ValueError, match=r"unknown config key 'stepz' \(did you mean 'steps'\?\)"):
        load_example_config(None, ["stepz=3"])
    with pytest.raises(ValueError, match="methods must be"):
        load_example_config(None, ["methods=[kd,uskd]"])
    with pytest.raises(ValueError, match="student.hidden .* multiple of student.heads"):
        load_example_config(None, ["student.hidden=10", "student.heads=3"])
    with pytest.raises(ValueError, match="steps must be a number"):
        load_example_config(None, ["steps=many"])
    cfg = load_example_config(None, ["hyperparameters.kd.temperature=2", "seeds=[3,4]"], quick=True)
    assert cfg.hyperparameters == {"kd": {"temperature": 2}} and cfg.seeds == [3, 4] and cfg.steps == 8


def test_cli_reports_bad_config(capsys):
    assert main(["lm-distill", "--quick", "methods=[nope]"]) == 1
    assert "unikd lm-distill: error: methods must be" in capsys.readouterr().err
