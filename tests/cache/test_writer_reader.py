"""write_cache + TeacherCache on a fake stream: exact per-(epoch, index) logits, resume, reuse, mismatches."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from cache_fakes import CountingTeacher, FakeLoader, identity, view

from unikd.cache import CacheMismatchError, TeacherCache
from unikd.cache.build.writer import write_cache
from unikd.cache.manifest import IDENTITY_FIELDS, MANIFEST, PARTIAL, read_manifest

N, B, C = 20, 4, 10


def _build(folder, teacher, *, epochs=3, loaders=None, mode="full", dtype="fp32", k=None, ident=None, **kw):
    return write_cache(
        folder, teacher_fn=teacher, loaders=loaders or [FakeLoader(N, B)], epochs=epochs,
        identity=ident or identity(), mode=mode, dtype=dtype, k=k, num_samples=N, num_classes=C,
        show_progress=False, **kw,
    )


@pytest.mark.parametrize("world_size", [1, 2])
def test_cached_logits_are_the_teacher_on_the_same_batches(tmp_path, world_size):
    teacher = CountingTeacher()
    loaders = [FakeLoader(N, B, rank=r, world_size=world_size) for r in range(world_size)]
    _build(tmp_path, teacher, loaders=loaders, ident=identity(world_size=world_size))
    assert teacher.calls == 3 * (N // B) * world_size  # one forward per rank batch
    cache = TeacherCache(tmp_path)
    for epoch in range(3):
        for loader in loaders:  # replay the stream: bit-identical to the live teacher on each batch
            for batch in _epoch(loader, epoch):
                assert torch.equal(cache(batch.images, epoch, batch.index), teacher(batch.images))
        idx = torch.tensor([7, 0, 19, 3])
        torch.testing.assert_close(cache(None, epoch, idx), teacher(view(0, epoch, idx)))
    # views differ between epochs, so must the cached logits
    assert not torch.allclose(cache(None, 0, idx), cache(None, 1, idx))


def test_topk_cache_round_trip(tmp_path):
    teacher = CountingTeacher()
    _build(tmp_path, teacher, mode="topk", dtype="fp16", k=3)
    cache = TeacherCache(tmp_path)
    idx = torch.arange(N)
    z = teacher(view(0, 1, idx))
    got = cache(None, 1, idx)
    assert got.shape == (N, C) and got.dtype == torch.float32
    top = z.topk(3, dim=1).indices
    torch.testing.assert_close(torch.softmax(got, 1).gather(1, top), torch.softmax(z, 1).gather(1, top),
                               atol=2e-3, rtol=2e-3)
    m = read_manifest(tmp_path)
    assert (m["mode"], m["dtype"], m["k"], m["bytes_per_sample"]) == ("topk", "fp16", 3, 3 * 2 + 3 + 2)


def test_second_build_is_a_no_op_and_more_epochs_extend(tmp_path):
    _build(tmp_path, CountingTeacher(), epochs=2)
    again = CountingTeacher()
    _build(tmp_path, again, epochs=2)
    _build(tmp_path, again, epochs=1)
    assert again.calls == 0
    _build(tmp_path, again, epochs=3)
    assert again.calls == N // B  # only the new epoch
    assert read_manifest(tmp_path)["epochs"] == 3


def test_resume_keeps_finished_shards(tmp_path):
    crashing = CountingTeacher(fail_after=N // B + 2)  # dies inside epoch 1
    with pytest.raises(KeyboardInterrupt):
        _build(tmp_path, crashing)
    assert (tmp_path / "e0000.npy").exists() and not (tmp_path / "e0001.npy").exists()
    assert not list(tmp_path.glob(".e*")) and not (tmp_path / ".lock").exists()
    assert (tmp_path / PARTIAL).exists() and not (tmp_path / MANIFEST).exists()
    with pytest.raises(ValueError, match="incomplete"):
        TeacherCache(tmp_path)
    inode = (tmp_path / "e0000.npy").stat().st_ino
    resumed = CountingTeacher()
    _build(tmp_path, resumed)
    assert resumed.calls == 2 * (N // B)  # epochs 1 and 2 only
    assert (tmp_path / "e0000.npy").stat().st_ino == inode
    assert not (tmp_path / PARTIAL).exists()
    idx = torch.arange(N)
    torch.testing.assert_close(TeacherCache(tmp_path)(None, 0, idx), resumed(view(0, 0, idx)))


def test_building_over_another_runs_cache_fails_unless_overwrite(tmp_path):
    _build(tmp_path, CountingTeacher())
    with pytest.raises(CacheMismatchError, match="'seed' is 0 in the cache but 1"):
        _build(tmp_path, CountingTeacher(), ident=identity(seed=1))
    with pytest.raises(CacheMismatchError, match="'dtype'"):
        _build(tmp_path, CountingTeacher(), dtype="fp16")
    _build(tmp_path, CountingTeacher(), ident=identity(seed=1), loaders=[FakeLoader(N, B, seed=1)],
           overwrite=True)
    assert read_manifest(tmp_path)["identity"]["seed"] == 1


@pytest.mark.parametrize("field", IDENTITY_FIELDS)
def test_every_identity_field_mismatch_is_named(tmp_path, field):
    _build(tmp_path, CountingTeacher())
    cache = TeacherCache(tmp_path)
    run = identity()
    cached_value = run.get(field)  # dropped_classes is only present when classes were dropped
    if isinstance(cached_value, bool):
        run[field] = not cached_value
    elif isinstance(cached_value, int):
        run[field] = cached_value + 1
    elif isinstance(cached_value, dict):
        run[field] = {**cached_value, "mixup_alpha": 0.2}
    else:
        run[field] = "something-else"
    with pytest.raises(CacheMismatchError) as err:
        cache.check(run, epochs_needed=3)
    msg = str(err.value)
    assert f"field {field!r}" in msg and "unikd cache-teacher" in msg
    if field == "augment_signature":
        assert "{'mixup_alpha': 0.0}" in msg and "{'mixup_alpha': 0.2}" in msg  # only the differing key
    cache.check(identity(), epochs_needed=3)  # the matching run passes


def test_more_epochs_than_cached(tmp_path):
    _build(tmp_path, CountingTeacher(), epochs=2)
    cache = TeacherCache(tmp_path)
    cache.check(identity(), epochs_needed=1)
    with pytest.raises(CacheMismatchError, match="'epochs' is 2 in the cache but this run trains 3"):
        cache.check(identity(), epochs_needed=3)
    with pytest.raises(CacheMismatchError, match="epoch 2"):
        cache(None, 2, torch.tensor([0]))


def test_rows_the_stream_never_visited_are_an_error(tmp_path):
    # 22 samples, batch 4, drop_last: two samples per epoch are never seen
    write_cache(tmp_path, teacher_fn=CountingTeacher(), loaders=[FakeLoader(22, 4, drop_last=True)], epochs=1,
                identity=identity(num_samples=22), mode="full", dtype="fp16", k=None, num_samples=22,
                num_classes=C, show_progress=False)
    cache = TeacherCache(tmp_path)
    seen = torch.cat([b.index for b in _epoch(FakeLoader(22, 4, drop_last=True), 0)])
    unseen = sorted(set(range(22)) - set(seen.tolist()))
    assert len(unseen) == 2
    cache(None, 0, seen)
    with pytest.raises(CacheMismatchError, match=f"dataset indices \\[{unseen[0]}"):
        cache(None, 0, torch.tensor(unseen[:1]))
    with pytest.raises(ValueError, match="outside 0..21"):
        cache(None, 0, torch.tensor([22]))


def _epoch(loader, epoch):
    loader.set_epoch(epoch)
    return list(loader)


def test_missing_and_foreign_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="unikd cache-teacher"):
        TeacherCache(tmp_path / "nope")
    with pytest.raises(ValueError, match="not a teacher cache"):
        TeacherCache(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({"format_version": 99}))
    with pytest.raises(ValueError, match="format_version=99"):
        TeacherCache(tmp_path)


def test_lock_of_a_live_builder_blocks_and_a_stale_lock_is_taken(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / ".lock").write_text(str(sleeper.pid))
        with pytest.raises(RuntimeError, match=f"pid {sleeper.pid}"):
            _build(tmp_path, CountingTeacher(), epochs=1)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not os.path.exists(f"/proc/{sleeper.pid}") or sleeper.returncode is not None
    _build(tmp_path, CountingTeacher(), epochs=1)  # the dead builder's lock is taken over
    assert read_manifest(tmp_path)["complete"] is True


def test_deleted_shard_is_rebuilt_and_wrong_width_teacher_fails(tmp_path):
    _build(tmp_path, CountingTeacher(), epochs=2)
    (tmp_path / "e0001.npy").unlink()
    again = CountingTeacher()
    _build(tmp_path, again, epochs=1)  # asks for less, but the cache keeps (and repairs) its 2 epochs
    assert again.calls == N // B and read_manifest(tmp_path)["epochs"] == 2
    with pytest.raises(ValueError, match=r"expected \(4, 10\)"):
        _build(tmp_path / "other", CountingTeacher(classes=7))
