"""Cached vs live teacher through the real harness, on a tiny generated dataset (CPU, a few steps).

Exactness: with fp32 full-logit storage, a cached run and a live-teacher run with the same seeds end with
bit-identical student weights (augmentation with mixup on, so every epoch's views differ). With fp16
storage the weights drift in the last bits but the final top-1 stays within noise.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

pytest.importorskip("unikd.losses", reason="needs the losses package")
from unikd.cache import CacheMismatchError, read_manifest  # noqa: E402
from unikd.cache.build import build_teacher_cache  # noqa: E402
from unikd.engine.config import load_config  # noqa: E402
from unikd.engine.loop.trainer import train  # noqa: E402
from unikd.engine.run.checkpoint import load_checkpoint  # noqa: E402

pytestmark = pytest.mark.slow
CLASSES, TRAIN_PER_CLASS, TEST_PER_CLASS = 5, 16, 40


def _make_npz(path):
    """Coloured blobs: each class has its own mean colour and position, plus noise."""
    g = np.random.default_rng(0)

    def split(per_class):
        xs, ys = [], []
        for c in range(CLASSES):
            img = g.normal(0, 40, size=(per_class, 12, 12, 3)) + 128
            img[:, 2 + c:6 + c, 3:8, c % 3] += 90
            xs.append(img)
            ys += [c] * per_class
        return np.clip(np.concatenate(xs), 0, 255).astype(np.uint8), np.array(ys, dtype=np.int64)

    x_train, y_train = split(TRAIN_PER_CLASS)
    x_test, y_test = split(TEST_PER_CLASS)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def _cfg(tmp, *overrides):
    base = [
        "data.name=npz", f"data.root={tmp / 'data.npz'}", "data.batch_size=16", "data.eval_batch_size=100",
        "data.crop_padding=2", "data.mixup_alpha=0.4", "model=tiny_cnn", "device=cpu", "tensorboard=false",
        "optim.lr=0.05", "sched.name=constant", "epochs=2", "seed=3",
    ]
    return load_config(None, base + list(overrides))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cache_e2e")
    _make_npz(tmp / "data.npz")
    teacher = train(_cfg(tmp, "method=ce", "epochs=3", "data.mixup_alpha=0.0", f"out_dir={tmp / 'teacher'}"))
    assert teacher["finished"]
    kd = (
        "method=kd", "teacher.model=tiny_cnn", f"teacher.checkpoint={tmp / 'teacher' / 'best.pt'}",
        "loss.temperature=4.0",
    )
    cache32 = build_teacher_cache(_cfg(tmp, *kd), tmp / "cache32", dtype="fp32", show_progress=False)
    live = train(_cfg(tmp, *kd, f"out_dir={tmp / 'live'}"))
    return tmp, kd, cache32, live


def _weights(run_dir):
    return load_checkpoint(run_dir / "last.pt")["model"]


def test_fp32_cache_gives_bit_identical_student(setup):
    tmp, kd, cache32, live = setup
    cached = train(_cfg(tmp, *kd, f"teacher.cache={cache32}", f"out_dir={tmp / 'cached32'}"))
    a, b = _weights(tmp / "live"), _weights(tmp / "cached32")
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"cached run differs from the live run in {different[:5]}"
    assert cached["last_top1"] == live["last_top1"]


def test_logit_only_terms_read_the_cache_and_feature_terms_the_live_teacher(setup, caplog):
    tmp, kd, cache32, _ = setup
    teacher = [o for o in kd if o.startswith("teacher.")]
    terms = "loss.terms={kd: {temperature: 4.0}, dkd: {weight: 0.5}}"
    live = train(_cfg(tmp, *teacher, terms, f"out_dir={tmp / 'terms_live'}"))
    with caplog.at_level(logging.INFO, logger="unikd"):
        cached = train(_cfg(tmp, *teacher, terms, f"teacher.cache={cache32}",
                            f"out_dir={tmp / 'terms_cached'}"))
    assert f"teacher source  cache {cache32} (every term needs only the teacher's logits)" in caplog.text
    a, b = _weights(tmp / "terms_live"), _weights(tmp / "terms_cached")
    assert all(torch.equal(a[k], b[k]) for k in a) and cached["last_top1"] == live["last_top1"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="unikd"):
        train(_cfg(tmp, *teacher, "loss.terms={kd: {}, at: {weight: 10}}", f"teacher.cache={cache32}",
                   "epochs=1", f"out_dir={tmp / 'terms_at'}"))
    assert "teacher source  live model (term(s) at read the teacher's features; the cache" in caplog.text


def test_fp16_cache_top1_within_noise(setup):
    tmp, kd, _, live = setup
    cache16 = build_teacher_cache(_cfg(tmp, *kd), tmp / "cache16", show_progress=False)
    assert read_manifest(cache16)["dtype"] == "fp16"
    cached = train(_cfg(tmp, *kd, f"teacher.cache={cache16}", f"out_dir={tmp / 'cached16'}"))
    a, b = _weights(tmp / "live"), _weights(tmp / "cached16")
    # fp16 rounding of the teacher logits must actually reach the student (the test could fail) ...
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())
    # ... yet the final accuracy stays within two binomial standard errors of the test-set size
    n = CLASSES * TEST_PER_CLASS
    p = live["last_top1"] / 100
    noise = 2 * 100 * math.sqrt(max(p * (1 - p), 0.05) / n)
    assert abs(cached["last_top1"] - live["last_top1"]) <= noise


@pytest.mark.parametrize(
    ("override", "field"),
    [("seed=4", "'seed'"), ("epochs=3", "'epochs'"), ("data.mixup_alpha=0.2", "'augment_signature'"),
     ("data.batch_size=8", "'batch_size'"), ("data.samples_per_class=10", "'dataset_hash'")],
)
def test_training_with_a_mismatched_cache_fails_clearly(setup, override, field):
    tmp, kd, cache32, _ = setup
    with pytest.raises(CacheMismatchError, match=field) as err:
        train(_cfg(tmp, *kd, f"teacher.cache={cache32}", override, f"out_dir={tmp / 'bad'}"))
    assert "unikd cache-teacher" in str(err.value)


def test_other_teacher_checkpoint_fails(setup):
    tmp, kd, cache32, _ = setup
    other = tmp / "other_teacher.pt"
    state = load_checkpoint(tmp / "teacher" / "best.pt")["model"]
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in state.items()}, other)
    with pytest.raises(CacheMismatchError, match="'teacher_sha256'"):
        train(_cfg(tmp, *kd, f"teacher.cache={cache32}", f"teacher.checkpoint={other}",
                   f"out_dir={tmp / 'bad'}"))


def test_cli_builds_once_and_reuses(setup, capsys):
    from unikd.cli import main

    tmp, kd, _, _ = setup
    yaml_path = tmp / "kd.yaml"
    yaml_path.write_text("method: kd\n")
    args = ["cache-teacher", str(yaml_path), *_cli_overrides(tmp, kd), "--out", str(tmp / "cli"),
            "--epochs", "1", "--no-progress"]
    assert main(args) == 0
    first = read_manifest(tmp / "cli")
    assert main(args) == 0  # complete: reused, nothing rebuilt
    second = read_manifest(tmp / "cli")
    assert first == second and first["epochs"] == 1 and first["mode"] == "full"
    out = capsys.readouterr().out
    assert "teacher.cache=" in out
    assert main(["cache-teacher", str(yaml_path), *_cli_overrides(tmp, kd), "seed=9", "--out",
                 str(tmp / "cli"), "--epochs", "1", "--no-progress"]) == 2
    assert "'seed'" in capsys.readouterr().err  # errors go to stderr


def _cli_overrides(tmp, kd):
    base = _cfg(tmp)  # noqa: F841 (validates the base overrides once)
    return [
        "data.name=npz", f"data.root={tmp / 'data.npz'}", "data.batch_size=16", "data.crop_padding=2",
        "data.mixup_alpha=0.4", "model=tiny_cnn", "device=cpu", "seed=3", *kd[1:],
    ]


def test_world_size_2_build_replays_each_ranks_batches(setup):
    from unikd.cache import open_teacher_cache
    from unikd.engine.loop import setup as harness
    from unikd.engine.run.distributed import DistInfo

    tmp, kd, cache32, _ = setup
    cfg = _cfg(tmp, *kd)
    ws2 = build_teacher_cache(cfg, tmp / "ws2", dtype="fp32", epochs=1, world_size=2, show_progress=False)
    assert read_manifest(ws2)["identity"]["world_size"] == 2
    train_ds, val_ds = harness.build_datasets(cfg)
    loaders = [harness.build_loaders(cfg, DistInfo(r, 2, 0, torch.device("cpu")), train_ds, val_ds)[0]
               for r in range(2)]
    one = harness.build_loaders(cfg, DistInfo(0, 1, 0, torch.device("cpu")), train_ds, val_ds)[0]
    short = _cfg(tmp, *kd, "epochs=1", f"teacher.cache={ws2}")
    cached = open_teacher_cache(short, loaders[1], "cpu")
    reference = open_teacher_cache(_cfg(tmp, *kd, f"teacher.cache={cache32}"), one, "cpu")
    loaders[1].set_epoch(0)
    for batch in loaders[1]:  # rank 1's rows: same views, so the same logits up to batch-size rounding
        torch.testing.assert_close(cached(batch.images, 0, batch.index), reference(None, 0, batch.index))
    with pytest.raises(CacheMismatchError, match="'world_size' is 2 in the cache but 1"):
        open_teacher_cache(short, one, "cpu")


def test_topk_cache_trains(setup):
    tmp, kd, _, _ = setup
    cfg = _cfg(tmp, *kd, "epochs=1")
    topk = build_teacher_cache(cfg, tmp / "top2", topk=2, show_progress=False)
    m = read_manifest(topk)
    assert (m["mode"], m["k"], m["bytes_per_sample"]) == ("topk", 2, 2 * 2 + 2 * 1 + 2)
    summary = train(_cfg(tmp, *kd, "epochs=1", f"teacher.cache={topk}", f"out_dir={tmp / 'top2run'}"))
    assert summary["finished"] and math.isfinite(summary["last_top1"])


def test_imagenet_protocol_views_stay_exact_through_the_cache(setup):
    # RandomResizedCrop + RandAugment + random erasing + cutmix: every view a pure function of
    # (seed, epoch, index), so the cached teacher saw exactly the live teacher's inputs.
    tmp, kd, _, _ = setup
    views = ("data.crop=rrc", "data.crop_size=12", "data.eval_resize=13",  # the teacher's 12x12 input size
             "data.randaugment=rand-m9-mstd0.5-inc1", "data.random_erasing=0.5", "data.cutmix_alpha=1.0")
    cache = build_teacher_cache(_cfg(tmp, *kd, *views), tmp / "cache_rrc", dtype="fp32", show_progress=False)
    train(_cfg(tmp, *kd, *views, f"out_dir={tmp / 'live_rrc'}"))
    train(_cfg(tmp, *kd, *views, f"teacher.cache={cache}", f"out_dir={tmp / 'cached_rrc'}"))
    a, b = _weights(tmp / "live_rrc"), _weights(tmp / "cached_rrc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = (*views[:3], "data.randaugment=rand-m7-mstd0.5-inc1", *views[4:])
    with pytest.raises(CacheMismatchError, match="randaugment"):
        train(_cfg(tmp, *kd, *other, f"teacher.cache={cache}", f"out_dir={tmp / 'bad_rrc'}"))
