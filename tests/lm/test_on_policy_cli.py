"""``unikd lm-distill on_policy=... seq_kd=...`` on the built-in example (the --quick sizes)."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from unikd.cli import main  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def on_policy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lm") / "on-policy"
    argv = [
        "lm-distill",
        "--quick",
        "--out",
        str(out),
        "threads=1",
        "methods=[ce,reverse_kl]",
        "on_policy=1.0",
        "generation.max_new_tokens=8",
        "generation.prompt_length=8",
        "sample_eval=8",
    ]
    assert main(argv) == 0
    return out, argv


def test_every_batch_of_the_distilled_student_is_sampled(on_policy_run):
    out, _ = on_policy_run
    result = json.loads((out / "runs" / "reverse_kl" / "seed0" / "result.json").read_text())
    gen = result["generation"]
    assert gen["student"] == 8 and gen["teacher"] == 0 and gen["data"] == 0  # --quick: 8 steps
    assert 0 < gen["generated_tokens"] <= 8 * 8 * 8 and gen["seconds"] > 0
    assert math.isfinite(result["val_sample_nll"]) and result["val_sample_tokens"] > 0
    assert {"ce", "reverse_kl"} <= result["curve"][0].keys()
    ce = json.loads((out / "runs" / "ce" / "seed0" / "result.json").read_text())
    assert "generation" not in ce and math.isfinite(ce["val_sample_nll"])  # CE trains on the data


def test_a_folder_of_another_version_resumes(on_policy_run, capsys):
    """settings.json written before on_policy / seq_kd existed: their defaults (0) are assumed there."""
    out, argv = on_policy_run
    path = out / "settings.json"
    saved = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in saved.items() if k not in ("on_policy", "seq_kd")}))
    try:
        assert main(argv) == 1 and "on_policy: 0.0 there, 1.0 now" in capsys.readouterr().err
        plain = [a for a in argv if a != "on_policy=1.0"] + ["methods=[ce]"]
        assert main(plain) == 0 and "[lm] ce seed 0" not in capsys.readouterr().out  # resumed: nothing to run
    finally:
        path.write_text(json.dumps(saved))


def test_bad_fractions_fail_with_the_reason(tmp_path, capsys):
    argv = ["lm-distill", "--quick", "--out", str(tmp_path / "x"), "on_policy=0.7", "seq_kd=0.6"]
    assert main(argv) == 1
    assert "on_policy + seq_kd" in capsys.readouterr().err
