"""The sparse-teacher cache: round trip, resume after an interruption, identity checks, incomplete caches."""

import json

import numpy as np
import pytest
import torch

import unikd.token as T
from unikd.cache import CacheMismatchError

IDENTITY = {"teacher": "tiny-lm", "teacher_sha256": "ab" * 32, "dataset": "toy", "tokenizer": "toy-bpe"}


def teacher_outputs(n=6, t=5, v=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, t, v, generator=g) * 3
    labels = torch.randint(0, v, (n, t), generator=g)
    labels[:, -1] = -100
    return logits, labels


def test_round_trip_and_the_loss_from_the_cache(tmp_path):
    logits, labels = teacher_outputs()
    with T.SparseTeacherWriter(
        tmp_path, num_sequences=6, seq_len=5, vocab_size=300, k=8, identity=IDENTITY, dtype="fp32"
    ) as w:
        for start in (0, 2, 4):
            idx = torch.arange(start, start + 2)
            assert w.pending(idx).all()
            w.write(idx, logits[idx], labels=labels[idx])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["kind"] == "token_topk" and manifest["k"] == 8 and manifest["seq_len"] == 5
    assert manifest["bytes_per_token"] == 8 * 4 + 8 * 2 + 4  # fp32 values, uint16 ids, fp32 tail
    cache = T.SparseTeacherCache(tmp_path)
    cache.check(IDENTITY)
    index = torch.tensor([4, 1])
    got = cache.read(index)
    want = T.sparse_topk(logits[index], 8, labels=labels[index])
    assert torch.equal(got.ids, want.ids)
    assert torch.allclose(got.logprobs, want.logprobs) and torch.allclose(got.tail, want.tail)
    zs = torch.randn(2, 5, 300)
    assert T.nkd_loss(zs, got, labels[index]).item() == pytest.approx(
        T.nkd_loss(zs, want, labels[index]).item(), rel=1e-6
    )


def test_fp16_storage_is_close(tmp_path):
    logits, labels = teacher_outputs()
    with T.SparseTeacherWriter(
        tmp_path, num_sequences=6, seq_len=5, vocab_size=300, k=16, identity=IDENTITY
    ) as w:
        w.write(torch.arange(6), logits, labels=labels)
    got = T.SparseTeacherCache(tmp_path).read(torch.arange(6))
    want = T.sparse_topk(logits, 16, labels=labels)
    assert torch.allclose(got.logprobs, want.logprobs, atol=2e-2, rtol=1e-3)
    zs = torch.randn(6, 5, 300)
    assert T.kd_loss(zs, got, labels).item() == pytest.approx(T.kd_loss(zs, want, labels).item(), rel=1e-2)


def test_interrupted_build_resumes(tmp_path):
    logits, labels = teacher_outputs()
    kwargs = dict(num_sequences=6, seq_len=5, vocab_size=300, k=8, identity=IDENTITY, dtype="fp32")
    with pytest.raises(KeyboardInterrupt):
        with T.SparseTeacherWriter(tmp_path, **kwargs) as w:
            w.write(torch.arange(3), logits[:3], labels=labels[:3])
            raise KeyboardInterrupt
    assert not (tmp_path / "manifest.json").exists() and (tmp_path / "manifest.partial.json").exists()
    with pytest.raises(ValueError, match="build was interrupted"):
        T.SparseTeacherCache(tmp_path)
    w = T.SparseTeacherWriter(tmp_path, **kwargs)
    assert w.pending(torch.arange(6)).tolist() == [False] * 3 + [True] * 3
    with pytest.raises(ValueError, match="3 of 6 sequences were never written"):
        w.finish()
    w.write(torch.arange(3, 6), logits[3:], labels=labels[3:])
    w.finish()
    got = T.SparseTeacherCache(tmp_path).read(torch.arange(6))
    assert torch.equal(got.ids, T.sparse_topk(logits, 8, labels=labels).ids)
    again = T.SparseTeacherWriter(tmp_path, **kwargs)  # a complete cache: nothing pending
    assert again.complete and not again.pending(torch.arange(6)).any()


