"""``unikd train`` and ``unikd eval``: help, exit codes, error messages, JSON and table output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from unikd.cli import main


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a loaded 2-core machine: no thread contention
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-epoch tiny_cnn run on a generated npz (4 classes of 8x8 RGB bands), trained through the CLI."""
    tmp = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 16)
    x = rng.integers(0, 255, size=(len(y), 8, 8, 3)).astype(np.uint8)
    np.savez(tmp / "d.npz", x_train=x, y_train=y, x_test=x[::4], y_test=y[::4])
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(["train", "-", "model=tiny_cnn", "data.name=npz", f"data.root={tmp / 'd.npz'}",
                     "data.batch_size=16", "epochs=1", "device=cpu", "tensorboard=false",
                     f"out_dir={tmp / 'run'}"])
    finally:
        torch.set_num_threads(before)
    assert code == 0
    return tmp / "run"


@pytest.mark.parametrize("command", ["train", "eval"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: unikd {command}" in out
    assert ("key=value" in out and "torchrun" in out) if command == "train" else "--json" in out


def test_python_dash_m_entry_point():
    done = subprocess.run([sys.executable, "-m", "unikd", "train", "--help"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0 and "usage: unikd train" in done.stdout


def test_train_rejects_unknown_keys_with_the_closest_one(capsys):
    assert main(["train", "-", "optim.lrr=0.1"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'optim.lrr'" in err and "Did you mean 'optim.lr'?" in err
    assert main(["train", "missing.yaml"]) == 2
    assert "config file 'missing.yaml' does not exist" in capsys.readouterr().err
    assert main(["train", "-", "--bogus"]) == 2


def test_print_config(capsys):
    assert main(["train", "-", "method=nkd", "loss.gamma=3.5", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "method: nkd" in out and "gamma: 3.5" in out


def test_train_prints_summary_and_eval_reads_the_checkpoint(run, capsys):
    summary = json.loads((run / "summary.json").read_text())
    assert summary["finished"]
    assert main(["eval", str(run / "best.pt"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"top1", "top5", "nll", "ece", "count", "model", "data", "split"} <= set(result)
    # evaluating the same checkpoint on the same split reproduces the run's own validation numbers
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert result["top1"] == pytest.approx(last["val/top1"])
    assert result["nll"] == pytest.approx(last["val/nll"])
    assert result["split"] == "test" and result["count"] == 16
    assert main(["eval", str(run / "best.pt"), "--split", "train"]) == 0
    table = capsys.readouterr().out
    assert "top-1" in table and "ECE (15 bins)" in table and "(train, 64 images)" in table


def test_eval_errors(run, tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nope.pt")]) == 1
    assert "does not exist" in capsys.readouterr().err
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(2)}, plain)
    assert main(["eval", str(plain)]) == 1
    assert "not a unikd checkpoint" in capsys.readouterr().err
    assert main(["eval", str(run / "best.pt"), "--data", "digits"]) == 1  # 10 classes vs the model's 4
    assert "has 4 classes but dataset 'digits' has 10" in capsys.readouterr().err


def test_eval_samples_per_class_zero_means_every_image(run, tmp_path, capsys):
    sub = tmp_path / "sub"
    overrides = ["data.samples_per_class=2", "data.batch_size=4", f"out_dir={sub}", "resume=no"]
    code = main(["train", str(run / "config.yaml"), *overrides])
    assert code == 0
    capsys.readouterr()
    assert main(["eval", str(sub / "best.pt"), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["count"] == 8  # the run's own subset: 2 per class of 4 classes
    assert "eval" in captured.err  # the progress line (plain, since stderr is not a terminal here)
    assert main(["eval", str(sub / "best.pt"), "--json", "--samples-per-class", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 16  # the whole test split
    assert main(["eval", str(sub / "best.pt"), "--samples-per-class", "-1"]) == 1
    assert "samples_per_class must be >= 0" in capsys.readouterr().err
