"""Teacher-cache integrity: damaged shards and manifests are refused by name, before any logit is used;
a build killed between committing a shard and recording its checksum recomputes that shard."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from cache_fakes import CountingTeacher, FakeLoader, identity

from unikd.cache import TeacherCache
from unikd.cache.build.writer import write_cache
from unikd.cache.manifest import MANIFEST, PARTIAL, read_manifest, write_manifest
from unikd.cache.storage import shard_name
from unikd.integrity import IntegrityError

N, B, C = 20, 4, 10


def _build(folder, teacher=None, *, epochs=2, **kw):
    return write_cache(
        folder, teacher_fn=teacher or CountingTeacher(), loaders=[FakeLoader(N, B)], epochs=epochs,
        identity=identity(), mode="full", dtype="fp32", k=None, num_samples=N, num_classes=C,
        show_progress=False, **kw,
    )


def test_manifest_records_a_checksum_per_shard(tmp_path):
    _build(tmp_path)
    m = read_manifest(tmp_path)
    assert len(m["checksum"]) == 64
    assert [s["file"] for s in m["shards"]] == [shard_name(0), shard_name(1)]
    assert all(len(s["sha256"]) == 64 for s in m["shards"])


def test_a_shard_with_one_flipped_bit_is_refused_before_use(tmp_path):
    _build(tmp_path)
    path = tmp_path / shard_name(1)
    raw = bytearray(path.read_bytes())
    raw[-7] ^= 0x04  # a logit's mantissa: still a plausible number
    path.write_bytes(bytes(raw))
    cache = TeacherCache(tmp_path)
    cache(None, 0, torch.arange(4))  # epoch 0 is fine
    with pytest.raises(IntegrityError, match=rf"teacher cache shard '.*{shard_name(1)}' is damaged.*Rebuild"):
        cache(None, 1, torch.arange(4))
    with pytest.raises(IntegrityError):
        TeacherCache(tmp_path).verify()


def test_a_truncated_shard_is_refused_when_the_cache_opens(tmp_path):
    _build(tmp_path)
    path = tmp_path / shard_name(1)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(IntegrityError, match=rf"{shard_name(1)} is damaged: \d+ bytes, but the manifest"):
        TeacherCache(tmp_path)


def test_a_damaged_manifest_is_refused_by_name(tmp_path):
    _build(tmp_path)
    path = tmp_path / MANIFEST
    m = json.loads(path.read_text())
    m["num_samples"] = N + 1  # valid JSON, wrong content
    path.write_text(json.dumps(m))
    with pytest.raises(IntegrityError, match=r"teacher cache manifest '.*manifest.json' is damaged"):
        TeacherCache(tmp_path)
    path.write_bytes(b"\xff\xfe" + path.read_bytes()[2:])  # not even UTF-8
    with pytest.raises(ValueError, match=r"manifest.json is unreadable"):
        TeacherCache(tmp_path)
    _build(tmp_path, overwrite=True)  # --overwrite rebuilds over a damaged manifest
    assert TeacherCache(tmp_path).epochs == 2


def test_a_shard_committed_without_its_checksum_is_recomputed(tmp_path):
    # A build killed right after renaming a shard into place, before recording its checksum.
    _build(tmp_path, epochs=1)
    m = read_manifest(tmp_path)
    (tmp_path / MANIFEST).unlink()
    partial = {k: v for k, v in m.items() if k not in ("checksum", "shards")}
    write_manifest({**partial, "epochs": 2, "complete": False}, tmp_path / PARTIAL)
    (tmp_path / shard_name(0)).write_bytes((tmp_path / shard_name(0)).read_bytes()[:-8] + b"\0" * 8)
    teacher = CountingTeacher()
    _build(tmp_path, teacher, epochs=2)
    assert teacher.calls == 2 * (N // B)  # both epochs computed, the unrecorded shard included
    TeacherCache(tmp_path).verify()


def test_a_manifest_stripped_of_its_checksums_is_refused_not_warned_about(tmp_path):
    # No downgrade: without the checksums a swapped shard would pass; unikd always writes them, so a
    # manifest without them is damage (0.1.0 caches included: rebuilt, not trusted).
    _build(tmp_path)
    m = read_manifest(tmp_path)
    stripped = {k: v for k, v in m.items() if k != "checksum"}
    stripped["shards"] = [{k: v for k, v in s.items() if k != "sha256"} for s in m["shards"]]
    (tmp_path / MANIFEST).write_text(json.dumps(stripped))
    a, b = tmp_path / shard_name(0), tmp_path / shard_name(1)
    a_bytes = a.read_bytes()
    a.write_bytes(b.read_bytes())  # swap the shards (same size)
    b.write_bytes(a_bytes)
    with pytest.raises(IntegrityError, match=r"manifest.json' is damaged: it carries no sha256 checksum.*"
                                             r"unikd cache-teacher.*0\.1\.0"):
        TeacherCache(tmp_path)


def test_a_shard_listed_without_its_sha256_is_refused(tmp_path):
    _build(tmp_path)
    m = read_manifest(tmp_path)
    m["shards"] = [{k: v for k, v in s.items() if k != "sha256"} for s in m["shards"]]
    write_manifest(m, tmp_path / MANIFEST)  # a validly sealed manifest that lost the shard records
    with pytest.raises(IntegrityError, match=rf"{shard_name(0)}' is damaged: .*manifest that lists it"):
        TeacherCache(tmp_path)(None, 0, torch.arange(4))


def test_overwrite_rebuilds_over_a_manifest_without_checksum(tmp_path):
    _build(tmp_path)
    m = read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({k: v for k, v in m.items() if k != "checksum"}))
    with pytest.raises(IntegrityError, match="--overwrite"):
        _build(tmp_path)
    _build(tmp_path, overwrite=True)  # the advice works
    TeacherCache(tmp_path).verify()


def test_a_dead_builders_temp_manifest_is_swept_at_the_next_build(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".{PARTIAL}.{dead.pid}.abcd1234.tmp"
    stale.write_text("{")
    _build(tmp_path)
    assert not stale.exists()