def test_identity_and_storage_mismatches(tmp_path):
    logits, labels = teacher_outputs()
    kwargs = dict(num_sequences=6, seq_len=5, vocab_size=300, k=8, dtype="fp32")
    with T.SparseTeacherWriter(tmp_path, identity=IDENTITY, **kwargs) as w:
        w.write(torch.arange(6), logits, labels=labels)
    other = {**IDENTITY, "teacher_sha256": "cd" * 32}
    with pytest.raises(CacheMismatchError, match="field 'teacher_sha256'"):
        T.SparseTeacherWriter(tmp_path, identity=other, **kwargs)
    with pytest.raises(CacheMismatchError, match="field 'k'"):
        T.SparseTeacherWriter(tmp_path, identity=IDENTITY, **{**kwargs, "k": 16})
    with pytest.raises(CacheMismatchError, match="field 'tokenizer'"):
        T.SparseTeacherCache(tmp_path).check({**IDENTITY, "tokenizer": "other-bpe"})
    w = T.SparseTeacherWriter(tmp_path, identity=other, overwrite=True, **kwargs)
    assert w.pending(torch.arange(6)).all()


def test_bad_writes_and_reads(tmp_path):
    logits, labels = teacher_outputs()
    w = T.SparseTeacherWriter(tmp_path, num_sequences=6, seq_len=5, vocab_size=300, k=8, identity=IDENTITY)
    with pytest.raises(ValueError, match=r"must have shape \(B, seq_len, vocab_size\)"):
        w.write(torch.arange(2), logits[:2, :4], labels=labels[:2, :4])
    with pytest.raises(ValueError, match="outside 0..5"):
        w.write(torch.tensor([6, 7]), logits[:2])
    with pytest.raises(ValueError, match="has k=4 but this cache stores k=8"):
        w.write(torch.arange(2), T.sparse_topk(logits[:2], 4))
    with pytest.raises(ValueError, match="non-empty dict"):
        T.SparseTeacherWriter(tmp_path / "x", num_sequences=1, seq_len=1, vocab_size=3, k=1, identity={})
    with pytest.raises(ValueError, match="not a complete sparse-teacher cache"):
        T.SparseTeacherCache(tmp_path / "missing")


def test_unwritten_records_are_an_error(tmp_path):
    logits, labels = teacher_outputs()
    with T.SparseTeacherWriter(
        tmp_path, num_sequences=6, seq_len=5, vocab_size=300, k=8, identity=IDENTITY
    ) as w:
        w.write(torch.arange(6), logits, labels=labels)
    cache = T.SparseTeacherCache(tmp_path)
    cache.array = np.array(cache.array)
    cache.array["residual"][2] = np.nan
    with pytest.raises(CacheMismatchError, match="unwritten records"):
        cache.read(torch.tensor([2]))


def test_damaged_array_fails_its_checksum(tmp_path):
    logits, labels = teacher_outputs()
    with T.SparseTeacherWriter(
        tmp_path, num_sequences=6, seq_len=5, vocab_size=300, k=8, identity=IDENTITY
    ) as w:
        w.write(torch.arange(6), logits, labels=labels)
    T.SparseTeacherCache(tmp_path)  # verifies
    array = next(p for p in tmp_path.iterdir() if p.suffix == ".npy")
    data = bytearray(array.read_bytes())
    data[-3] ^= 0xFF
    array.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sparse-teacher cache array"):
        T.SparseTeacherCache(tmp_path)


def test_a_manifest_without_checksum_is_refused_with_advice_that_builds_token_caches(tmp_path):
    logits, labels = teacher_outputs()
    kw = {"num_sequences": 6, "seq_len": 5, "vocab_size": 300, "k": 8, "identity": IDENTITY}
    with T.SparseTeacherWriter(tmp_path, **kw) as w:
        w.write(torch.arange(6), logits, labels=labels)
    path = tmp_path / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["checksum"], manifest["sha256"]  # a stripped manifest would accept any array
    path.write_text(json.dumps(manifest))
    advice = r"is damaged.*SparseTeacherWriter\(folder, \.\.\., overwrite=True\)"
    with pytest.raises(ValueError, match=advice) as e:
        T.SparseTeacherCache(tmp_path)
    assert "cache-teacher" not in str(e.value)  # that command builds image-classifier caches only
    with pytest.raises(ValueError, match="SparseTeacherWriter"):
        T.SparseTeacherWriter(tmp_path, **kw)
    with T.SparseTeacherWriter(tmp_path, **kw, overwrite=True) as w:  # the advice works
        w.write(torch.arange(6), logits, labels=labels)
    T.SparseTeacherCache(tmp_path)
