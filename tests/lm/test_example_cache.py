"""``unikd lm-distill sparse_teacher.folder=...``: students trained from the example's cached teacher."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from unikd.cli import main  # noqa: E402
from unikd.token import SparseTeacherCache, SparseTeacherWriter  # noqa: E402

pytestmark = pytest.mark.slow
BASE = ["threads=1", "methods=[kd]"]


def _run(out, *overrides) -> int:
    return main(["lm-distill", "--quick", "--out", str(out), *BASE, *overrides])


def _result(out) -> dict:
    return json.loads((out / "runs" / "kd" / "seed0" / "result.json").read_text())


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A quick run with the live teacher; its data and teacher are copied into every cached run."""
    out = tmp_path_factory.mktemp("lmcache") / "live"
    assert _run(out) == 0
    return out


def _sibling(live, name: str):
    out = live.parent / name
    for stage in ("data", "teacher"):
        shutil.copytree(live / stage, out / stage)
    return out


def test_an_exact_cache_trains_the_live_teachers_student(live):
    """k = V - 1 in fp32 holds the whole distribution: the student is the live teacher's (up to rounding)."""
    vocab = json.loads((live / "data" / "corpus.json").read_text())["vocab_size"]
    out = _sibling(live, "exact")
    assert (
        _run(out, "sparse_teacher.folder=cache", f"sparse_teacher.k={vocab - 1}", "sparse_teacher.dtype=fp32")
        == 0
    )
    cached, dense = _result(out), _result(live)
    assert cached["sparse_teacher"]["mode"] == "topk" and cached["sparse_teacher"]["k"] == vocab - 1
    assert "sparse_teacher" not in dense
    assert cached["val_ppl"] == pytest.approx(dense["val_ppl"], rel=1e-4)
    assert cached["curve"][-1]["kd"] == pytest.approx(dense["curve"][-1]["kd"], rel=1e-3)


def test_a_sampled_cache_trains_and_says_so(live):
    out = _sibling(live, "sampled")
    assert _run(out, "sparse_teacher.folder=cache", "sparse_teacher.mode=sample", "sparse_teacher.k=4") == 0
    record = _result(out)["sparse_teacher"]
    assert record == {"folder": str(out / "cache"), "mode": "sample", "k": 4, "bytes_per_token": 18}
    cache = SparseTeacherCache(out / "cache")
    assert cache.manifest["sampling"]["draws"] == 3 and 1.0 < _result(out)["val_ppl"] < 10_000


def test_an_interrupted_build_resumes_and_equals_an_uninterrupted_one(live, monkeypatch, capsys):
    whole = _sibling(live, "whole")
    assert (
        _run(whole, "sparse_teacher.folder=cache", "sparse_teacher.k=8", "sparse_teacher.batch_size=16") == 0
    )
    out = _sibling(live, "resumed")
    calls = {"n": 0}
    write = SparseTeacherWriter.write

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("interrupted")
        return write(self, *args, **kwargs)

    monkeypatch.setattr(SparseTeacherWriter, "write", failing)
    args = ("sparse_teacher.folder=cache", "sparse_teacher.k=8", "sparse_teacher.batch_size=16")
    with pytest.raises(RuntimeError, match="interrupted"):
        _run(out, *args)
    assert not (out / "cache" / "manifest.json").exists() and (out / "cache" / ".tokens.npy.partial").exists()
    monkeypatch.setattr(SparseTeacherWriter, "write", write)
    capsys.readouterr()
    assert _run(out, *args) == 0
    total = np.load(whole / "cache" / "tokens.npy").shape[0]
    assert f"{total - 32} of {total} sequences written" in capsys.readouterr().out  # 2 batches of 16 kept
    a, b = (np.load(f / "cache" / "tokens.npy") for f in (whole, out))
    assert a.tobytes() == b.tobytes()
    assert _result(out)["val_ppl"] == _result(whole)["val_ppl"]


def test_a_cache_of_other_settings_is_refused(live, capsys):
    first = _sibling(live, "first")
    assert _run(first, "sparse_teacher.folder=cache", "sparse_teacher.k=8") == 0
    other = _sibling(live, "other")
    capsys.readouterr()
    assert _run(other, f"sparse_teacher.folder={first / 'cache'}", "sparse_teacher.k=16") == 1
    err = capsys.readouterr().err
    assert "k" in err and "overwrite=True" in err
    # mode=read uses it as written, whatever k the settings name
    reader = _sibling(live, "reader")
    assert _run(reader, f"sparse_teacher.folder={first / 'cache'}", "sparse_teacher.mode=read") == 0
    assert _result(reader)["sparse_teacher"]["k"] == 8


def test_a_cache_of_another_teacher_is_refused(live, capsys):
    first = live.parent / "first"  # built by the test above (or here)
    if not (first / "cache" / "manifest.json").exists():
        assert _run(_sibling(live, "first"), "sparse_teacher.folder=cache", "sparse_teacher.k=8") == 0
    out = live.parent / "retrained"
    shutil.copytree(live / "data", out / "data")  # the same blocks, a teacher trained for one more step
    capsys.readouterr()
    assert (
        _run(out, "teacher_steps=21", f"sparse_teacher.folder={first / 'cache'}", "sparse_teacher.k=8") == 1
    )
    assert "teacher_sha256" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["sparse_teacher.folder=c", "on_policy=1.0"], "on_policy=0 and seq_kd=0"),
        (["sparse_teacher.folder=c", "seq_kd=0.5"], "no cache holds"),
        (["sparse_teacher.mode=topk8"], "sparse_teacher.mode must be one of"),
        (["sparse_teacher.mode=sample", "sparse_teacher.k=1"], "k - 1 draws plus a label slot"),
        (["sparse_teacher.dtype=int8"], "sparse_teacher.dtype must be one of"),
        (["sparse_teacher.folder=c", "teacher=some/model"], "DistillationTrainer(student, None"),
        (["sparse_teacher.foldr=c"], "did you mean 'folder'"),
    ],
)
def test_bad_settings_fail_before_any_stage(tmp_path, capsys, overrides, message):
    out = tmp_path / "bad"
    assert main(["lm-distill", "--quick", "--out", str(out), *overrides]) == 1
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_read_mode_needs_a_complete_cache(live, capsys):
    out = _sibling(live, "readmissing")
    assert _run(out, "sparse_teacher.folder=nowhere", "sparse_teacher.mode=read") == 1
    assert "not a complete sparse-teacher cache" in capsys.readouterr().err
