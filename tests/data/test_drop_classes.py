"""data.drop_classes: which classes a list or a count names, the dataset without them, the run's splits (the
training split alone loses them), what the training stream yields, the config keys and their errors."""

from __future__ import annotations

import pytest
import torch

from unikd.data import ArrayDataset, InMemoryLoader, apply_drop, drop_classes, resolve_drop_classes
from unikd.engine import load_config
from unikd.engine.loop.setup import build_datasets


def _toy(n_classes=5, per_class=4):
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    images = torch.arange(len(labels), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()
    return ArrayDataset(images, labels, [f"c{i}" for i in range(n_classes)], [0.5], [0.25], name="toy",
                        split="train")


def test_a_list_names_the_classes():
    assert resolve_drop_classes([5, 3], 10) == (3, 5)
    assert resolve_drop_classes(None, 10) == ()


def test_a_count_draws_distinct_classes_from_its_seed_alone():
    drawn = {seed: resolve_drop_classes(3, 100, seed) for seed in range(20)}
    for classes in drawn.values():
        assert len(set(classes)) == 3 and all(0 <= c < 100 for c in classes)
        assert list(classes) == sorted(classes)
    assert resolve_drop_classes(3, 100) == drawn[0]  # default drop_seed 0
    assert resolve_drop_classes(3, 100, 7) == drawn[7]  # a pure function of (count, classes, seed)
    assert len(set(drawn.values())) > 15  # other seeds, other classes
    assert resolve_drop_classes(9, 10, 0) == tuple(sorted(resolve_drop_classes(9, 10, 0)))


@pytest.mark.parametrize(
    "spec, seed, match",
    [
        ([3, 10], None, r"lists \[10\], outside the classes 0..9"),
        ([-1], None, r"lists \[-1\], outside"),
        ([3, 5, 3], None, r"class\(es\) \[3\] more than once"),
        (list(range(10)), None, "lists all 10 classes"),
        ([], None, "must list class indices"),
        ([1.5], None, "must list class indices"),
        (0, None, "give a count in 1..9"),
        (10, None, "give a count in 1..9"),
        ([3], 1, "drop_seed only draws the classes of a count"),
        (None, 1, "drop_seed is set but data.drop_classes is not"),
    ],
)
def test_bad_specs_are_clear_errors(spec, seed, match):
    with pytest.raises(ValueError, match=match):
        resolve_drop_classes(spec, 10, seed)


def test_the_dataset_loses_exactly_those_samples():
    ds = _toy()
    out = drop_classes(ds, [1, 3])
    assert out.dropped_classes == (1, 3) and out.dropped_samples == 8 and len(out) == 12
    assert set(out.labels.tolist()) == {0, 2, 4}
    keep = (ds.labels != 1) & (ds.labels != 3)
    assert torch.equal(out.images, ds.images[keep]) and torch.equal(out.labels, ds.labels[keep])  # order kept
    assert (out.classes, out.num_classes, out.mean, out.std) == (ds.classes, 5, ds.mean, ds.std)
    assert out.content_hash != ds.content_hash
    assert drop_classes(ds, []) is ds and ds.dropped_classes == () and apply_drop(ds, None, None) is ds


def _cfg(tmp_path, *extra):
    return load_config(None, ["model=tiny_cnn", "data.name=digits", "data.val_split=10", "device=cpu",
                              f"out_dir={tmp_path}", *extra])


def test_only_the_training_split_loses_the_classes(tmp_path):
    train, val = build_datasets(_cfg(tmp_path, "data.drop_classes=[3, 5]"))
    full, full_val = build_datasets(_cfg(tmp_path))
    assert train.dropped_classes == (3, 5) and train.num_classes == 10
    assert not bool(((train.labels == 3) | (train.labels == 5)).any())
    assert len(train) == len(full) - int(((full.labels == 3) | (full.labels == 5)).sum())
    assert torch.equal(val.labels, full_val.labels) and set(val.labels.tolist()) == set(range(10))
    assert (train.mean, train.std) == (full.mean, full.std)  # normalised as the teacher's data


def test_the_training_stream_never_shows_a_dropped_class(tmp_path):
    train, _ = build_datasets(_cfg(tmp_path, "data.drop_classes=2", "data.drop_seed=4"))
    dropped = list(resolve_drop_classes(2, 10, 4))
    assert train.dropped_classes == tuple(dropped)
    # with mixup every partner comes from the same (reduced) split, so no label mass reaches a dropped class
    loader = InMemoryLoader(train, 64, train=True, seed=0, mixup_alpha=1.0)
    for epoch in range(2):
        loader.set_epoch(epoch)
        for batch in loader:
            assert float(batch.target[:, dropped].abs().sum()) == 0.0
            assert not bool(torch.isin(train.labels[batch.index], torch.tensor(dropped)).any())


def test_config_keys_round_trip_and_stay_out_of_other_configs(tmp_path):
    from unikd.engine.config import config_to_yaml

    plain = _cfg(tmp_path)
    assert "drop_classes" not in plain.to_dict()["data"] and "drop_seed" not in plain.to_dict()["data"]
    cfg = _cfg(tmp_path, "data.drop_classes=2", "data.drop_seed=3")
    assert (cfg.data.drop_classes, cfg.data.drop_seed) == (2, 3)
    (tmp_path / "c.yaml").write_text(config_to_yaml(cfg))
    assert load_config(tmp_path / "c.yaml") == cfg
    assert _cfg(tmp_path, "data.drop_classes=[3, 5]").data.drop_classes == [3, 5]
    assert _cfg(tmp_path, "data.drop_classes=[]").data.drop_classes is None
    with pytest.raises(ValueError, match="data.drop_classes"):
        _cfg(tmp_path, "data.drop_classes=abc")
    with pytest.raises(ValueError, match=r"outside the classes 0..9"):
        build_datasets(_cfg(tmp_path, "data.drop_classes=[12]"))
