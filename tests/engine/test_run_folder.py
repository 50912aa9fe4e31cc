"""One writer per run folder, no run silently replaced, unique default folders, and resume=auto falling back
to last.prev.pt when last.pt is damaged."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from harness_support import base_overrides, subprocess_env, train_command

from unikd.engine import load_config, train
from unikd.engine.run.checkpoint import load_checkpoint


def _train(npz: Path, out: Path | None, **opts: object) -> dict:
    overrides = base_overrides(npz, out or Path("unused"), **opts)
    if out is None:
        overrides = [o for o in overrides if not o.startswith("out_dir=")]
    return train(load_config(None, overrides))


def _start_long_run(npz: Path, out: Path, **opts: object) -> subprocess.Popen:
    """A run that keeps going for a while; returns once it has written its config (it is past setup)."""
    cmd = train_command(base_overrides(npz, out, epochs=500, **opts))
    proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while not (out / "config.yaml").exists():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "the first run did not start"
        time.sleep(0.1)
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("resume", ["auto", "no"])
def test_second_writer_fails_at_once_naming_the_first(npz_data, tmp_path, resume):
    first = _start_long_run(npz_data, tmp_path)
    try:
        t0 = time.monotonic()
        second = subprocess.run(train_command(base_overrides(npz_data, tmp_path, resume=resume)),
                                env=subprocess_env(), capture_output=True, text=True, timeout=120)
        assert second.returncode != 0, "two writers ran into one out_dir"
        assert f"pid {first.pid}" in second.stderr, second.stderr[-2000:]
        assert time.monotonic() - t0 < 60  # at once: before loading data or building models matters little
        assert first.poll() is None  # the first run was not disturbed
    finally:
        first.terminate()
        first.wait(timeout=60)


def test_temp_files_are_swept_only_when_their_writer_is_dead(npz_data, tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        tmp_path.mkdir(exist_ok=True)
        live_tmp = tmp_path / f".last.pt.{sleeper.pid}.0123abcd.tmp"
        dead_tmp = tmp_path / f".last.pt.{dead.pid}.0123abcd.tmp"
        live_tmp.write_bytes(b"being written")
        dead_tmp.write_bytes(b"left by a killed writer")
        _train(npz_data, tmp_path, epochs=1)
        assert live_tmp.exists() and not dead_tmp.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_folder_holding_a_run_needs_resume_or_overwrite(npz_data, tmp_path, monkeypatch):
    _train(npz_data, tmp_path, epochs=1)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(ValueError, match=r"already holds a run .*resume=auto.*overwrite=true"):
        _train(npz_data, tmp_path, epochs=1, seed=1)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before  # untouched

    # overwrite=true deletes the old run first: a new run killed early never shows the old summary
    from unikd.engine.loop.trainer import Trainer

    def killed(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "fit", killed)
    with pytest.raises(KeyboardInterrupt):
        _train(npz_data, tmp_path, epochs=1, seed=1, overwrite="true")
    monkeypatch.undo()
    assert not (tmp_path / "summary.json").exists() and not (tmp_path / "best.pt").exists()
    from unikd.bench import load_run

    run = load_run(tmp_path)
    assert run is None or not run.finished
    assert "seed: 1" in (tmp_path / "config.yaml").read_text()


def test_overwrite_with_resume_is_a_config_error(npz_data, tmp_path):
    with pytest.raises(ValueError, match="overwrite=true starts the run over"):
        load_config(None, base_overrides(npz_data, tmp_path, overwrite="true", resume="auto"))


def test_default_out_dir_is_unique_per_run(npz_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config(None, []).out_dir is None
    _train(npz_data, None, epochs=1)
    _train(npz_data, None, epochs=1)
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(runs) == 2 and all(r.startswith("ce-tiny_cnn-") for r in runs), runs
    for r in runs:
        assert json.loads((tmp_path / "runs" / r / "summary.json").read_text())["finished"]


def _state(path: Path) -> dict:
    ckpt = load_checkpoint(path)
    return {"step": ckpt["global_step"], **{f"model.{k}": v for k, v in ckpt["model"].items()}}


def test_resume_auto_falls_back_to_the_previous_checkpoint_when_last_is_damaged(npz_data, tmp_path, caplog):
    ref, run = tmp_path / "ref", tmp_path / "run"
    _train(npz_data, ref, epochs=3)
    _train(npz_data, run, epochs=2)
    assert load_checkpoint(run / "last.prev.pt")["global_step"] == 4
    raw = bytearray((run / "last.pt").read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one flipped bit
    (run / "last.pt").write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, logger="unikd"):
        _train(npz_data, run, epochs=3, resume="auto")
    assert "last.pt' is damaged" in caplog.text and "resuming from" in caplog.text
    assert "last.prev.pt (step 4)" in caplog.text
    # exact resume from step 4: the same weights as the uninterrupted run
    a, b = _state(ref / "last.pt"), _state(run / "last.pt")
    assert a["step"] == b["step"] == 12
    for k in a:
        if k != "step":
            assert torch.equal(a[k], b[k]), k


def test_resume_auto_with_both_checkpoints_damaged_names_both(npz_data, tmp_path):
    _train(npz_data, tmp_path, epochs=2)
    for name in ("last.pt", "last.prev.pt"):
        raw = bytearray((tmp_path / name).read_bytes())
        raw[len(raw) // 2] ^= 0x01
        (tmp_path / name).write_bytes(bytes(raw))
    both = r"no usable checkpoint.*last\.pt: .*damaged.*last\.prev\.pt: .*damaged"
    with pytest.raises(ValueError, match=both):
        _train(npz_data, tmp_path, epochs=3, resume="auto")


def test_checkpoint_without_checksum_resumes_with_a_warning(npz_data, tmp_path, caplog):
    _train(npz_data, tmp_path, epochs=1)
    old = torch.load(tmp_path / "last.pt", weights_only=True)
    torch.save({**old, "version": 1}, tmp_path / "last.pt")  # as unikd 0.1.0 wrote it, before checksums
    with caplog.at_level(logging.WARNING, logger="unikd"):
        summary = _train(npz_data, tmp_path, epochs=2, resume="auto")
    assert summary["epochs"] == 2
    assert "carries no unikd checksum" in caplog.text


def test_damaged_best_checkpoint_fails_eval_by_name(npz_data, tmp_path):
    from unikd.engine import evaluate_checkpoint

    _train(npz_data, tmp_path, epochs=1)
    raw = bytearray((tmp_path / "best.pt").read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + 64] = os.urandom(64)
    (tmp_path / "best.pt").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"best\.pt' is damaged"):
        evaluate_checkpoint(tmp_path / "best.pt", device="cpu")
