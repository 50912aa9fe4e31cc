"""data.transfer: the spec and its errors, the transfer set (resized to the task, the task's statistics and
classes, placeholder labels, channel conversion, the limit draw, the task's validation images held out of a
same-source set) and the config checks of a run that trains on one (what needs labels, what is refused)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from unikd.data import ArrayDataset, build_transfer_set, create_dataset, parse_transfer
from unikd.data.transfer import convert_channels, describe_transfer
from unikd.engine import load_config
from unikd.engine.loop.setup import build_datasets


def _npz(path: Path, *, channels: int = 3, size: int = 12, classes: int = 5, per_class: int = 6) -> Path:
    rng = np.random.default_rng(0)
    shape = (classes * per_class, size, size) + ((channels,) if channels > 1 else ())
    x = rng.integers(0, 256, size=shape, dtype=np.uint8)
    y = np.repeat(np.arange(classes), per_class)
    np.savez(path, x_train=x, y_train=y, x_test=x[:classes], y_test=y[:classes])
    return path


def _task(channels=1, size=8, n=6):
    images = torch.zeros(n, channels, size, size, dtype=torch.uint8)
    return ArrayDataset(images, torch.arange(n) % 3, ["a", "b", "c"], [0.3] * channels, [0.2] * channels,
                        name="task", split="train")


def test_the_spec_and_its_errors():
    spec = parse_transfer({"name": "npz", "root": "x.npz", "limit": 10, "channels": 3})
    assert (spec.name, spec.root, spec.split, spec.limit, spec.channels) == ("npz", "x.npz", "train", 10, 3)
    assert parse_transfer(None) is None
    for raw, match in [
        ({"name": "npz", "lmit": 3}, "unknown config key 'data.transfer.lmit'.*Did you mean "
                                     "'data.transfer.limit'"),
        ({"name": "imagenet"}, "data.transfer.name must name a dataset"),
        ({"name": "npz", "split": "val"}, "split must be train or test"),
        ({"name": "npz", "channels": 2}, "converts images to 1 .grey. or 3 .RGB. channels"),
        ({"name": "npz", "limit": 0}, "limit must be a positive integer"),
        ({"name": "npz", "samples_per_class": 1.5}, "samples_per_class must be a positive integer"),
        ("cifar100", "must be a mapping"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse_transfer(raw)


def test_a_transfer_set_takes_the_tasks_format(tmp_path):
    src = _npz(tmp_path / "grey.npz", channels=1, size=12)
    task = _task(channels=1, size=8)
    out = build_transfer_set(parse_transfer({"name": "npz", "root": str(src)}), task, seed=0)
    assert tuple(out.images.shape) == (30, 1, 8, 8)  # resized to the task's (the teacher's) size
    assert out.classes == task.classes and out.mean == task.mean and out.std == task.std
    assert torch.equal(out.labels, torch.zeros(30, dtype=torch.long))  # placeholders, never read
    full = create_dataset("npz", root=str(src), resize=8)
    assert torch.equal(out.images, full.images)
    assert out.transfer_source["images"] == 30 and out.transfer_source["channels"] == 1
    text = describe_transfer(out, "digits")
    assert text.startswith(f"student trains on npz {src} (train split): 30 images, labels ignored, "
                           "resized to 8x8")
    assert text.endswith("validation and test: digits") and describe_transfer(task, "x") is None


def test_limit_draws_a_seeded_subset_in_source_order(tmp_path):
    src = _npz(tmp_path / "rgb.npz", channels=3)
    task = _task(channels=3, size=12)
    full = build_transfer_set(parse_transfer({"name": "npz", "root": str(src)}), task, seed=0)
    a = build_transfer_set(parse_transfer({"name": "npz", "root": str(src), "limit": 7}), task, seed=0)
    b = build_transfer_set(parse_transfer({"name": "npz", "root": str(src), "limit": 7}), task, seed=1)
    again = build_transfer_set(parse_transfer({"name": "npz", "root": str(src), "limit": 7, "seed": 0}), task,
                               seed=5)
    assert len(a) == 7 and torch.equal(a.images, again.images) and not torch.equal(a.images, b.images)
    rows = [next(i for i in range(len(full)) if torch.equal(full.images[i], img)) for img in a.images]
    assert rows == sorted(rows)
    spc = build_transfer_set(parse_transfer({"name": "npz", "root": str(src), "samples_per_class": 2}), task,
                             seed=0)
    assert len(spc) == 10  # balanced by the source's own labels: 2 of each of its 5 classes


def test_channels_must_match_or_be_converted(tmp_path):
    rgb = _npz(tmp_path / "rgb.npz", channels=3, size=8)
    with pytest.raises(ValueError, match=r"npz images have 3 channel\(s\) but the task's \(task\) have 1.*"
                                         r"set data.transfer.channels=1 to convert to grey"):
        build_transfer_set(parse_transfer({"name": "npz", "root": str(rgb)}), _task(channels=1), seed=0)
    grey = _npz(tmp_path / "grey.npz", channels=1, size=8)
    with pytest.raises(ValueError, match="set data.transfer.channels=3 to repeat the grey channel"):
        build_transfer_set(parse_transfer({"name": "npz", "root": str(grey)}), _task(channels=3), seed=0)
    spec = parse_transfer({"name": "npz", "root": str(grey), "channels": 3})
    out = build_transfer_set(spec, _task(channels=3), seed=0)
    assert out.images.shape[1] == 3 and torch.equal(out.images[:, 0], out.images[:, 2])
    x = torch.tensor([[[[10]], [[200]], [[50]]]], dtype=torch.uint8)
    assert int(convert_channels(x, 1)) == round(0.299 * 10 + 0.587 * 200 + 0.114 * 50)


def _cfg(tmp_path, *extra):
    return load_config(None, ["model=tiny_cnn", "data.name=digits", "data.val_split=10", "device=cpu",
                              f"out_dir={tmp_path}", "teacher.model=tiny_cnn", "teacher.checkpoint=t.pt",
                              "method=kd", *extra])


def test_a_same_source_transfer_set_leaves_the_validation_images_out(tmp_path):
    train, val = build_datasets(_cfg(tmp_path, "data.transfer={name: digits}", "loss.ce_weight=0"))
    task_train, task_val = build_datasets(_cfg(tmp_path, "loss.ce_weight=0"))
    assert torch.equal(train.images, task_train.images) and torch.equal(val.images, task_val.images)
    assert train.transfer_source["held_out_validation"] and not bool(train.labels.any())
    # the nested override form sets one key of the mapping
    cfg = _cfg(tmp_path, "data.transfer.name=digits", "data.transfer.limit=100", "loss.ce_weight=0")
    assert cfg.data.transfer == {"name": "digits", "limit": 100}
    assert len(build_datasets(cfg)[0]) == 100


@pytest.mark.parametrize(
    "extra, match",
    [
        ([], r"no labels, so the cross-entropy \(loss.ce_weight=1\) has nothing to learn from: set "
             "loss.ce_weight=0 .* or loss.target=teacher_argmax"),
        (["method=ls", "teacher.model=null", "teacher.checkpoint=null"], "data.transfer trains the student"),
        (["method=ls"], r"cross-entropy with label smoothing \(method=ls\)"),
        (["method=nkd", "loss.ce_weight=0"],
         r"term\(s\) nkd read the target class.*loss.target=teacher_argmax"),
        (["loss.target=labels", "loss.ce_weight=0"], "loss.target=labels cannot be met"),
        (["loss.ce_weight=0", "data.drop_classes=[1]"], "a transfer set has no classes"),
        (["loss.ce_weight=0", "data.loader=torch"], "needs data.loader=memory"),
        (["loss.ce_weight=0", "teacher.model=null", "teacher.checkpoint=null"], "set teacher.model"),
        (["loss.ce_weight=0", "data.transfer.split=test"], "would train on the images it is tested on"),
    ],
)
def test_runs_that_would_read_missing_labels_are_refused(tmp_path, extra, match):
    with pytest.raises(ValueError, match=match):
        _cfg(tmp_path, "data.transfer={name: digits}", *extra)


def test_what_a_transfer_run_accepts(tmp_path):
    ok = [["loss.ce_weight=0"], ["loss.target=teacher_argmax"], ["method=nkd", "loss.target=teacher_argmax"],
          ["loss.ce_weight=0", "data.transfer.split=test", "data.transfer.name=npz",
           "data.transfer.root=x.npz"]]
    for extra in ok:
        cfg = _cfg(tmp_path, "data.transfer={name: digits}", *extra)
        assert cfg.data.transfer["name"] in ("digits", "npz")
    written = _cfg(tmp_path, "data.transfer={name: digits}", "loss.ce_weight=0").to_dict()
    assert written["data"]["transfer"] == {"name": "digits"} and "target" not in written["loss"]
    plain = _cfg(tmp_path).to_dict()  # configs without the options read as before they existed
    assert "transfer" not in plain["data"] and "target" not in plain["loss"] and "selection" not in plain
    with pytest.raises(ValueError, match="loss.target='teacher' is not valid"):
        _cfg(tmp_path, "loss.target=teacher")
    with pytest.raises(ValueError, match="selection.threshold is set but selection.method is not"):
        _cfg(tmp_path, "selection.threshold=0.7")
    with pytest.raises(ValueError, match=r"selection.threshold must be in \(0, 1\]"):
        _cfg(tmp_path, "selection.method=kd3", "selection.threshold=0")
    with pytest.raises(ValueError, match="selection needs the teacher's predictions"):
        _cfg(tmp_path, "selection.method=kd3", "teacher.model=null", "teacher.checkpoint=null")
