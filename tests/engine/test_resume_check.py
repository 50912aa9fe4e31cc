"""Resume continues the run that wrote the checkpoint under the settings it was made with, or fails before
training naming each difference: another run's last.pt copied into the folder (issue 25, 1a), changed
hyperparameters (1b), another optimiser (1c, once a raw KeyError). Extending epochs and the other keys of
RESUME_FREE_KEYS still resume; checkpoints from before run ids still resume."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from harness_support import REPO, base_overrides

from unikd.engine import load_config, train
from unikd.engine.config import valid_keys
from unikd.engine.loop.resume_check import RESUME_FREE_KEYS, config_changes
from unikd.engine.run.checkpoint import atomic_save, load_checkpoint
from unikd.engine.run.identity import RUN_FILE, read_run_id


def _train(npz: Path, out: Path, **opts: object) -> dict:
    return train(load_config(None, base_overrides(npz, out, **opts)))


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_another_runs_checkpoint_copied_into_the_folder_is_refused(npz_data, tmp_path):  # 1a
    a, c = tmp_path / "A", tmp_path / "C"
    _train(npz_data, a)
    _train(npz_data, c, **{"optim.lr": 0.2, "loss.smoothing": 0})
    shutil.copyfile(c / "last.pt", a / "last.pt")
    before = _files(a)
    with pytest.raises(ValueError) as err:
        _train(npz_data, a, epochs=3, resume="auto")
    msg = str(err.value)
    assert f"another run (run id {read_run_id(c)}, trained in {c})" in msg
    assert f"(run id {read_run_id(a)})" in msg
    assert "optim.lr 0.2 -> 0.05" in msg and "loss.smoothing 0.0 -> 0.1" in msg
    assert _files(a) == before  # refused before anything was written


def test_another_runs_checkpoint_is_refused_even_when_the_configs_match(npz_data, tmp_path):
    a, b = tmp_path / "A", tmp_path / "B"
    _train(npz_data, a)
    _train(npz_data, b)
    shutil.copyfile(b / "last.pt", a / "last.pt")
    with pytest.raises(ValueError, match=r"written by another run .*never continued\. To go on: start over "
                                         r"with resume=no overwrite=true .*; or train into another out_dir"):
        _train(npz_data, a, epochs=3, resume="auto")


def test_resume_with_other_hyperparameters_fails_naming_each_key(npz_data, tmp_path):  # 1b
    _train(npz_data, tmp_path)
    config = (tmp_path / "config.yaml").read_text()
    with pytest.raises(ValueError) as err:
        _train(npz_data, tmp_path, epochs=3, resume="auto", **{"optim.lr": 0.5, "loss.smoothing": 0})
    msg = str(err.value)
    assert "its run was made with other settings (loss.smoothing 0.1 -> 0.0, optim.lr 0.05 -> 0.5)" in msg
    assert f"its own settings, e.g. unikd train {tmp_path / 'config.yaml'} resume=auto" in msg
    assert "resume=no overwrite=true" in msg
    assert "another out_dir" in msg and "another run" not in msg
    assert (tmp_path / "config.yaml").read_text() == config  # still describes the run


def test_resume_with_another_optimiser_is_one_clear_line_not_a_traceback(npz_data, tmp_path, capsys):  # 1c
    from unikd.cli import main

    _train(npz_data, tmp_path)
    capsys.readouterr()
    code = main(["train", "-", *base_overrides(npz_data, tmp_path, epochs=3, resume="auto",
                                               **{"optim.name": "adamw"})])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("unikd train: error: cannot resume from") and len(err.strip().splitlines()) == 1
    assert "optim.name 'sgd' -> 'adamw'" in err and "KeyError" not in err and "Traceback" not in err


def test_free_keys_may_change_and_the_run_keeps_its_id(npz_data, tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    _train(npz_data, ref, epochs=3)
    _train(npz_data, run)
    run_id = read_run_id(run)
    _train(npz_data, run, epochs=3, resume="auto", checkpoint_every=3, tensorboard="auto",
           **{"data.num_workers": 0})
    assert read_run_id(run) == run_id
    assert load_checkpoint(run / "last.pt")["run_id"] == load_checkpoint(run / "best.pt")["run_id"] == run_id
    assert "epochs: 3" in (run / "config.yaml").read_text()
    # extending a multistep run continues exactly as the run started with the larger epochs
    a, b = load_checkpoint(ref / "last.pt")["model"], load_checkpoint(run / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_from_before_run_ids_resumes_on_the_config_check(npz_data, tmp_path):
    _train(npz_data, tmp_path)
    ckpt = load_checkpoint(tmp_path / "last.pt")
    del ckpt["run_id"]
    atomic_save(ckpt, tmp_path / "last.pt")  # as an older unikd wrote it: no run id, no run.json
    (tmp_path / RUN_FILE).unlink()
    with pytest.raises(ValueError, match=r"optim.lr 0.05 -> 0.5"):  # the config check still applies
        _train(npz_data, tmp_path, epochs=3, resume="auto", **{"optim.lr": 0.5})
    assert _train(npz_data, tmp_path, epochs=3, resume="auto")["finished"]
    run_id = read_run_id(tmp_path)  # from now on the run has an id, in run.json and its checkpoints
    assert run_id and load_checkpoint(tmp_path / "last.pt")["run_id"] == run_id


def test_resume_from_a_path_into_a_new_folder_is_a_new_run_started_from_it(npz_data, tmp_path):
    src, fork = tmp_path / "src", tmp_path / "fork"
    _train(npz_data, src)
    _train(npz_data, fork, epochs=3, resume=str(src / "last.pt"))
    record = json.loads((fork / RUN_FILE).read_text())
    assert record["run_id"] != read_run_id(src)
    assert record["resumed_from"] == {"run_id": read_run_id(src), "checkpoint": str(src / "last.pt")}


def test_config_changes_compare_flattened_keys_over_the_defaults():
    cfg = load_config(None, ["method=kd", "loss.temperature=2", "epochs=9", "device=cpu"])
    stored = load_config(None, ["method=kd", "loss.temperature=4"]).to_dict()
    del stored["data"]["random_erasing"]  # a key added to the schema after the checkpoint: its default
    stored["sched"]["milestones"] = tuple(stored["sched"]["milestones"])  # tuples and lists compare alike
    assert config_changes(stored, cfg) == [("loss.temperature", 4.0, 2.0)]


def test_free_keys_are_config_keys_and_documented():
    assert RESUME_FREE_KEYS <= set(valid_keys())
    text = (REPO / "docs" / "training.md").read_text()
    section = text[text.index("## Resume"):text.index("## Integrity")]
    documented = set(re.findall(r"`([a-z_.]+)`", section))
    assert RESUME_FREE_KEYS <= documented, RESUME_FREE_KEYS - documented
